"""The shared encoder: one MiniLM pass per text, whose token vectors the heads (sentiment,
summary) read from the object store. Calls that arrive while a pass runs are joined into the next."""

from __future__ import annotations

import asyncio
import threading
import time
from collections import Counter

import ray
from opentelemetry.trace import Span
from ray import serve
from ray.serve import metrics

from deployments import HEALTH_CHECK_PERIOD_S
from deployments.configured import Configured
from nlpserve import tracing
from nlpserve.device import choose_device
from nlpserve.models import EncoderModel, build_encoder
from nlpserve.schemas import EncoderSettings
from nlpserve.tokens import EncodedBatch, TokenBatch
from nlpserve.topology import Inputs


class AllSet:
    """Set once every one of ``events`` is: a shared pass stops only when all its callers gave up."""

    def __init__(self, events: list[threading.Event]) -> None:
        self.events = events

    def is_set(self) -> bool:
        return all(e.is_set() for e in self.events)


@serve.deployment(
    name="Encoder",
    ray_actor_options={"num_cpus": 0.5},
    max_ongoing_requests=16,
    health_check_period_s=HEALTH_CHECK_PERIOD_S,
)
class Encoder(Configured):
    # Two passes at once (ONNX Runtime sessions take concurrent runs): a long text's pass does not hold up
    # a short one, which shares the CPU with it and ends first. The ingress sends a second call only once
    # the first has run its slow_call_s.
    passes = 2

    def __init__(self) -> None:
        self.lock = asyncio.Semaphore(self.passes)
        self.model: EncoderModel | None = None
        self.loaded: tuple | None = None
        self.counts: Counter[str] = Counter()
        self.texts = metrics.Counter("nlpserve_encoded_texts", "Texts run through the shared encoder.")
        self.pass_counter = metrics.Counter("nlpserve_encoder_passes", "Encoder passes (each over one or more calls).")

    def _configure(self, config: dict) -> None:
        settings = EncoderSettings(**config)
        if settings.load_key != self.loaded:
            model = build_encoder(settings)
            model.to(choose_device(ray.get_gpu_ids()))
            self.model, self.loaded = model, settings.load_key
        self.run.set_max_batch_size(settings.max_batch_size)

    # No wait: a lone call runs at once, and calls that arrive during a pass form the next one (the
    # ingress sends one call at a time unless several replicas serve). The size comes from EncoderSettings.
    @serve.batch(batch_wait_timeout_s=0.0, max_concurrent_batches=passes)
    async def run(self, calls: list[tuple[list[tuple[TokenBatch, list[int]]], threading.Event, Span | None]]) -> list:
        stop = AllSet([s for _, s, _ in calls])
        began = time.time_ns()
        # Off the loop, so health checks answer meanwhile.
        pairs = [pair for pairs, _, _ in calls for pair in pairs]
        async with self.lock:
            out = await asyncio.to_thread(self.model.encode, pairs, stop)
        texts = sum(len(rows) for _, rows in pairs)
        # One pass for several calls: one span, in the first call's trace, linked to the others.
        kernel = self.model.info()["kernel"]
        attributes = {"nlpserve.kernel": kernel, "nlpserve.texts": texts, "nlpserve.calls": len(calls)}
        tracing.record("model", [span for *_, span in calls], began, time.time_ns(), attributes)
        self.counts.update(passes=1, calls=len(calls), texts=texts)
        self.pass_counter.inc()
        if texts:
            self.texts.inc(texts)
        answers, k = [], 0
        for pairs, _, _ in calls:
            answers.append(out[k : k + len(pairs)])
            k += len(pairs)
        return answers

    async def __call__(self, refs: list, rows: list[list[int]]) -> list[EncodedBatch]:
        """Token vectors of ``rows[i]`` of the TokenBatch behind each ``refs[i]`` (nested, so resolved
        here), one EncodedBatch per ref. A cancelled call stops the pass it is in within one window once
        that pass's other calls are gone too."""
        self._ready()
        stop = threading.Event()
        try:
            batches = await asyncio.gather(*refs)
            return await self.run((list(zip(batches, rows)), stop, tracing.recording(serve.get_trace_context())))
        except asyncio.CancelledError:
            stop.set()
            self.counts["cancelled"] += 1
            raise

    def inputs(self) -> Inputs:
        """The tokenizer it reads and the key the heads of this encoder name."""
        self._ready()
        return Inputs(self.model.spec, self.model.key)

    def info(self) -> dict:
        self._ready()
        return self.model.info()

    def stats(self) -> dict:
        return dict(self.counts)
