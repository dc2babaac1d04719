"""What the three task deployments share: load the configured model, resolve the nested
ObjectRefs, check they were tokenized (and encoded) for this model, run the model off the event loop."""

from __future__ import annotations

import asyncio
import threading
import time
from collections import Counter

import ray
import torch
from ray import serve

from deployments.configured import Configured
from nlpserve import tracing
from nlpserve.device import choose_device
from nlpserve.errors import EncoderMismatch, TokenizerMismatch
from nlpserve.models import SETTINGS, TaskModel, build
from nlpserve.pipeline import Inputs
from nlpserve.schemas import Task
from nlpserve.tokens import EncodedBatch, TokenBatch


class TaskReplica(Configured):
    """Base of a task deployment; subclasses name their ``task``.

    The model is built by the registry (nlpserve.models) from the ``user_config`` (``backend``,
    ``model``, ...) in ``reconfigure``, which Serve calls before the replica takes requests; a
    changed model reference loads the new model in place, other settings reconfigure it."""

    task: Task

    def __init__(self) -> None:
        self.counts: Counter[str] = Counter()
        self.model: TaskModel | None = None
        self.loaded: tuple | None = None
        self.device = torch.device("cpu")
        self.lock = asyncio.Lock()  # one model call at a time: spaCy and torch modules are not made for threads

    def _configure(self, config: dict) -> None:
        settings = SETTINGS[self.task](**config)
        torch.set_num_threads(settings.torch_threads)
        if settings.load_key != self.loaded:
            self.model = build(self.task, settings)
            # Where it runs: spaCy and the heads stay on the CPU.
            self.device = self.model.to(choose_device(ray.get_gpu_ids()))
            self.loaded = settings.load_key
        else:
            self.model.configure(settings)
        self.model_info = {**self.model.info(), "device": str(self.device), "settings": settings.answer_hash}

    async def __call__(self, refs: list, rows: list[list[int]], *encoded: EncodedBatch) -> dict:
        """Results for ``rows[i]`` of the TokenBatch behind each ``refs[i]``, in order, the model
        that made them, and how long the object store reads (``get_ms``), the shared encoder's pass
        (``encode_ms``, for heads) and the model (``compute_ms``) took. ``encoded[i]`` (heads only,
        resolved by Serve from the encoder's response) holds the vectors of ``rows[i]``. Several
        batches are joined and run through the model together. A cancelled call (its caller gave up)
        stops its model within one chunk."""
        self._ready()
        for ref in refs:
            if not isinstance(ref, ray.ObjectRef):
                raise TypeError(f"expected ObjectRefs to TokenBatches, got {type(ref).__name__}")
        start = time.perf_counter()
        batches = await asyncio.gather(*refs)
        got = time.perf_counter()
        for batch in batches:
            if batch.fingerprint != self.model.spec.fingerprint:
                raise TokenizerMismatch(
                    f"tokens from tokenizer {batch.fingerprint}, {self.model_info['name']} needs "
                    f"{self.model.spec.fingerprint}"
                )
        batch, flat = TokenBatch.join(batches, rows)
        args = (batch, flat)
        if self.model.encoder is not None:
            if len(encoded) != len(refs) or any(e.key != self.model.encoder for e in encoded):
                have = sorted({e.key for e in encoded})
                raise EncoderMismatch(f"{self.model_info['name']} reads encoder {self.model.encoder}, got {have}")
            args += ([e.row(r) for e, rs in zip(encoded, rows) for r in rs],)
        self.counts.update(calls=1, object_refs=len(refs), rows=len(flat))
        stop = threading.Event()
        async with self.lock:
            began = time.perf_counter()  # the model's time, not the wait for the one before it
            # Off the loop, so health checks answer meanwhile.
            work = asyncio.ensure_future(asyncio.to_thread(self.model, *args, stop=stop))
            try:
                results = await asyncio.shield(work)
            except asyncio.CancelledError:  # Serve cancelled the call: its caller gave up
                stop.set()  # the model ends at its next chunk (errors.check) ...
                await asyncio.wait({work})  # ... and the lock stays held until it has
                work.exception()  # Cancelled, or whatever else ended it: seen, never logged as lost
                self.counts["cancelled"] += 1
                raise
        done = time.perf_counter()
        attributes = {"nlpserve.model": self.model_info["name"], "nlpserve.texts": len(flat)}
        span = tracing.recording(serve.get_trace_context())  # Serve's span of this call, if traced
        tracing.record("model", [span], tracing.wall(began), tracing.wall(done), attributes)
        # A head's answers also depend on the kernel that made its vectors (the result cache keys on it).
        kernels = ",".join(sorted({e.kernel for e in encoded}))
        return {
            "results": results,
            "model": {**self.model_info, "encoder": kernels} if encoded else self.model_info,
            "get_ms": (got - start) * 1000,
            "encode_ms": sum(e.compute_ms for e in encoded) if encoded else None,
            "compute_ms": (done - began) * 1000,
        }

    def inputs(self) -> Inputs:
        """What this replica's model reads: the ingress groups tasks by tokenizer and encoder."""
        self._ready()
        return Inputs(self.model.spec, self.model.encoder)

    def info(self) -> dict:
        self._ready()
        return self.model_info

    def stats(self) -> dict:
        return dict(self.counts)
