"""What the three task deployments share: resolve the nested ObjectRef, run the model."""

from __future__ import annotations

import time
from collections import Counter

import ray
import torch

from nlpserve.schemas import TaskSettings


class TaskReplica:
    """Base of a task deployment; subclasses set ``settings`` and implement ``load``/``apply``."""

    settings: type[TaskSettings] = TaskSettings

    def __init__(self) -> None:
        self.counts: Counter[str] = Counter()
        self.model = self.load()
        self.reconfigure({})

    def load(self):  # pragma: no cover - abstract
        raise NotImplementedError

    def apply(self, settings: TaskSettings) -> None:
        """Push task-specific settings to the model."""

    def reconfigure(self, config: dict) -> None:
        settings = self.settings(**config)
        torch.set_num_threads(settings.torch_threads)
        self.apply(settings)
        self.model_info = self.model.info()

    async def __call__(self, refs: list, rows: list[int]) -> dict:
        """Results for ``rows`` of the TokenBatch behind ``refs[0]``, the model that made them,
        and how long the object store read (``get_ms``) and the model (``compute_ms``) took."""
        ref = refs[0]
        if not isinstance(ref, ray.ObjectRef):
            raise TypeError(f"expected an ObjectRef to a TokenBatch, got {type(ref).__name__}")
        self.counts.update(calls=1, object_refs=1, rows=len(rows))
        start = time.perf_counter()
        batch = await ref
        got = time.perf_counter()
        results = self.model(batch, rows)
        done = time.perf_counter()
        return {
            "results": results,
            "model": self.model_info,
            "get_ms": (got - start) * 1000,
            "compute_ms": (done - got) * 1000,
        }

    def info(self) -> dict:
        return self.model_info

    def stats(self) -> dict:
        return dict(self.counts)
