"""Latency of a running service at concurrency 1: p50/p95 over N sequential requests.

python -m bench.latency --url http://127.0.0.1:8000 --n 200
"""

from __future__ import annotations

import argparse
import statistics
import time

import requests

TEXT = (
    "Apple Inc. reported record quarterly revenue on Thursday, driven by strong iPhone sales in China. "
    "Chief executive Tim Cook said the company expects growth to continue next year, even as supply problems "
    "linger in Asia. Analysts at Goldman Sachs in New York had expected revenue of $90 billion, and shares of "
    "Apple rose 3% in after-hours trading on the Nasdaq. The company also announced a new buyback program "
    "worth $110 billion and raised its dividend by four percent. Investors in London and Tokyo welcomed the "
    "news, although some warned that slowing demand in Europe could weigh on results later this year."
)


def percentile(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100)[int(q) - 1]


def measure(url: str, body: dict, n: int, warmup: int = 10) -> dict:
    session = requests.Session()
    for _ in range(warmup):
        session.post(url + "/analyze", json=body, timeout=60).raise_for_status()
    times = []
    for _ in range(n):
        start = time.perf_counter()
        session.post(url + "/analyze", json=body, timeout=60).raise_for_status()
        times.append((time.perf_counter() - start) * 1000)
    return {"p50_ms": statistics.median(times), "p95_ms": percentile(times, 95), "n": n}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default="http://127.0.0.1:8000")
    parser.add_argument("--n", type=int, default=200)
    args = parser.parse_args()
    print(f"text: {len(TEXT.split())} words; {args.n} sequential requests after 10 warm-up")
    for tasks in (["ner", "sentiment", "summary"], ["ner"], ["sentiment"], ["summary"]):
        r = measure(args.url, {"text": TEXT, "tasks": tasks}, args.n)
        print(f"{'+'.join(tasks):24s} p50 {r['p50_ms']:6.1f} ms  p95 {r['p95_ms']:6.1f} ms")


if __name__ == "__main__":
    main()
