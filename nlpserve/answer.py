"""One text's answer, built in one place: each task's answer (or TaskError), the model that made it,
and the timings, sent as the JSON of schemas.AnalyzeResponse."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from nlpserve.schemas import TaskError, TaskTiming


@dataclass
class Answer:
    batch: dict[str, Any]  # the batch it ran in (schemas.Timings: batch_size, queue_ms, tokenize_ms, put_ms...)
    tasks: dict[str, Any] = field(default_factory=dict)  # task -> its answer, or a TaskError
    models: dict[str, dict] = field(default_factory=dict)  # task -> the model that answered it
    timings: dict[str, TaskTiming] = field(default_factory=dict)  # task -> its call's timings
    cached: list[str] = field(default_factory=list)  # tasks answered from the result cache

    @classmethod
    def unbatched(cls, queue_ms: float = 0.0) -> Answer:
        """No batch ran it: answered from the cache, or out of time before its batch started."""
        return cls({"batch_size": 0, "queue_ms": queue_ms, "tokenize_ms": 0.0, "put_ms": 0.0})

    def add(self, task: str, answer: Any, model: dict | None = None, timing: TaskTiming | None = None) -> None:
        """A task's answer (an error has no model) and, when a call of this batch made it, its timings."""
        self.tasks[task] = answer
        if model:
            self.models[task] = model
        if timing is not None:
            self.timings[task] = timing

    def add_cached(self, task: str, answer: Any, model: dict) -> None:
        self.add(task, answer, model)
        self.cached.append(task)

    def json(self, ingress_ms: float | None = None) -> dict:
        calls = {t: x.model_dump(exclude_none=True) for t, x in self.timings.items()}
        timings = {**self.batch, "tasks": calls, "cached": sorted(self.cached)}
        if ingress_ms is not None:
            timings["ingress_ms"] = ingress_ms
        tasks = {t: a.model_dump(mode="json") if isinstance(a, TaskError) else a for t, a in self.tasks.items()}
        return {**tasks, "models": self.models, "timings": timings}
