"""Task calls from the ingress: per task a bounded number in flight, waiting calls sent together,
each call bounded by its task's timeout, and a call nobody waits for cancelled."""

from __future__ import annotations

import asyncio
import time
from collections import Counter, defaultdict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from nlpserve import tracing
from nlpserve.errors import EncoderMismatch, TokenizerMismatch, describe
from nlpserve.schemas import ErrorCode, task_error

# A task call takes refs (stored TokenBatches, nested so the callee resolves them), per ref the
# batch rows it should answer and, for a head of a shared encoder, per ref that encoder's answer
# (passed on unresolved: in Serve a DeploymentResponse, which Serve hands to the task directly).
# It returns {"results": [one per row, in order], "model": {name, version, checksum}, "get_ms": ..,
# "encode_ms": .., "compute_ms": ..}.
TaskCall = Callable[..., Awaitable[dict]]
# What one item's task call gave: its answers (one per row, or the same error for each), the call's
# timing, and the model that answered (None when the call failed).
CallResult = tuple[list, dict, dict | None]

# A task whose model was swapped: the caller regroups before its next batch.
MISMATCHES = (TokenizerMismatch, EncoderMismatch)


def ms(seconds: float) -> float:
    return round(seconds * 1000, 3)


@dataclass
class Waiting:
    """A batch's call of one task, waiting for a free slot of that task."""

    ref: Any
    rows: list[int]
    encoded: Any  # the encoder's answer for these rows (heads only)
    future: asyncio.Future
    spans: list = field(default_factory=list)  # per traced request of these rows, its span of this task


class Dispatcher:
    """Each task has at most ``max_in_flight`` remote calls running. Calls of a busy task wait in
    the ingress, and a freed slot sends all of that task's waiting calls as one (their stored
    batches are joined by the replica), so a slow task batches more and never holds up the others.
    A call that raises or exceeds its task's timeout (``timeouts_s``, else ``timeout_s``) answers
    ``{"error": ..., "code": ...}`` for each of its rows; a remote call whose callers all gave up is
    cancelled (in Serve the replica then stops its model within one chunk)."""

    def __init__(
        self,
        tasks: dict[str, TaskCall],
        stats: Counter[str],
        timeout_s: float = 30.0,
        max_in_flight: int = 4,
        on_call: Callable[[str, dict, str | None], None] = lambda task, timing, code: None,
        on_mismatch: Callable[[], None] = lambda: None,
    ) -> None:
        self.tasks = tasks
        self.stats = stats
        self.timeout_s = timeout_s
        self.timeouts_s: dict[str, float] = {}  # per task, over timeout_s
        self.max_in_flight = max_in_flight
        self.on_call = on_call
        self.on_mismatch = on_mismatch
        self.waiting: defaultdict[str, list[Waiting]] = defaultdict(list)
        self.in_flight: Counter[str] = Counter()

    def timeout(self, task: str) -> float:
        return self.timeouts_s.get(task, self.timeout_s)

    async def call(self, task: str, ref: Any, rows: list[int], encoded: Any, spans: list) -> CallResult:
        """The task's answers for ``rows`` of the stored batch ``ref`` (with, for a head, the encoder's
        answer ``encoded``), sent as soon as the task has a free slot."""
        start = time.perf_counter()
        self.stats[f"calls.{task}"] += 1
        future = asyncio.get_running_loop().create_future()
        self.waiting[task].append(Waiting(ref, rows, encoded, future, spans))
        self._send_waiting(task)
        timeout = self.timeout(task)
        try:
            results, out = await asyncio.wait_for(future, timeout)
            timing = {
                "call_ms": ms(time.perf_counter() - start),
                "get_ms": out["get_ms"],
                "encode_ms": out.get("encode_ms"),
                "compute_ms": out["compute_ms"],
            }
            self.on_call(task, timing, None)
            return results, timing, out["model"]
        except asyncio.TimeoutError:
            self.stats[f"timeouts.{task}"] += 1
            error = task_error(ErrorCode.timeout, f"{task} timed out after {timeout:g} s")
        except Exception as e:  # noqa: BLE001 - any task failure degrades only that task
            self.stats[f"errors.{task}"] += 1
            if isinstance(e, MISMATCHES):
                self.on_mismatch()
            error = task_error(ErrorCode.failed, f"{task} failed: {describe(e)}")
        return self.failed(task, error, rows, start)

    def failed(self, task: str, error: dict, rows: list[int], start: float) -> CallResult:
        timing = {"call_ms": ms(time.perf_counter() - start)}
        self.on_call(task, timing, error["code"])
        return [error] * len(rows), timing, None

    def _send_waiting(self, task: str) -> None:
        """If the task has a free slot, send every call of it that still waits, as one."""
        group = [w for w in self.waiting[task] if not w.future.done()]  # done: gave up waiting
        if not group:
            self.waiting[task] = []
        elif self.in_flight[task] < self.max_in_flight:
            self.waiting[task] = []
            self.in_flight[task] += 1
            asyncio.ensure_future(self._send(task, group))

    async def _send(self, task: str, group: list[Waiting]) -> None:
        self.stats[f"sends.{task}"] += 1
        encoded = [w.encoded for w in group] if group[0].encoded is not None else []  # heads only
        pending = None
        rows = sum(len(w.rows) for w in group)
        # One call for several requests: one span, in the first one's trace, linked to the others' task spans.
        span = tracing.begin(f"{task} call", [s for w in group for s in w.spans], tracing.CLIENT)
        error = None
        try:
            with tracing.using(span):  # Serve sends the current span's context with the call
                pending = self.tasks[task]([w.ref for w in group], [w.rows for w in group], *encoded)
            remote = asyncio.ensure_future(pending)
            gave_up = asyncio.gather(*(w.future for w in group), return_exceptions=True)  # done: nobody waits
            await asyncio.wait({remote, gave_up}, timeout=self.timeout(task), return_when=asyncio.FIRST_COMPLETED)
            if not remote.done():
                remote.cancel()
                remote.add_done_callback(lambda f: f.cancelled() or f.exception())  # seen: Serve raises its own error
                if hasattr(pending, "cancel"):
                    pending.cancel()  # a Serve DeploymentResponse: stop the remote call too
                if gave_up.done():
                    self.stats[f"cancelled.{task}"] += 1
                    error = "cancelled: nobody waits for it"
                    return
                raise asyncio.TimeoutError
            out = remote.result()
            if len(out["results"]) != rows:
                raise RuntimeError(f"returned {len(out['results'])} results for {rows} texts")
            k = 0
            for w in group:
                if not w.future.done():
                    w.future.set_result((out["results"][k : k + len(w.rows)], out))
                k += len(w.rows)
        except Exception as e:  # noqa: BLE001 - handed to every waiting call, which reports it
            error = describe(e)
            for w in group:
                if not w.future.done():
                    w.future.set_exception(e)
        finally:
            tracing.end([span], {"nlpserve.texts": rows}, error)
            self.in_flight[task] -= 1
            self._send_waiting(task)
