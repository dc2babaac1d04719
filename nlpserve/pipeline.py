"""The ingress core: tokenize a batch once per tokenizer group, store each group's tokens once,
encode it once per shared encoder, call each requested task once."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from nlpserve import tracing
from nlpserve.answer import Answer
from nlpserve.dispatch import CallLimits, Dispatcher, EncodeCall, Outcome, Stats, TaskCall, ms
from nlpserve.schemas import ErrorCode, TaskError, TaskTiming
from nlpserve.topology import Group, Topology


@dataclass(frozen=True)
class Item:
    text: str
    tasks: tuple[str, ...]
    received: float = field(default_factory=time.perf_counter)
    deadline: float | None = None  # time.perf_counter() after which unfinished tasks are given up
    request: int = 0  # items of one request share it (a batch span counts its requests)
    trace: Any = field(default=None, compare=False)  # the request's recording span, when Serve traces it


@dataclass
class Pending:
    """One item of a started batch: its result so far and, per task, the batch's shared call and
    the item's place in that call's rows."""

    result: Answer
    calls: dict[str, tuple[asyncio.Future[Outcome], int]]
    deadline: float | None


@dataclass
class Stored:
    """A batch as stored: per task the ObjectRef of its group's tokens, and what storing it took."""

    refs: dict[str, Any] = field(default_factory=dict)
    tokenize_s: float = 0.0
    put_s: float = 0.0
    tokenized: int = 0  # texts tokenized (not found in the token cache)
    steps: list[tracing.Step] = field(default_factory=list)


# Batches this small are tokenized on the event loop: a few ms at most, less than handing them to a
# thread and back costs in a busy replica. Larger ones go to a thread, so other requests go on meanwhile.
INLINE_CHARS = 8_000


def expired(task: str) -> TaskError:
    return TaskError(code=ErrorCode.deadline_exceeded, error=f"{task} was not done by the request's deadline")


