"""The graph under Serve's options and other settings, each on a fresh `serve run`, measured with wrk.

    python -m bench.path [--variants default no-haproxy ...] [--repeat 2] [--seconds 15]

Each variant starts `serve run CONFIG` in its own session with its environment variables (Serve and
Ray read them when Ray starts) and user_config overrides, then measures with wrk (bench/wrk.py): p50 at
1 client, requests/s at 16 and 64 clients, every request a new text, and the texts per call of each
deployment at 16 and 64 clients, from the ingress's own counters (read between runs through a Ray
driver). With ``--repeat``, the variants run in turn that many times (A B A B), since this machine's
speed drifts.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import tempfile
import time
from collections.abc import Callable
from contextlib import contextmanager
from pathlib import Path

import httpx
import ray
import yaml
from ray import serve

from bench import wrk
from nlpserve.on_ray.local import ROOT

# What `serve run` needs in its environment for the recommended setup (README): HAProxy in front.
HAPROXY = {"RAY_SERVE_ENABLE_HA_PROXY": "1"}
# Serve's default, which config/config.yaml turns off: user code and the router each on a loop of its own thread.
SEPARATE_LOOPS = {"RAY_SERVE_RUN_USER_CODE_IN_SEPARATE_THREAD": "1", "RAY_SERVE_RUN_ROUTER_IN_SEPARATE_LOOP": "1"}
VARIANTS: dict[str, tuple[dict[str, str], dict[str, dict]]] = {
    # name: (environment, {deployment: user_config overrides, or "runtime_env": the app's env_vars})
    "default": (HAPROXY, {}),
    "no-haproxy": ({}, {}),
    "each stage on its own": (HAPROXY, {"Ingress": {"together_s": 0}}),
    "2 calls in flight": (HAPROXY, {"Ingress": {"max_calls_in_flight": 2}}),
    "4 calls in flight": (HAPROXY, {"Ingress": {"max_calls_in_flight": 4}}),
    "workers at nice 0": ({**HAPROXY, "RAY_worker_niceness": "0"}, {}),
    "separate loops": (HAPROXY, {"runtime_env": SEPARATE_LOOPS}),
    "batch wait 2 ms": (HAPROXY, {"Ingress": {"batch_wait_timeout_s": 0.002}}),
    "encoder 1 thread": (HAPROXY, {"Encoder": {"torch_threads": 1}}),
    "window on 2 threads": (HAPROXY, {"Encoder": {"window_threads": 2}}),
    # Less of Serve's idle work: the controller's loop every 0.5 s (0.1), metrics flushed every 1 s (0.1).
    "quiet controller": (
        {**HAPROXY, "RAY_SERVE_CONTROL_LOOP_INTERVAL_S": "0.5"},
        {"runtime_env": {"RAY_SERVE_METRICS_EXPORT_INTERVAL_MS": "1000"}},
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


@contextmanager
def ingress_stats():
    """A function that reads the running graph's ingress counters (its ``stats()``), through a Ray
    driver connected to this machine's cluster (the one `serve run` started)."""
    ray.init(address="auto", logging_level="ERROR", log_to_driver=False)
    try:
        handle = serve.get_app_handle("nlp")
        yield lambda: handle.stats.remote().result()
    finally:
        # Serve keeps its controller handle per job id, and the next cluster's first job has the same id:
        # forget it, or the next session's handle is looked up through the dead one.
        serve.context._disconnect()
        ray.shutdown()


# The deployments the ingress calls, by the name its counters give them.
CALLEES = {"Encoder": "encoder", "NER": "ner", "Sentiment": "sentiment", "Summary": "summary"}


def texts_per_call(before: dict, after: dict) -> dict[str, float]:
    """Mean texts per remote call of each deployment between two readings of the ingress's counters."""
    out = {}
    for deployment, name in CALLEES.items():
        sends = after.get(f"sends.{name}", 0) - before.get(f"sends.{name}", 0)
        if sends:
            out[deployment] = (after[f"texts.{name}"] - before.get(f"texts.{name}", 0)) / sends
    return out


def counted_sweep(
    url: str, clients: list[int], seconds: float, stats: Callable[[], dict] | None = None
) -> dict[str, dict]:
    """wrk at each number of clients, after a 3 s warm-up at that number; with ``stats`` (the graph's
    ingress counters), each deployment's texts per call in the counted run."""
    out = {}
    for c in clients:
        wrk.run(url, c, 3.0)
        before = stats() if stats else {}
        r = wrk.run(url, c, seconds)
        if stats:
            r["texts_per_call"] = texts_per_call(before, stats())
        out[str(c)] = r
    return out


def measure(seconds: float) -> dict:
    with ingress_stats() as stats:
        return counted_sweep(URL, [1, 16, 64], seconds, stats)


@contextmanager
def serve_session(config: Path, env: dict[str, str], overrides: dict[str, dict] | None = None):
    """`serve run CONFIG` in a session of its own, with ``env`` and user_config ``overrides``, until the
    block ends; yields the URL once the graph answers."""
    path = config_with(config, overrides) if overrides else config
    log = open(tempfile.mkstemp(suffix=".log")[1], "w")  # noqa: SIM115 - closed below
    proc = subprocess.Popen(
        ["serve", "run", str(path)],
        cwd=ROOT,
        env={**os.environ, **env},
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        try:
            wait_ready(proc)
        except (RuntimeError, TimeoutError) as e:
            raise RuntimeError(f"{e} (log: {log.name})") from None
        yield URL
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
        time.sleep(5)  # let the port and the CPU go before the next run


def run_variant(config: Path, env: dict[str, str], overrides: dict[str, dict], seconds: float) -> dict:
    try:
        with serve_session(config, env, overrides):
            return measure(seconds)
    except subprocess.CalledProcessError as e:
        raise RuntimeError(str(e)) from None


def row(name: str, r: dict) -> str:
    one, sixteen, many = r["1"], r["16"], r["64"]
    failed = sum(x["non2xx"] + x["socket_errors"] + x["degraded"] for x in (one, sixteen, many))
    cpu = max(x["client_cpu_share"] for x in (one, sixteen, many))
    per_call = (x["texts_per_call"] for x in (sixteen, many))
    calls = " | ".join(f"{c.get('Encoder', 0):.1f} / {c.get('NER', 0):.1f}" for c in per_call)
    return (
        f"| {name} | {one['p50_ms']:.1f} | {sixteen['req_per_s']:.1f} | {many['req_per_s']:.1f} | {calls} | "
        f"{failed} | {cpu:.1%} |"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path, default=ROOT / "config/config.yaml")
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--seconds", type=float, default=15)
    args = parser.parse_args()
    print(
        "| variant | p50 ms, 1 client | req/s, 16 clients | req/s, 64 clients | texts per call at 16: Encoder / NER "
        "| at 64 | failed or degraded | wrk CPU |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for _ in range(args.repeat):
        for name in args.variants:
            env, overrides = VARIANTS[name]
            try:
                print(row(name, run_variant(args.config, env, overrides, args.seconds)), flush=True)
            except RuntimeError as e:
                print(f"| {name} | failed: {e} | | | | | | |", flush=True)


if __name__ == "__main__":
    main()
