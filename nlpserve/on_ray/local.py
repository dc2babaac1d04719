"""Start a Serve config file on a local Ray, as `serve run CONFIG` does, from Python."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import ray
import yaml
from ray import serve
from ray.serve._private.api import serve_start
from ray.serve.schema import ServeDeploySchema

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(config: Path = ROOT / "config" / "config.yaml", port: int | None = None, **ray_init) -> str:
    """Deploy ``config`` on a new local Ray (``ray.init(**ray_init)``); returns the base URL.

    The HTTP port is replaced by ``port`` (a free one by default). Workers import
    ``graph.py`` from the project root.
    """
    raw = yaml.safe_load(Path(config).read_text())
    port = port or free_port()
    raw.setdefault("http_options", {})["port"] = port
    schema = ServeDeploySchema.model_validate(raw)
    # Ray starts its workers at nice 15 by default; a load generator on the same machine then
    # takes CPU from the replicas. Run them at normal priority, as any other service here.
    os.environ.setdefault("RAY_worker_niceness", "0")
    env = ray_init.pop("runtime_env", {}).get("env_vars", {})
    path = ":".join([str(ROOT), *filter(None, [env.pop("PYTHONPATH", "")])])
    ray.init(include_dashboard=False, runtime_env={"env_vars": {**env, "PYTHONPATH": path}}, **ray_init)
    client = serve_start(http_options=schema.http_options.model_dump(), proxy_location=schema.proxy_location)
    client.deploy_apps(schema, _blocking=True)
    return f"http://{schema.http_options.host}:{port}"


def stop() -> None:
    serve.shutdown()
    ray.shutdown()
