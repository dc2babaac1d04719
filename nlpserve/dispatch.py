"""Calls from the ingress to the model deployments, in batches that follow the load.

Each deployment the ingress calls first is a *stage*: the shared encoder, or a task that reads tokens
only (NER). A stage has at most ``max_in_flight`` calls running. Work for a busy stage waits here, and
the stage's next call takes all of it (up to ``max_texts`` texts), so an idle stage gets a lone text at
once and a busy one gets bigger calls as the load grows (as Triton's dynamic batcher and TEI's queue).
A call that runs longer than ``slow_s`` (a long text) lets one more call go, so it holds up the work
behind it no longer than that. A *head* (a task that reads the shared encoder's vectors) rides on its
encoder's call: its call is sent together with the encoder's, carrying a reference to the encoder's
answer, which the head's replica awaits itself, so the vectors go from the encoder to the heads without
another round trip through here. An encoder's slot frees when its pass ends, not when its heads answer, so
its next pass runs while the heads read the last one; one such call at most is left waiting for its heads
(each head's call waits in its replica for the pass it reads, and Serve's autoscaler counts it there).

Every call is bounded by its task's timeout; a call that raises or runs out of time answers each of its
rows with a TaskError and leaves the other tasks alone; a call nobody waits for any more is cancelled.
"""

from __future__ import annotations

import asyncio
import contextvars
import time
from collections import defaultdict
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

from nlpserve import tracing
from nlpserve.errors import EncoderMismatch, TokenizerMismatch, describe
from nlpserve.schemas import ErrorCode, TaskError, TaskTiming

# A task call takes the stored TokenBatches (references, nested so the callee resolves them), per
# reference the rows to answer and, for a head, a one-element list holding the reference to its
# encoder's answer (one EncodedBatch per reference); it returns a Reply.
TaskCall = Callable[..., Awaitable["Reply"]]

T = TypeVar("T")

# A task whose model was swapped: the caller regroups before its next batch.
MISMATCHES = (TokenizerMismatch, EncoderMismatch)


class Encoding(Protocol):
    """An encoder call on its way: ``vectors`` is what its heads are given (in Serve, the ObjectRef of
    the call's answer); ``done`` returns once the pass has ended, however it ended, or after ``timeout``
    seconds; ``cancel`` stops the call."""

    vectors: Any

    async def done(self, timeout: float) -> None: ...

    def cancel(self) -> None: ...


# An encoder call takes the stored TokenBatches and per reference the rows to encode; it returns once
# the call is sent (not answered).
EncodeCall = Callable[[list, list[list[int]]], Awaitable[Encoding]]


def ms(seconds: float) -> float:
    return round(seconds * 1000, 3)


def detached(work: Coroutine[Any, Any, T]) -> asyncio.Task[T]:
    """A task for work shared by many requests (a call for several batches, a round of questions), in an
    empty context: Serve cancels the handle calls made in a request's context when that request is
    cancelled (its client went away), and this work must not go with it."""
    return asyncio.get_running_loop().create_task(work, context=contextvars.Context())


@dataclass(frozen=True)
class Reply:
    """A task replica's answer to one call: a result per row, in order; the model that made them; the
    texts the call held; when the replica began it (``time.time()``); how long it read the object
    store, ran the model and took in all; for a head, the encoder pass it read and that pass's texts."""

    results: list
    model: dict
    texts: int
    received: float
    get_ms: float
    compute_ms: float
    replica_ms: float
    encode_ms: float | None = None
    encode_texts: int | None = None


@dataclass
class TaskCounts:
    """What happened to one task's (or one encoder's) calls since the ingress started."""

    calls: int = 0  # batches that asked it for answers
    sends: int = 0  # remote calls sent (one may serve several batches)
    texts: int = 0  # texts those remote calls held
    timeouts: int = 0  # answers over the task's timeout
    errors: int = 0  # answers that failed (raised, or the task was unavailable)
    cancelled: int = 0  # remote calls stopped because nobody waited for them any more
    deadlines: int = 0  # answers given up at a request's deadline
    abandoned: int = 0  # batch calls dropped once every item that asked had gone


