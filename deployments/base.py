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
from nlpserve.dispatch import Reply
from nlpserve.errors import EncoderMismatch, TokenizerMismatch
from nlpserve.models import SETTINGS, TaskModel, build, model_entry
from nlpserve.schemas import Task
from nlpserve.tokens import EncodedBatch, TokenBatch
from nlpserve.topology import Inputs


class TaskReplica(Configured):
    """Base of a task deployment; subclasses name their ``task``.

    The model is built by the registry (nlpserve.models) from the ``user_config`` (``backend``,
    ``model``, ...) in ``reconfigure``, which Serve calls before the replica takes requests; a
    changed model reference loads the new model in place, other settings reconfigure it (after the
    model call running, see Configured). With ``passes`` > 1 each pass has a model of its own."""

    task: Task

    def __init__(self) -> None:
        self.counts: Counter[str] = Counter()
        self.model: TaskModel | None = None
        self.models: list[TaskModel] = []  # free ones, one per pass: a model serves one call at a time
        self.loaded: tuple | None = None
        self.reads: Inputs | None = None
        self.device = torch.device("cpu")
        self.lock = asyncio.Semaphore(self.passes)

    def _configure(self, config: dict) -> None:
        settings = SETTINGS[self.task](**config)
        torch.set_num_threads(settings.torch_threads)
        if settings.load_key != self.loaded:
            # One instance per pass (spaCy is not made for threads); a reconfigure holds every pass.
            self.models = [build(self.task, settings) for _ in range(self.passes)]
            self.model = self.models[0]
            # Where it runs: spaCy and the heads stay on the CPU.
            device = choose_device(ray.get_gpu_ids())
            self.device = self.model.to(device)
            for model in self.models[1:]:
                model.to(device)
            self.loaded = settings.load_key
        else:
            for model in self.models:
                model.configure(settings)
        self.model_info = model_entry(self.model, settings, str(self.device))
        # Found as the model loads, not at the ingress's first question (the default tokenizer's spec
        # loads transformers): a new replica answers /readyz and its first request at once.
        self.reads = Inputs(self.model.spec, self.model.encoder)

    async def __call__(self, refs: list, rows: list[list[int]], encoded: list | None = None) -> Reply:
        """Results for ``rows[i]`` of the TokenBatch behind each ``refs[i]``, in order (a ref with no rows
        is not read), in a Reply with the model that made them and the time spent reading the object
        store, in the model and in all. A head gets ``encoded``: a one-element list holding the reference
        to its encoder's answer (one EncodedBatch per ref, in order), which it awaits here, so the call
        arrives before the vectors do. Several batches are joined and run through the model together. A
        cancelled call (its caller gave up) stops its model within one chunk."""
        received, start = time.time(), time.perf_counter()
        self._ready()
        used = [i for i, r in enumerate(rows) if r]
        batch, flat, vectors, got = await self._read(refs, rows, encoded, used)
        self.counts.update(calls=1, object_refs=len(used), rows=len(flat))
        async with self.lock:  # a reconfigure waits for it: one model and one set of settings per call
            model, info = self.models.pop(), self.model_info
            try:
                self._check(model, info["name"], batch, vectors)
                row_vectors = [e.row(r) for e, i in zip(vectors, used) for r in rows[i]]
                began = time.perf_counter()  # the model's time, not the wait for the one before it
                results = await self._run(model, batch, flat, row_vectors)
            finally:
                self.models.append(model)
        done = time.perf_counter()
        attributes = {"nlpserve.model": info["name"], "nlpserve.texts": len(flat)}
        span = tracing.recording(serve.get_trace_context())  # Serve's span of this call, if traced
        tracing.record("model", [span], tracing.wall(began), tracing.wall(done), attributes)
        # A head's answers also depend on the kernel that made its vectors (the result cache keys on it).
        kernels = ",".join(sorted({e.kernel for e in vectors}))
        return Reply(
            results=results,
            model={**info, "encoder": kernels} if vectors else info,
            texts=len(flat),
            received=received,
            get_ms=(got - start) * 1000,
            compute_ms=(done - began) * 1000,
            replica_ms=(time.perf_counter() - start) * 1000,
            encode_ms=vectors[0].compute_ms if vectors else None,
            encode_texts=vectors[0].texts if vectors else None,
        )

    @staticmethod
    async def _read(
        refs: list, rows: list[list[int]], encoded: list | None, used: list[int]
    ) -> tuple[TokenBatch, list[int], list[EncodedBatch], float]:
        """The used refs' TokenBatches joined (and their rows in the joined batch), when they were read,
        and for a head the encoder's answer for each, awaited after the tokens."""
        for ref in [*refs, *(encoded or [])]:
            if not isinstance(ref, ray.ObjectRef):
                raise TypeError(f"expected ObjectRefs, got {type(ref).__name__}")
        batch, flat = TokenBatch.join(await asyncio.gather(*(refs[i] for i in used)), [rows[i] for i in used])
        got = time.perf_counter()
        vectors: list[EncodedBatch] = []
        if encoded:
            answer = await encoded[0]  # the encoder's pass: here once it is done
            vectors = [answer[i] for i in used]
        return batch, flat, vectors, got

    @staticmethod
    def _check(model: TaskModel, name: str, batch: TokenBatch, vectors: list[EncodedBatch]) -> None:
        """The tokens (and, for a head, the vectors) were made for ``model``: else its model was swapped."""
        if batch.fingerprint != model.spec.fingerprint:
            raise TokenizerMismatch(f"tokens from tokenizer {batch.fingerprint}, {name} needs {model.spec.fingerprint}")
        if model.encoder is not None and (not vectors or any(e.key != model.encoder for e in vectors)):
            have = sorted({e.key for e in vectors})
            raise EncoderMismatch(f"{name} reads encoder {model.encoder}, got {have or 'none'}")

    async def _run(self, model: TaskModel, batch: TokenBatch, rows: list[int], vectors: list) -> list:
        """The model on ``rows``, off the loop (health checks answer meanwhile); a cancelled call stops it
        at its next chunk and returns once it has."""
        stop = threading.Event()
        args = (batch, rows, vectors) if model.encoder is not None else (batch, rows)
        work = asyncio.ensure_future(asyncio.to_thread(model, *args, stop=stop))
        try:
            return await asyncio.shield(work)
        except asyncio.CancelledError:  # Serve cancelled the call: its caller gave up
            stop.set()  # the model ends at its next chunk (errors.check) ...
            await asyncio.wait({work})  # ... and the lock stays held until it has
            work.exception()  # Cancelled, or whatever else ended it: seen, never logged as lost
            self.counts["cancelled"] += 1
            raise

    def inputs(self) -> Inputs:
        """What this replica's model reads: the ingress groups tasks by tokenizer and encoder."""
        self._ready()
        return self.reads

    def info(self) -> dict:
        self._ready()
        return self.model_info

    def stats(self) -> dict:
        return dict(self.counts)
