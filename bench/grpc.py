"""gRPC beside HTTP on one running graph: the same requests through Serve's gRPC proxy and its HTTP proxy.

    python -m bench.grpc [--seconds 15] [--rounds 2] [--lines 400]

Starts `serve run config/config.yaml` (HAProxy in front of both protocols), then, in rounds that
alternate the protocols (this machine's speed drifts): p50 at 1 client and requests/s at 16 and 64
clients, every request a new ~90-word news text with all three tasks. Both drivers are closed loops in
this Python process (grpc.aio and httpx, one event loop), so each figure has the driver's own CPU share
beside it; wrk (a C client) measures HTTP once more as a cross-check. Then the batch CLI over one file of
``--lines`` texts, over each protocol.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import grpc
import httpx
import numpy as np
import psutil

from bench import wrk
from bench.path import HAPROXY, URL, serve_session
from bench.texts import make_texts
from nlpserve.on_ray.local import ROOT
from nlpserve.protos import analyze_pb2 as pb
from nlpserve.protos import analyze_pb2_grpc as rpc

GRPC = "127.0.0.1:9000"
CLIENTS = (1, 16, 64)


async def closed_loop(send: Callable[[str], Awaitable[None]], clients: int, seconds: float, start: int) -> dict:
    """``clients`` loops, each sending a new text when its last answer came, for ``seconds``."""
    texts = itertools.count(start)
    latencies: list[float] = []
    stop = time.perf_counter() + seconds
    me = psutil.Process()
    cpu = me.cpu_times()

    async def loop() -> None:
        while time.perf_counter() < stop:
            text = make_texts(1, next(texts))[0]
            t = time.perf_counter()
            await send(text)
            latencies.append((time.perf_counter() - t) * 1000)

    began = time.perf_counter()
    await asyncio.gather(*(loop() for _ in range(clients)))
    elapsed, used = time.perf_counter() - began, me.cpu_times()
    driver = (used.user + used.system - cpu.user - cpu.system) / elapsed
    return {
        "req_per_s": len(latencies) / elapsed,
        "p50_ms": float(np.percentile(latencies, 50)),
        "driver_cpu": driver / psutil.cpu_count(),  # share of the machine
    }


async def sweep(protocol: str, seconds: float, start: int) -> dict[str, dict]:
    out = {}
    if protocol == "grpc":
        async with grpc.aio.insecure_channel(GRPC) as channel:
            stub = rpc.AnalyzerStub(channel)

            async def send(text: str) -> None:
                await stub.Analyze(pb.AnalyzeRequest(text=text), timeout=120)

            for c in CLIENTS:
                await closed_loop(send, c, 3.0, start + 10_000_000)  # warm-up at this load
                out[str(c)] = await closed_loop(send, c, seconds, start + c * 100_000)
        return out
    limits = httpx.Limits(max_connections=64, max_keepalive_connections=64)
    async with httpx.AsyncClient(base_url=URL, timeout=120, limits=limits) as client:

        async def send(text: str) -> None:
            (await client.post("/analyze", json={"text": text})).raise_for_status()

        for c in CLIENTS:
            await closed_loop(send, c, 3.0, start + 10_000_000)
            out[str(c)] = await closed_loop(send, c, seconds, start + c * 100_000)
    return out


def cli_run(url: str, lines: int, start: int) -> dict:
    """`nlpserve analyze` over a file of new texts: seconds and texts/s."""
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "in.jsonl"
        src.write_text("".join(json.dumps({"id": i, "text": t}) + "\n" for i, t in enumerate(make_texts(lines, start))))
        began = time.perf_counter()
        cmd = [sys.executable, "-m", "nlpserve.cli", "analyze", str(src), "-o", f"{tmp}/out.jsonl", "--url", url]
        subprocess.run([*cmd, "--quiet"], check=True, cwd=ROOT)
        seconds = time.perf_counter() - began
        done = sum(1 for _ in open(f"{tmp}/out.jsonl"))
    return {"seconds": seconds, "texts_per_s": done / seconds, "answered": done}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=15.0)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--lines", type=int, default=400)
    args = parser.parse_args()
    start = int(time.time() * 1000) % 1_000_000_000 * 1000  # texts never sent before (no cache answers)
    rows = []
    with serve_session(ROOT / "config" / "config.yaml", HAPROXY):
        for r in range(args.rounds):
            for protocol in ("http", "grpc"):
                start += 50_000_000
                rows.append((r + 1, protocol, asyncio.run(sweep(protocol, args.seconds, start))))
            start += 50_000_000
            rows.append((r + 1, "http (wrk)", {str(c): wrk.run(URL, c, args.seconds, start + c) for c in CLIENTS}))
        cli = {
            p: cli_run(u, args.lines, start + 90_000_000 + i * 1_000_000)
            for i, (p, u) in enumerate(
                [("http", URL), ("grpc", f"grpc://{GRPC}"), ("http", URL), ("grpc", f"grpc://{GRPC}")]
            )
        }
    print("| round | protocol (driver) | p50 ms, 1 client | req/s, 16 clients | req/s, 64 clients | driver CPU |")
    print("|---|---|---|---|---|---|")
    for r, protocol, res in rows:
        cpu = "/".join(f"{res[str(c)].get('driver_cpu', 0):.0%}" for c in CLIENTS) if "wrk" not in protocol else "<1%"
        print(
            f"| {r} | {protocol} | {res['1']['p50_ms']:.1f} | {res['16']['req_per_s']:.1f} | "
            f"{res['64']['req_per_s']:.1f} | {cpu} |"
        )
    for r in range(1, args.rounds + 1):
        h, g = (next(res for rr, p, res in rows if rr == r and p == want) for want in ("http", "grpc"))
        print(
            f"round {r}, gRPC / HTTP (same Python driver): p50 {g['1']['p50_ms'] / h['1']['p50_ms']:.2f}x, "
            f"16 clients {g['16']['req_per_s'] / h['16']['req_per_s']:.2f}x, "
            f"64 clients {g['64']['req_per_s'] / h['64']['req_per_s']:.2f}x"
        )
    print(f"\nnlpserve analyze, {args.lines} new texts (last run of each): ", end="")
    print(", ".join(f"{p} {v['seconds']:.1f} s ({v['texts_per_s']:.1f} texts/s)" for p, v in cli.items()))


if __name__ == "__main__":
    main()
