"""What the three task deployments share: resolve the nested ObjectRef, run the model."""

from __future__ import annotations

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

    async def __call__(self, refs: list, rows: list[int]) -> list:
        ref = refs[0]
        if not isinstance(ref, ray.ObjectRef):
            raise TypeError(f"expected an ObjectRef to a TokenBatch, got {type(ref).__name__}")
        self.counts.update(calls=1, object_refs=1, rows=len(rows))
        batch = await ref
        return self.model(batch, rows)

    def info(self) -> dict:
        return self.model.info()

    def stats(self) -> dict:
        return dict(self.counts)
