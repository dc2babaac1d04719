"""The ingress core: tokenize a batch once, store it once, call each requested task once."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

from nlpserve.tokens import TokenBatch

# A task call takes [ref] (the stored TokenBatch, nested so the callee resolves it) and the
# batch rows it should answer, and returns one result per row.
TaskCall = Callable[[list, list[int]], Awaitable[list]]


@dataclass(frozen=True)
class Item:
    text: str
    tasks: tuple[str, ...]


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
        batch = self.tokenizer([it.text for it in items])
        ref = self.put(batch)
        self.stats.update(batches=1, items=len(items), tokenizations=1, puts=1)
        rows = {t: [i for i, it in enumerate(items) if t in it.tasks] for t in self.tasks}
        names = [t for t, r in rows.items() if r]
        outputs = await asyncio.gather(*(self._call(t, ref, rows[t]) for t in names))
        results: list[dict] = [{} for _ in items]
        for task, out in zip(names, outputs):
            for i, r in zip(rows[task], out):
                results[i][task] = r
        return results

    async def _call(self, task: str, ref: Any, rows: list[int]) -> list:
        self.stats[f"calls.{task}"] += 1
        pending = self.tasks[task]([ref], rows)
        try:
            out = await asyncio.wait_for(pending, self.timeout_s)
            if len(out) != len(rows):
                raise RuntimeError(f"returned {len(out)} results for {len(rows)} texts")
            return out
        except asyncio.TimeoutError:
            if hasattr(pending, "cancel"):  # a Serve DeploymentResponse: stop the remote call too
                pending.cancel()
            self.stats[f"timeouts.{task}"] += 1
            error = {"error": f"{task} timed out after {self.timeout_s:g} s"}
        except Exception as e:  # noqa: BLE001 - any task failure degrades only that task
            self.stats[f"errors.{task}"] += 1
            error = {"error": f"{task} failed: {describe(e)}"}
        return [error] * len(rows)
