"""Where the CPU goes: core-ms per request of every process on the machine, under load.

    python -m bench.cpu [--url http://127.0.0.1:8000] [--requests 600] [--clients 16]

Run it against a running service (`serve run config/config.yaml`). It reads every process's CPU
time before and after sending the requests (texts never sent before) and prints the difference per
request, largest first: the Serve replicas, the proxy, Ray's own processes and this load generator.
"""

from __future__ import annotations

import argparse
import itertools
import time
from collections import Counter

import psutil

from bench.load import load
from bench.texts import make_texts


def cpu_seconds() -> dict[int, tuple[str, float]]:
    out = {}
    for p in psutil.process_iter(["cmdline", "name"]):
        try:
            t = p.cpu_times()
        except psutil.Error:
            continue
        out[p.pid] = (" ".join(p.info["cmdline"] or [p.info["name"] or "?"])[:70], t.user + t.system)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default="http://127.0.0.1:8000")
    parser.add_argument("--requests", type=int, default=600)
    parser.add_argument("--clients", type=int, default=16)
    args = parser.parse_args()
    counter = itertools.count(int(time.time() * 1000))
    before, start = cpu_seconds(), time.perf_counter()
    body = lambda i: {"text": make_texts(1, next(counter))[0]}  # noqa: E731
    r = load(args.url.rstrip("/") + "/analyze", body, args.clients, args.requests, warmup=0).summary()
    after, elapsed = cpu_seconds(), time.perf_counter() - start
    used: Counter[str] = Counter()
    for pid, (name, seconds) in after.items():
        if pid in before:
            used[name] += seconds - before[pid][1]
    print(
        f"{r['req_per_s']:.1f} requests/s, p50 {r['p50_ms']:.0f} ms, {r['errors']} errors; "
        f"{sum(used.values()) / elapsed:.0%} of one core in all"
    )
    print("| core-ms per request | process |\n|---|---|")
    for name, seconds in used.most_common(12):
        print(f"| {seconds / args.requests * 1000:.2f} | {name.strip()} |")


if __name__ == "__main__":
    main()