@dataclass
class Stats:
    """The ingress's counters: batches, their items and ``ray.put`` calls, and per task its TaskCounts."""

    batches: int = 0
    items: int = 0
    puts: int = 0
    tasks: defaultdict[str, TaskCounts] = field(default_factory=lambda: defaultdict(TaskCounts))

    def flat(self) -> dict[str, int]:
        """As the ingress's ``stats()`` reports them: ``batches``, ``items``, ``puts`` and ``<count>.<task>``."""
        out = {"batches": self.batches, "items": self.items, "puts": self.puts}
        for task, counts in self.tasks.items():
            out.update({f"{name}.{task}": n for name, n in vars(counts).items()})
        return out


@dataclass(frozen=True)
class CallLimits:
    """How the Dispatcher calls: the timeout of a call (per task where ``timeouts_s`` names it), calls
    in flight per stage, texts per call, how long a free stage waits for its batch's other stages, and
    after how long a call running still lets one more call go to its stage (``slow_s``)."""

    timeout_s: float = 30.0
    timeouts_s: dict[str, float] = field(default_factory=dict)
    max_in_flight: int = 1
    max_texts: int = 32
    together_s: float = 0.25
    slow_s: float = 2.0


@dataclass(frozen=True)
class Outcome:
    """What a task call gave one batch: per row its answer (or the same TaskError for each), the call's
    timings and the model that answered (None when the call failed)."""

    answers: list
    timing: TaskTiming
    model: dict | None = None

    @property
    def failed(self) -> bool:
        return self.model is None


@dataclass(eq=False)
class Part:
    """One batch's share of a stage call: its stored tokens, its rows, and the future the batch awaits.
    An encoder's part has no future of its own: the parts of its ``heads`` wait for their answers."""

    stage: str
    ref: Any
    rows: list[int]
    future: asyncio.Future | None
    queued: float = field(default_factory=time.perf_counter)
    spans: list = field(default_factory=list)  # per traced request of these rows, its span (tracing)
    heads: dict[str, Part] = field(default_factory=dict)
    siblings: list[Part] = field(default_factory=list)  # the same batch's parts at the other stages
    taken: bool = False  # its stage has taken it into a call
    alone: bool = False  # in a call of its own (a long request's)
    sent: float = 0.0  # perf_counter when its call was sent
    sent_wall: float = 0.0  # the same moment, time.time(), against the replica's clock

    def wanted(self) -> bool:
        futures = [self.future] if self.future else [h.future for h in self.heads.values()]
        return any(not f.done() for f in futures)


@dataclass(eq=False)
class Stage:
    queue: list[Part] = field(default_factory=list)
    running: list[float] = field(default_factory=list)  # perf_counter at which each call in flight was sent
    chains: int = 0  # an encoder's calls whose heads have not all answered (passing, or passed)
    timer: asyncio.TimerHandle | None = None  # a pump when a waiting part may go (siblings, a slow call)

    @property
    def in_flight(self) -> int:
        return len(self.running)


