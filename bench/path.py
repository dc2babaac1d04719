"""The Serve path and the kernels, measured: the same graph under Ray Serve's ingress options and
other settings, each on a fresh Ray.

    python -m bench.path [--variants default throughput-optimized ...] [--n1 60] [--n16 400]

Each variant starts `serve run CONFIG` in its own session with its environment variables (Serve
reads them when Ray starts) and user_config overrides, measures p50/p95 at 1 client and throughput
at 16 clients with texts never sent before, prints the load generator's CPU share beside each figure,
and stops the session.
"""

from __future__ import annotations

import argparse
import itertools
import os
import subprocess
import tempfile
import time
from pathlib import Path

import httpx
import yaml

from bench.load import load
from bench.texts import make_texts
from nlpserve.on_ray.local import ROOT

OPTIMIZED = {"RAY_SERVE_THROUGHPUT_OPTIMIZED": "1"}
ACTOR_CALLS = {"RAY_SERVE_USE_GRPC_BY_DEFAULT": "0"}
IN_BAND = {"RAY_allow_out_of_band_object_ref_serialization": "0"}  # an ObjectRef pickled out of band fails
REPLICA_LOOP = {"RAY_SERVE_RUN_USER_CODE_IN_SEPARATE_THREAD": "0", "RAY_SERVE_RUN_ROUTER_IN_SEPARATE_LOOP": "0"}
VARIANTS: dict[str, tuple[dict[str, str], dict[str, dict]]] = {
    # name: (environment, {deployment: user_config overrides, or "runtime_env": the app's env_vars})
    "default": ({}, {}),
    "throughput-optimized": (OPTIMIZED, {}),
    "haproxy": ({"RAY_SERVE_ENABLE_HA_PROXY": "1"}, {}),
    "throughput-optimized+haproxy": ({**OPTIMIZED, "RAY_SERVE_ENABLE_HA_PROXY": "1"}, {}),
    "direct-ingress": ({"RAY_SERVE_ENABLE_DIRECT_INGRESS": "1"}, {}),
    "throughput-optimized, no out-of-band refs": ({**OPTIMIZED, **IN_BAND}, {}),
    # Handles over Ray actor calls instead of gRPC: nested ObjectRefs then stay tracked references.
    "throughput-optimized, actor-call handles": ({**OPTIMIZED, **ACTOR_CALLS}, {}),
    "throughput-optimized, actor-call handles, no out-of-band refs": ({**OPTIMIZED, **ACTOR_CALLS, **IN_BAND}, {}),
    "no batch wait": ({}, {"Ingress": {"batch_wait_timeout_s": 0.0}}),
    # What the config alone can set: the replicas' flags, in the application's runtime_env.
    "replica flags in runtime_env": ({}, {"runtime_env": REPLICA_LOOP}),
    "replica flags in runtime_env, no batch wait": (
        {},
        {"runtime_env": REPLICA_LOOP, "Ingress": {"batch_wait_timeout_s": 0.0}},
    ),
    "encoder onnx fp32": ({}, {"Encoder": {"kernel": "onnx"}}),
    "encoder torch fp32": ({}, {"Encoder": {"kernel": "torch"}}),
    "ner stepwise": ({}, {"NER": {"kernel": "stepwise"}}),
    "1 call in flight per task": ({}, {"Ingress": {"max_calls_in_flight": 1}}),
    "2 calls in flight per task": ({}, {"Ingress": {"max_calls_in_flight": 2}}),
    "1 call in flight per task, ner stepwise": (
        {},
        {"Ingress": {"max_calls_in_flight": 1}, "NER": {"kernel": "stepwise"}},
    ),
}
URL = "http://127.0.0.1:8000"


def config_with(config: Path, overrides: dict[str, dict]) -> Path:
    """``config`` with the user_config overrides of some deployments, as a temporary file."""
    raw = yaml.safe_load(config.read_text())
    app = raw["applications"][0]
    app.setdefault("runtime_env", {}).setdefault("env_vars", {}).update(overrides.get("runtime_env", {}))
    for d in app["deployments"]:
        d.setdefault("user_config", {}).update(overrides.get(d["name"], {}))
    out = Path(tempfile.mkstemp(suffix=".yaml", dir=ROOT / "config")[1])  # import_path is relative to it
    out.write_text(yaml.safe_dump(raw))
    return out


def wait_ready(proc: subprocess.Popen, seconds: float = 300) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"serve run exited with {proc.returncode}")
        try:
            r = httpx.post(URL + "/analyze", json={"text": "Warm up, please."}, timeout=10)
            if r.status_code == 200 and "error" not in r.json().get("summary", {}):
                return
        except httpx.HTTPError:
            pass
        time.sleep(1)
    raise TimeoutError("the graph did not answer")


def measure(n1: int, n16: int) -> dict:
    counter = itertools.count(int(time.time() * 1000))  # texts never sent before
    out = {}
    for clients, n in ((1, n1), (16, n16)):
        cpu, wall = time.process_time(), time.perf_counter()
        r = load(URL + "/analyze", lambda i: {"text": make_texts(1, next(counter))[0]}, clients, n).summary()
        r["client_cpu_share"] = (time.process_time() - cpu) / (time.perf_counter() - wall) / os.cpu_count()
        out[clients] = r
    return out


def run_variant(config: Path, env: dict[str, str], overrides: dict[str, dict], n1: int, n16: int) -> dict:
    path = config_with(config, overrides) if overrides else config
    log = open(tempfile.mkstemp(suffix=".log")[1], "w")  # noqa: SIM115 - closed below
    proc = subprocess.Popen(
        ["serve", "run", str(path)], cwd=ROOT, env={**os.environ, **env}, stdout=log, stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        wait_ready(proc)
        return measure(n1, n16)
    except (RuntimeError, TimeoutError) as e:
        raise RuntimeError(f"{e} (log: {log.name})") from None
    finally:
        # The whole session: serve run, the Ray it started and HAProxy, which has a process group of its own.
        subprocess.run(["pkill", "-TERM", "-s", str(proc.pid)], check=False)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            subprocess.run(["pkill", "-KILL", "-s", str(proc.pid)], check=False)
        log.close()
        if path != config:
            path.unlink()
        time.sleep(5)  # let the port and the CPU go before the next variant


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path, default=ROOT / "config/config.yaml")
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument("--n1", type=int, default=60)
    parser.add_argument("--n16", type=int, default=400)
    args = parser.parse_args()
    print("| variant | p50 ms, 1 client | p95 ms, 1 client | req/s, 16 clients | p50 ms, 16 | errors | client CPU |")
    print("|---|---|---|---|---|---|---|")
    for name in args.variants:
        env, overrides = VARIANTS[name]
        try:
            r = run_variant(args.config, env, overrides, args.n1, args.n16)
        except RuntimeError as e:
            print(f"| {name} | failed: {e} | | | | | |", flush=True)
            continue
        one, many = r[1], r[16]
        print(
            f"| {name} | {one['p50_ms']:.1f} | {one['p95_ms']:.1f} | {many['req_per_s']:.1f} | {many['p50_ms']:.0f} | "
            f"{one['errors'] + many['errors']} | {one['client_cpu_share']:.1%} / {many['client_cpu_share']:.1%} |",
            flush=True,
        )


if __name__ == "__main__":
    main()
