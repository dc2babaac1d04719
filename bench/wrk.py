"""The headline figures again with wrk, a C load generator that takes almost no CPU: a cross-check of
the Python driver's numbers on a machine whose cores the load generator shares.

    apt-get install wrk
    python -m bench.wrk [--url http://127.0.0.1:8000] [--clients 1 16 64] [--seconds 20]

Every request is a new ~90-word news text (bench/texts.py) with all three tasks, so no cache answers.
Answers that carry a task error are counted as degraded, beside the non-2xx answers.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from bench.texts import make_texts

SCRIPT = Path(__file__).with_name("wrk.lua")


def bodies_file(n: int, start: int) -> Path:
    path = Path(tempfile.mkstemp(suffix=".jsonl")[1])
    path.write_text("".join(json.dumps({"text": t}) + "\n" for t in make_texts(n, start)))
    return path


def run(url: str, clients: int, seconds: float, start: int | None = None) -> dict:
    """One wrk run of ``clients`` connections for ``seconds``; texts numbered from ``start`` (default: the clock)."""
    if shutil.which("wrk") is None:
        raise RuntimeError("wrk is not installed (apt-get install wrk)")
    threads = min(clients, 2)
    start = int(time.time() * 1000) if start is None else start
    # Enough texts for 200 requests/s, so no thread runs out of new ones.
    bodies = bodies_file(int(200 * seconds) + 100 * threads, start)
    cmd = ["wrk", "-t", str(threads), "-c", str(clients), "-d", f"{round(seconds)}s", "--timeout", "60s"]
    cmd += ["-s", str(SCRIPT), url.rstrip("/") + "/analyze", "--", str(bodies), "1", str(threads)]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    wall = time.perf_counter()
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 120, check=True).stdout
    finally:
        bodies.unlink()
    wall = time.perf_counter() - wall
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    line = next(x for x in out.splitlines() if x.startswith("WRK "))
    r = json.loads(line[4:])
    used = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return {
        "clients": clients,
        "requests": r["requests"],
        "req_per_s": r["requests"] / (r["duration_us"] / 1e6),
        "p50_ms": r["p50_us"] / 1000,
        "p90_ms": r["p90_us"] / 1000,
        "p99_ms": r["p99_us"] / 1000,
        "non2xx": r["non2xx"],
        "socket_errors": r["socket_errors"],
        "degraded": r["degraded"],
        "client_cpu_share": used / wall / (os.cpu_count() or 1),
    }


def sweep(url: str, clients: list[int], seconds: float, warmup: float = 3.0) -> list[dict]:
    """wrk at each number of clients, after a short warm-up at the same number (not counted)."""
    out = []
    for c in clients:
        run(url, c, warmup)
        out.append(run(url, c, seconds))
    return out


def table(rows: list[dict], name: str) -> str:
    lines = []
    for r in rows:
        lines.append(
            f"| {name} | {r['clients']} | {r['requests']} | {r['p50_ms']:.1f} | {r['p99_ms']:.1f} | "
            f"{r['req_per_s']:.1f} | {r['non2xx'] + r['socket_errors']} | {r['degraded']} | "
            f"{r['client_cpu_share']:.1%} |"
        )
    return "\n".join(lines)


HEADER = (
    "| service | clients | requests | p50 ms | p99 ms | req/s | failed | degraded | wrk CPU |\n"
    "|---|---|---|---|---|---|---|---|---|"
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default="http://127.0.0.1:8000")
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 16, 64])
    parser.add_argument("--seconds", type=float, default=20)
    parser.add_argument("--name", default="service")
    args = parser.parse_args()
    print(HEADER)
    print(table(sweep(args.url, args.clients, args.seconds), args.name), flush=True)


if __name__ == "__main__":
    main()
