"""Latency of a running service at concurrency 1, per task set: p50/p95 over N sequential requests.

    python -m bench.latency --url http://127.0.0.1:8000 --n 200

Every request carries a text never sent before, so the service's caches never answer.
"""

from __future__ import annotations

import argparse
import itertools

from bench.load import load
from bench.texts import make_texts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default="http://127.0.0.1:8000")
    parser.add_argument("--n", type=int, default=200)
    args = parser.parse_args()
    counter = itertools.count()
    print(f"{args.n} sequential requests per task set after 5 warm-up, news texts of ~88 words")
    for tasks in (["ner", "sentiment", "summary"], ["ner"], ["sentiment"], ["summary"]):
        body = lambda i, tasks=tasks: {"text": make_texts(1, next(counter))[0], "tasks": tasks}  # noqa: E731
        r = load(args.url.rstrip("/") + "/analyze", body, concurrency=1, requests=args.n).summary()
        print(f"{'+'.join(tasks):24s} p50 {r['p50_ms']:6.1f} ms  p95 {r['p95_ms']:6.1f} ms")


if __name__ == "__main__":
    main()
