"""The ingress core: tokenize a batch once, store it once, call each requested task once."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from nlpserve.tokens import TokenBatch

# A task call takes [ref] (the stored TokenBatch, nested so the callee resolves it) and the
# batch rows it should answer, and returns {"results": [one per row], "model": {name, version,
# checksum}, "get_ms": .., "compute_ms": ..}.
TaskCall = Callable[[list, list[int]], Awaitable[dict]]


@dataclass(frozen=True)
class Item:
    text: str
    tasks: tuple[str, ...]
    received: float = field(default_factory=time.perf_counter)


def _ms(seconds: float) -> float:
    return round(seconds * 1000, 3)


def describe(error: BaseException) -> str:
    cause = getattr(error, "cause", None) or error
    message = str(cause).strip().splitlines()
    return f"{type(cause).__name__}: {message[0][:300]}" if message else type(cause).__name__


class Pipeline:
    """Runs one batch of requests through the task callables.

    ``put`` stores the TokenBatch once (``ray.put`` in Serve); every task requested by
    at least one item is called once with the stored reference and the rows that asked
    for it. A task that raises or exceeds ``timeout_s`` becomes ``{"error": ...}`` in the
    rows that asked for it; the other tasks are unaffected.
    """

    def __init__(
        self,
        tokenizer: Callable[[list[str]], TokenBatch],
        tasks: dict[str, TaskCall],
        put: Callable[[TokenBatch], Any],
        timeout_s: float = 30.0,
    ) -> None:
        self.tokenizer = tokenizer
        self.tasks = tasks
        self.put = put
        self.timeout_s = timeout_s
        self.stats: Counter[str] = Counter()

    async def run(self, items: Sequence[Item]) -> list[dict]:
        """One result dict per item: a key per task it asked for, ``models`` (the model that
        answered each task) and ``timings`` (ms)."""
        start = time.perf_counter()
        batch = self.tokenizer([it.text for it in items])
        tokenized = time.perf_counter()
        ref = self.put(batch)
        stored = time.perf_counter()
        self.stats.update(batches=1, items=len(items), puts=1)
        rows = {t: [i for i, it in enumerate(items) if t in it.tasks] for t in self.tasks}
        names = [t for t, r in rows.items() if r]
        outputs = await asyncio.gather(*(self._call(t, ref, rows[t]) for t in names))
        results: list[dict] = [
            {
                "models": {},
                "timings": {
                    "batch_size": len(items),
                    "queue_ms": _ms(start - it.received),
                    "tokenize_ms": _ms(tokenized - start),
                    "tokenized_texts": batch.encoded,
                    "put_ms": _ms(stored - tokenized),
                    "tasks": {},
                },
            }
            for it in items
        ]
        for task, (out, timing, model) in zip(names, outputs):
            for i, r in zip(rows[task], out):
                results[i][task] = r
                results[i]["timings"]["tasks"][task] = timing
                if model:
                    results[i]["models"][task] = model
        return results

    async def _call(self, task: str, ref: Any, rows: list[int]) -> tuple[list, dict, dict | None]:
        self.stats[f"calls.{task}"] += 1
        start = time.perf_counter()
        pending = self.tasks[task]([ref], rows)
        try:
            out = await asyncio.wait_for(pending, self.timeout_s)
            if len(out["results"]) != len(rows):
                raise RuntimeError(f"returned {len(out['results'])} results for {len(rows)} texts")
            timing = {
                "call_ms": _ms(time.perf_counter() - start),
                "get_ms": out["get_ms"],
                "compute_ms": out["compute_ms"],
            }
            return out["results"], timing, out["model"]
        except asyncio.TimeoutError:
            if hasattr(pending, "cancel"):  # a Serve DeploymentResponse: stop the remote call too
                pending.cancel()
            self.stats[f"timeouts.{task}"] += 1
            error = {"error": f"{task} timed out after {self.timeout_s:g} s"}
        except Exception as e:  # noqa: BLE001 - any task failure degrades only that task
            self.stats[f"errors.{task}"] += 1
            error = {"error": f"{task} failed: {describe(e)}"}
        return [error] * len(rows), {"call_ms": _ms(time.perf_counter() - start)}, None
