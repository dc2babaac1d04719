"""What one call from a replica to another costs: Serve's handle call as the graph makes it, Serve's gRPC
transport, and a plain Ray actor call.

    python -m bench.hop [--calls 1000] [--rounds 2]

Starts a Ray of its own (never joins a running one) with the app's env_vars from config/config.yaml
(replica loops as served); stop any `serve run` first, or the two share the cores. A
caller replica makes the calls one at a time, each with a small token array as the ingress sends it:
- "serve handle": a list holding the array's ObjectRef, which the callee awaits (how the graph calls);
- "serve gRPC": the array itself, by value (``_by_reference=False``, what ``RAY_SERVE_THROUGHPUT_OPTIMIZED``
  turns on). It cannot carry ObjectRefs: it pickles them out of band, and Ray pins each for the
  caller's lifetime;
- "actor call": the ObjectRef to a plain Ray actor, outside Serve.

Prints ms per call and core-ms per call over every process on the machine, less what they use idle.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import ray
import yaml
from ray import serve

from bench.cpu import cpu_seconds
from nlpserve.on_ray.local import CONFIG

KINDS = ("serve handle", "serve gRPC", "actor call")


async def _echo(tokens) -> int:
    batch = tokens if isinstance(tokens, np.ndarray) else await tokens[0]
    return len(batch)


@ray.remote(num_cpus=0)
class PlainEcho:
    async def call(self, tokens) -> int:
        return await _echo(tokens)


@serve.deployment(ray_actor_options={"num_cpus": 0})
class Echo:
    async def __call__(self, tokens) -> int:
        return await _echo(tokens)


@serve.deployment(ray_actor_options={"num_cpus": 0})
class Caller:
    def __init__(self, echo) -> None:
        tokens = np.arange(300, dtype=np.int32)  # a ~100-token text's ids, offsets and word ids
        refs = [ray.put(tokens)]
        # Per kind of call: the call and what it carries.
        self.calls = {
            "serve handle": (echo.remote, refs),
            "serve gRPC": (echo.options(_by_reference=False).remote, tokens),
            "actor call": (PlainEcho.remote().call.remote, refs),
        }

    async def run(self, kind: str, n: int) -> float:
        """Seconds per call of ``n`` calls of ``kind``, one at a time."""
        call, arg = self.calls[kind]
        start = time.perf_counter()
        for _ in range(n):
            await call(arg)
        return (time.perf_counter() - start) / n


def machine_cpu() -> float:
    return sum(seconds for _, seconds in cpu_seconds().values())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    env = yaml.safe_load(CONFIG.read_text())["applications"][0]["runtime_env"]["env_vars"]
    ray.init(
        address="local",
        include_dashboard=False,
        runtime_env={"env_vars": env},
        logging_level="ERROR",
        log_to_driver=False,
    )
    try:
        caller = serve.run(Caller.bind(Echo.bind()), name="hop", route_prefix=None)
        for kind in KINDS:  # warm-up: routers, connections
            caller.run.remote(kind, 100).result()
        print("| call | ms per call | core-ms per call, all processes |\n|---|---|---|")
        for _ in range(args.rounds):
            for kind in KINDS:
                before, start = machine_cpu(), time.perf_counter()
                time.sleep(3)
                idle = (machine_cpu() - before) / (time.perf_counter() - start)
                before, start = machine_cpu(), time.perf_counter()
                per_call = caller.run.remote(kind, args.calls).result()
                used = machine_cpu() - before - idle * (time.perf_counter() - start)
                print(f"| {kind} | {per_call * 1000:.2f} | {used / args.calls * 1000:.2f} |", flush=True)
    finally:
        serve.shutdown()
        ray.shutdown()


if __name__ == "__main__":
    main()
