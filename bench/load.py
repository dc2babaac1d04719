"""A small closed-loop HTTP load driver: C clients, each sending its next request when the last returns."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import httpx
import numpy as np


def percentiles(values: list[float]) -> dict:
    return {f"p{q}_ms": float(np.percentile(values, q)) for q in (50, 95, 99)}


@dataclass
class Result:
    latencies_ms: list[float] = field(default_factory=list)
    bodies: list[dict] = field(default_factory=list)
    errors: int = 0
    elapsed_s: float = 0.0
    texts: int = 0

    def summary(self) -> dict:
        return {
            "requests": len(self.latencies_ms),
            "errors": self.errors,
            **percentiles(self.latencies_ms or [float("nan")]),
            "req_per_s": len(self.latencies_ms) / self.elapsed_s if self.elapsed_s else 0.0,
            "texts_per_s": self.texts / self.elapsed_s if self.elapsed_s else 0.0,
        }


async def _load(url: str, body: Callable[[int], dict], concurrency: int, requests: int, warmup: int) -> Result:
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(timeout=120, limits=limits) as client:
        for i in range(warmup):
            (await client.post(url, json=body(i))).raise_for_status()
        result = Result()
        counter = iter(range(requests))

        async def worker() -> None:
            for i in counter:
                b = body(i)
                start = time.perf_counter()
                try:
                    r = await client.post(url, json=b)
                except httpx.TransportError:  # a dropped connection is one failed request, not the run's end
                    result.errors += 1
                    continue
                if r.status_code != 200:
                    result.errors += 1
                    continue
                result.latencies_ms.append((time.perf_counter() - start) * 1000)
                result.bodies.append(r.json())
                result.texts += len(b.get("texts", [None]))

        start = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        result.elapsed_s = time.perf_counter() - start
        return result


def load(url: str, body: Callable[[int], dict], concurrency: int, requests: int, warmup: int = 5) -> Result:
    return asyncio.run(_load(url, body, concurrency, requests, warmup))