class Dispatcher:
    """Stage calls for the ingress (see the module docstring). ``tasks`` and ``encoders`` make the
    remote calls; ``on_call`` hears of every task call a batch made (its timing, and the error code if
    it failed), ``on_send`` of every remote call sent (stage or head, and its texts), ``on_mismatch`` of
    a task whose model no longer reads what it was sent."""

    def __init__(
        self,
        tasks: dict[str, TaskCall],
        encoders: dict[str, EncodeCall],
        stats: Stats,
        limits: CallLimits | None = None,
        on_call: Callable[[str, TaskTiming, str | None], None] = lambda task, timing, code: None,
        on_send: Callable[[str, int], None] = lambda name, texts: None,
        on_mismatch: Callable[[], None] = lambda: None,
    ) -> None:
        self.tasks = tasks
        self.encoders = encoders
        self.stats = stats
        self.limits = limits or CallLimits()  # replaced whole by Pipeline.limit: calls from then on follow the new one
        self.on_call = on_call
        self.on_send = on_send
        self.on_mismatch = on_mismatch
        self.stages: dict[str, Stage] = {name: Stage() for name in (*tasks, *encoders)}

    def timeout(self, task: str) -> float:
        return self.limits.timeouts_s.get(task, self.limits.timeout_s)

    def in_flight(self, stage: str) -> int:
        return self.stages[stage].in_flight

    def task(self, task: str, ref: Any, rows: list[int], spans: list) -> tuple[Part, asyncio.Task[Outcome]]:
        """The task's answers for ``rows`` of the stored batch ``ref``, from its next call once the part
        is queued (``queue``)."""
        part = Part(task, ref, rows, asyncio.get_running_loop().create_future(), spans=spans)
        return part, asyncio.ensure_future(self._wait(task, part))

    def heads(
        self, encoder: str, ref: Any, rows: dict[str, list[int]], spans: dict[str, list], batch_spans: list
    ) -> tuple[Part, dict[str, asyncio.Task[Outcome]]]:
        """Per head of ``encoder``, its answers for its ``rows`` of the stored batch ``ref``: the
        encoder's next call encodes the rows any of them needs, and carries each head's call along."""
        loop = asyncio.get_running_loop()
        parts = {head: Part(head, ref, r, loop.create_future(), spans=spans[head]) for head, r in rows.items()}
        union = sorted({i for r in rows.values() for i in r})
        calls = {head: asyncio.ensure_future(self._wait(head, part)) for head, part in parts.items()}
        return Part(encoder, ref, union, None, spans=batch_spans, heads=parts), calls

    def queue(self, parts: list[Part], alone: bool = False) -> None:
        """One batch's parts, to their stages: they go out together (see ``_ready``); ``alone``: each in
        a call with no other batch's part."""
        for part in parts:
            part.siblings = [p for p in parts if p is not part]
            part.alone = alone
            self.stages[part.stage].queue.append(part)
        for part in parts:
            self._pump(part.stage)

    def failed(self, task: str, error: TaskError, rows: list[int], start: float) -> Outcome:
        timing = TaskTiming(call_ms=ms(time.perf_counter() - start))
        self.on_call(task, timing, error.code.value)
        return Outcome([error] * len(rows), timing)

    async def _wait(self, task: str, part: Part) -> Outcome:
        self.stats.tasks[task].calls += 1
        timeout = self.timeout(task)
        try:
            reply, answers = await asyncio.wait_for(part.future, timeout)
        except asyncio.TimeoutError:
            self.stats.tasks[task].timeouts += 1
            error = TaskError(code=ErrorCode.timeout, error=f"{task} timed out after {timeout:g} s")
        except Exception as e:  # noqa: BLE001 - any task failure degrades only that task
            self.stats.tasks[task].errors += 1
            if isinstance(e, MISMATCHES):
                self.on_mismatch()
            error = TaskError(code=ErrorCode.failed, error=f"{task} failed: {describe(e)}")
        else:
            timing = TaskTiming(
                call_ms=ms(time.perf_counter() - part.queued),
                wait_ms=ms(part.sent - part.queued),
                texts=reply.texts,
                to_replica_ms=ms(max(0.0, reply.received - part.sent_wall)),
                get_ms=round(reply.get_ms, 3),
                compute_ms=round(reply.compute_ms, 3),
                replica_ms=round(reply.replica_ms, 3),
                encode_ms=reply.encode_ms,
                encode_texts=reply.encode_texts,
            )
            self.on_call(task, timing, None)
            return Outcome(answers, timing, reply.model)
        return self.failed(task, error, part.rows, part.queued)

    def _ready(self, part: Part, now: float) -> bool:
        """A batch's parts go to their stages together, so NER and the Encoder take the same batches: a
        part waits while a sibling's stage is busy, for at most ``together_s`` (a stuck stage holds up
        the others no longer than that)."""
        if now - part.queued >= self.limits.together_s:
            return True
        return all(s.taken or not s.wanted() or self._free(s.stage) for s in part.siblings)

    def _free(self, name: str, now: float | None = None) -> bool:
        """A slot for one more call: fewer than ``max_in_flight`` in flight, or one more once the oldest
        has run ``slow_s`` (a long text then holds up nobody behind it for longer than that). Never while
        an encoder's heads have not answered one call more than it may have in flight: they are behind."""
        stage, limits = self.stages[name], self.limits
        if stage.chains > limits.max_in_flight:
            return False
        if stage.in_flight < limits.max_in_flight:
            return True
        now = time.perf_counter() if now is None else now
        return stage.in_flight == limits.max_in_flight and now - stage.running[0] >= limits.slow_s

    def _pump(self, name: str) -> None:
        """While the stage has a free slot, send what waits for it and is ready: as much as one call may take."""
        stage = self.stages[name]
        stage.queue = [p for p in stage.queue if p.wanted()]  # the others' batches gave up
        now = time.perf_counter()
        while stage.queue and self._free(name):
            ready = [p for p in stage.queue if self._ready(p, now)]
            if not ready:
                break
            parts, texts = [], 0
            for p in ready:
                if parts and (p.alone or parts[0].alone or texts + len(p.rows) > self.limits.max_texts):
                    break
                parts.append(p)
                texts += len(p.rows)
            for p in parts:
                stage.queue.remove(p)
                p.taken = True
            stage.running.append(now)
            detached(self._send(name, parts, now))  # for several batches: no one request's cancel stops it
            for other in {s.stage for p in parts for s in p.siblings if not s.taken}:
                self._pump(other)  # its part of these batches may be ready now
        if stage.timer is not None:
            stage.timer.cancel()
            stage.timer = None
        if not stage.queue:
            return
        if self._free(name, now):  # parts waiting for their siblings: look again when the first may go
            wait = min(p.queued for p in stage.queue) + self.limits.together_s - now
        elif stage.in_flight == self.limits.max_in_flight:  # busy: look again when its oldest call turns slow
            wait = stage.running[0] + self.limits.slow_s - now
        else:
            return
        stage.timer = asyncio.get_running_loop().call_later(max(wait, 0.0), self._pump, name)

    async def _send(self, name: str, parts: list[Part], sent: float) -> None:
        stage, freed = self.stages[name], False

        def free() -> None:
            nonlocal freed
            if not freed:
                freed = True
                stage.running.remove(sent)
                self._pump(name)

        try:
            if name in self.encoders:
                timeout = max(self.timeout(h) for p in parts for h in p.heads)  # the encoder answers its heads
                encoding = await self._sent_encoding(name, parts, timeout)
                if encoding is not None:
                    await self._heads(name, parts, encoding, timeout, free)
            else:
                refs, rows = [p.ref for p in parts], [p.rows for p in parts]
                await self._call(name, parts, lambda: self.tasks[name](refs, rows))
        finally:
            free()  # an encoder's at the latest once its heads have answered

    async def _heads(
        self, name: str, parts: list[Part], encoding: Encoding, timeout: float, free: Callable[[], None]
    ) -> None:
        """One call per head ``parts`` carry, reading ``encoding``'s pass. ``free`` gives the encoder's
        slot back as soon as the pass has ended; until the heads have answered, the call is one of the
        stage's chains. The encoder call is cancelled if a head gave up or failed."""

        def passed(done: asyncio.Future) -> None:
            if not done.cancelled():
                done.exception()  # seen: a failed pass is the heads' to tell
            free()

        stage, passing = self.stages[name], None
        stage.chains += 1
        try:
            passing = asyncio.ensure_future(encoding.done(timeout))
            passing.add_done_callback(passed)
            refs = [p.ref for p in parts]
            calls = []
            for h in sorted({h for p in parts for h in p.heads}):
                rows = [p.heads[h].rows if h in p.heads else [] for p in parts]
                mine = [p.heads[h] for p in parts if h in p.heads]
                send = lambda h=h, rows=rows: self.tasks[h](refs, rows, [encoding.vectors])  # noqa: E731
                calls.append(self._call(h, mine, send))
            if not all(await asyncio.gather(*calls)):
                encoding.cancel()  # a head gave up or failed: nobody else reads this pass
        finally:
            if passing is not None:
                passing.cancel()
            stage.chains -= 1
            self._pump(name)

    async def _sent_encoding(self, name: str, parts: list[Part], timeout: float) -> Encoding | None:
        """The encoder call for ``parts``, once sent within ``timeout``; None if it could not be (each head
        is told why)."""
        texts = sum(len(p.rows) for p in parts)
        self._sent(name, parts, texts)
        span = tracing.begin("encode", [s for p in parts for s in p.spans], tracing.PRODUCER)
        try:
            with tracing.using(span):  # Serve sends the current span's context with the call
                sending = self.encoders[name]([p.ref for p in parts], [p.rows for p in parts])
                return await asyncio.wait_for(sending, timeout)
        except Exception as e:  # noqa: BLE001 - each head reports it
            for p in parts:
                for head in p.heads.values():
                    if not head.future.done():
                        head.future.set_exception(e)
            return None
        finally:
            tracing.end([span], {"nlpserve.texts": texts})

    def _sent(self, name: str, parts: list[Part], texts: int) -> None:
        now, wall = time.perf_counter(), time.time()
        for p in parts:
            p.sent, p.sent_wall = now, wall
        counts = self.stats.tasks[name]
        counts.sends += 1
        counts.texts += texts
        self.on_send(name, texts)

    @staticmethod
    def _answer(parts: list[Part], reply: Reply, rows: int) -> None:
        """Each part still waiting gets its rows of ``reply``."""
        if len(reply.results) != rows:
            raise RuntimeError(f"returned {len(reply.results)} results for {rows} texts")
        k = 0
        for p in parts:
            if not p.future.done():
                p.future.set_result((reply, reply.results[k : k + len(p.rows)]))
            k += len(p.rows)

    async def _call(self, task: str, parts: list[Part], send: Callable[[], Any]) -> bool:
        """One remote call for ``parts`` (``send`` makes it); each part's future gets its rows' answers
        or the error. True if it answered."""
        rows = sum(len(p.rows) for p in parts)
        self._sent(task, parts, rows)
        # One call for several requests: one span, in the first one's trace, linked to the others' task spans.
        span = tracing.begin(f"{task} call", [s for p in parts for s in p.spans], tracing.CLIENT)
        error = None
        try:
            with tracing.using(span):  # Serve sends the current span's context with the call
                pending = send()
            remote = asyncio.ensure_future(pending)
            gave_up = asyncio.gather(*(p.future for p in parts), return_exceptions=True)  # done: nobody waits
            await asyncio.wait({remote, gave_up}, timeout=self.timeout(task), return_when=asyncio.FIRST_COMPLETED)
            if not remote.done():
                remote.cancel()
                remote.add_done_callback(lambda f: f.cancelled() or f.exception())  # seen: Serve raises its own error
                if hasattr(pending, "cancel"):
                    pending.cancel()  # a Serve DeploymentResponse: stop the remote call too
                if gave_up.done():
                    self.stats.tasks[task].cancelled += 1
                    error = "cancelled: nobody waits for it"
                    return False
                raise asyncio.TimeoutError
            self._answer(parts, remote.result(), rows)
            return True
        except Exception as e:  # noqa: BLE001 - handed to every waiting part, which reports it
            error = describe(e)
            for p in parts:
                if not p.future.done():
                    p.future.set_exception(e)
            return False
        finally:
            tracing.end([span], {"nlpserve.texts": rows}, error)