class Pipeline:
    """Runs one batch of requests through the task callables.

    Tasks are grouped by the fingerprint of the tokenizer each needs (``topology``, which asks the tasks
    and encoders what they read). For every group some item needs, the batch is tokenized once and
    ``put`` (``ray.put`` in Serve) once; every task requested by at least one item is called once with
    its group's reference and the rows that asked for it. Tasks that read the same encoder (equal keys:
    weights checksum and tokenizer fingerprint) share one encoder call per batch, over the rows any of
    them needs, whose answer goes to each of them unawaited. Task calls go through a Dispatcher
    (in-flight limits, waiting calls sent together, timeouts): a task that fails becomes a TaskError
    in the rows that asked for it; the other tasks are unaffected. An item with a
    ``deadline`` gets what is done by then. Work nobody waits for is stopped: a task call whose items
    have all timed out, passed their deadlines or gone away is cancelled, and so is an encoder call once
    none of its heads' calls is still waiting for it.
    """

    def __init__(
        self,
        topology: Topology,
        tasks: dict[str, TaskCall],
        put: Callable[[Any], Any],
        encoders: dict[str, EncodeCall] | None = None,
        limits: CallLimits | None = None,
        on_call: Callable[[str, TaskTiming, str | None], None] = lambda task, timing, code: None,
        on_send: Callable[[str, int], None] = lambda name, texts: None,
        on_batch: Callable[[int, int, int], None] = lambda size, tokenized, unique: None,
    ) -> None:
        self.topology = topology
        self.tasks = tasks
        self.put = put
        self.encoders = encoders or {}
        self.on_batch = on_batch  # per batch: its texts, how many were tokenized, how many differ
        self.stats = Stats()
        self.dispatch = Dispatcher(
            tasks,
            self.encoders,
            self.stats,
            limits or CallLimits(),
            on_call=on_call,
            on_send=on_send,
            on_mismatch=topology.mismatch,
        )
        self.wanted: Counter[asyncio.Future] = Counter()  # per task call, the items still waiting for it

    def limit(self, limits: CallLimits) -> None:
        """New limits, for the batches and task calls that start from now on."""
        self.dispatch.limits = limits

    async def start(self, items: Sequence[Item], alone: bool = False) -> list[Pending]:
        """Tokenize and store the batch once per group it needs and queue one call per task at its
        stage; returns at once, one Pending per item, for ``finish``. ``alone``: its calls take no other
        batch's texts (a long request: they would wait for it)."""
        start = time.perf_counter()
        stored = await self._store(items, await self.topology.current())
        rows = {t: [i for i, it in enumerate(items) if t in it.tasks] for t in self.tasks}
        batch_of, spans = self._trace(items, start, stored.steps, rows)
        calls = self._queue(stored.refs, {t: r for t, r in rows.items() if r}, spans, batch_of, alone)
        for t, call in calls.items():
            if spans[t]:
                call.add_done_callback(partial(self._end_spans, spans[t]))
        tracing.end(batch_of)
        for it in items:
            self.wanted.update(calls[t] for t in it.tasks if t in calls)
        timings = {
            "groups": len(set(map(id, stored.refs.values()))),
            "tokenize_ms": ms(stored.tokenize_s),
            "tokenized_texts": stored.tokenized,
            "put_ms": ms(stored.put_s),
        }
        return [
            Pending(
                result=Answer({"batch_size": len(items), "queue_ms": ms(start - it.received), **timings}),
                calls={t: (calls[t], rows[t].index(i)) for t in it.tasks if t in calls},
                deadline=it.deadline,
            )
            for i, it in enumerate(items)
        ]

    async def _store(self, items: Sequence[Item], groups: dict[str, Group]) -> Stored:
        """The batch tokenized and put once per tokenizer group one of its tasks reads."""
        texts = [it.text for it in items]
        wanted = {t for it in items for t in it.tasks}
        stored = Stored()
        for group in groups.values():
            if wanted.isdisjoint(group.tasks):
                continue
            t0 = time.perf_counter()
            if sum(map(len, texts)) <= INLINE_CHARS:
                batch = group.tokenizer(texts)
            else:
                batch = await asyncio.to_thread(group.tokenizer, texts)  # off the loop: others go on meanwhile
            t1 = time.perf_counter()
            ref = self.put(batch)
            t2 = time.perf_counter()
            stored.tokenize_s += t1 - t0
            stored.put_s += t2 - t1
            stored.tokenized += batch.tokenized
            stored.steps.append((t0, t1, t2, batch.tokenized))
            stored.refs.update(dict.fromkeys(group.tasks, ref))
        self.stats.batches += 1
        self.stats.items += len(items)
        self.stats.puts += len({id(r) for r in stored.refs.values()})
        self.on_batch(len(items), stored.tokenized, len(set(texts)))
        return stored

    @staticmethod
    def _trace(
        items: Sequence[Item], start: float, steps: list[tracing.Step], rows: dict[str, list[int]]
    ) -> tuple[list, dict[str, list]]:
        """Per item its request's "batch" span, and per task the spans of the traced requests' wait for
        its answer; empty unless tracing is on and Serve sampled a request of the batch."""
        if not any(it.trace for it in items):
            return [None] * len(items), dict.fromkeys(rows, [])
        traces, received = [it.trace for it in items], [it.received for it in items]
        size = {"nlpserve.batch.texts": len(items), "nlpserve.batch.requests": len({it.request for it in items})}
        batch_of = tracing.batch_spans(traces, received, start, steps, size)
        return batch_of, {t: tracing.each(t, [items[i].trace for i in r]) for t, r in rows.items()}

    def _queue(
        self, refs: dict[str, Any], rows: dict[str, list[int]], spans: dict[str, list], batch_of: list, alone: bool
    ) -> dict[str, asyncio.Future[Outcome]]:
        """Per task, its answers for its rows: queued at its stage, a head at its encoder's."""
        calls: dict[str, asyncio.Future[Outcome]] = {}
        parts = []
        heads: dict[str, dict[str, list[int]]] = {}  # encoder -> its heads' rows
        for task, r in rows.items():
            if task not in refs:  # the task is in no tokenizer group
                calls[task] = asyncio.ensure_future(self._unavailable(task, r))
            elif task in self.topology.encoder_of:
                heads.setdefault(self.topology.encoder_of[task], {})[task] = r
            else:
                part, calls[task] = self.dispatch.task(task, refs[task], r, spans[task])
                parts.append(part)
        for encoder, head_rows in heads.items():
            ref = refs[next(iter(head_rows))]  # an encoder's heads read one tokenizer: its own
            batch_spans = [batch_of[i] for i in sorted({i for r in head_rows.values() for i in r})]
            mine = {t: spans[t] for t in head_rows}
            part, head_calls = self.dispatch.heads(encoder, ref, head_rows, mine, batch_spans)
            parts.append(part)
            calls.update(head_calls)
        self.dispatch.queue(parts, alone)
        return calls

    async def finish(self, pending: Pending) -> Answer:
        """The item's result when all its tasks are done, or at its deadline: then the tasks still
        running are marked ``deadline_exceeded`` (and go on only if other items still need them)."""
        result, calls = pending.result, pending.calls
        try:
            if calls:
                left = None if pending.deadline is None else max(0.0, pending.deadline - time.perf_counter())
                await asyncio.wait({call for call, _ in calls.values()}, timeout=left)
            for task, (call, k) in calls.items():
                if call.done():
                    outcome = call.result()
                    result.add(task, outcome.answers[k], outcome.model, outcome.timing)
                else:
                    self.stats.tasks[task].deadlines += 1
                    result.add(task, expired(task))
            return result
        finally:  # also when the request went away while waiting
            self.release(pending)

    def release(self, pending: Pending) -> None:
        """The item no longer waits for its task calls: cancel those that no other item waits for."""
        for task, (call, _) in pending.calls.items():
            self.wanted[call] -= 1
            if self.wanted[call] <= 0:
                del self.wanted[call]
                if not call.done():
                    call.cancel()
                    self.stats.tasks[task].abandoned += 1

    @staticmethod
    def expired_result(item: Item) -> Answer:
        """The answer of an item whose deadline passed before its batch started (queued or tokenizing)."""
        result = Answer.unbatched(ms(time.perf_counter() - item.received))
        for task in item.tasks:
            result.add(task, expired(task))
        return result

    async def _unavailable(self, task: str, rows: list[int]) -> Outcome:
        self.stats.tasks[task].errors += 1
        error = TaskError(code=ErrorCode.unavailable, error=f"{task} unavailable: {self.topology.unavailable(task)}")
        return self.dispatch.failed(task, error, rows, time.perf_counter())

    @staticmethod
    def _end_spans(spans: list, call: asyncio.Future) -> None:
        """End the requests' spans of a task call with its timings, or how it ended."""
        if call.cancelled():  # every item waiting for it gave up (deadline, disconnect)
            tracing.end(spans, error="abandoned")
            return
        outcome: Outcome = call.result()
        error = outcome.answers[0].code.value if outcome.failed else None
        tracing.end(spans, {f"nlpserve.{k}": v for k, v in outcome.timing.model_dump(exclude_none=True).items()}, error)
