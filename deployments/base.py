"""What the three task deployments share: load the configured model, resolve the nested
ObjectRef, check it was tokenized for this model, run the model."""

from __future__ import annotations

import asyncio
import time
from collections import Counter

import ray
import torch

from nlpserve.device import choose_device
from nlpserve.pipeline import TokenizerMismatch
from nlpserve.schemas import TaskSettings
from nlpserve.tokens import TokenBatch, TokenizerSpec


class TaskReplica:
    """Base of a task deployment; subclasses set ``settings`` and implement ``load``/``apply``.

    The model is chosen by the ``user_config`` (``backend``, ``model``) and loaded in
    ``reconfigure``, which Serve calls before the replica takes requests; a changed model
    reference loads the new model in place."""

    settings: type[TaskSettings] = TaskSettings

    def __init__(self) -> None:
        self.counts: Counter[str] = Counter()
        self.model = None
        self.loaded: tuple | None = None
        self.device = torch.device("cpu")

    def load(self, settings: TaskSettings):  # pragma: no cover - abstract
        """The model object: ``__call__(batch, rows)``, ``info()`` and ``spec`` (its TokenizerSpec)."""
        raise NotImplementedError

    def apply(self, settings: TaskSettings) -> None:
        """Push settings that need no reload to the model."""

    def reconfigure(self, config: dict) -> None:
        settings = self.settings(**config)
        torch.set_num_threads(settings.torch_threads)
        if settings.load_key != self.loaded:
            self.model = self.load(settings)
            self.loaded = settings.load_key
            if hasattr(self.model, "to"):  # spaCy NER stays on the CPU
                self.device = choose_device()
                self.model.to(self.device)
        self.apply(settings)
        self.model_info = {**self.model.info(), "device": str(self.device)}

    def _ready(self) -> None:
        if self.model is None:  # bound without a user_config: Serve never calls reconfigure
            self.reconfigure({})

    async def __call__(self, refs: list, rows: list[list[int]]) -> dict:
        """Results for ``rows[i]`` of the TokenBatch behind each ``refs[i]``, in order, the model
        that made them, and how long the object store reads (``get_ms``) and the model
        (``compute_ms``) took. Several batches are joined and run through the model together."""
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
        self.counts.update(calls=1, object_refs=len(refs), rows=len(flat))
        results = self.model(batch, flat)
        done = time.perf_counter()
        return {
            "results": results,
            "model": self.model_info,
            "get_ms": (got - start) * 1000,
            "compute_ms": (done - got) * 1000,
        }

    def tokenizer(self) -> TokenizerSpec:
        """The tokenizer this replica's model needs; the ingress groups tasks by its fingerprint."""
        self._ready()
        return self.model.spec

    def info(self) -> dict:
        self._ready()
        return self.model_info

    def stats(self) -> dict:
        return dict(self.counts)
