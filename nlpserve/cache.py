"""The result cache: per-task answers keyed on the text and the model that made them."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable

from cachetools import TTLCache


class ResultCache:
    """Answers keyed on (text, task, model name, version, checksum), LRU with a TTL.

    Lookups use the model of each task's latest answer, so once a task's model changes its
    older answers are never served again. Error answers are not stored.
    """

    def __init__(self, size: int, ttl_s: float, timer: Callable[[], float] = time.monotonic) -> None:
        self.entries: TTLCache = TTLCache(size, ttl_s, timer=timer)
        self.latest: dict[str, dict] = {}  # per task, the model of its latest answer
        self.counts: Counter[str] = Counter()

    def _key(self, text: str, task: str) -> tuple | None:
        model = self.latest.get(task)
        return (text, task, model["name"], model["version"], model["checksum"]) if model else None

    def lookup(self, text: str, tasks: tuple[str, ...]) -> dict[str, tuple[object, dict]]:
        """(answer, model) of each of ``tasks`` whose answer for ``text`` is cached."""
        found = {}
        for task in tasks:
            key = self._key(text, task)
            hit = self.entries.get(key) if key else None
            self.counts["hits" if hit else "misses"] += 1
            if hit:
                found[task] = hit
        return found

    def store(self, text: str, result: dict) -> None:
        """Remember the answers of an /analyze result (its ``models`` say who made them)."""
        for task, model in result["models"].items():
            self.latest[task] = model
            answer = result[task]
            if not (isinstance(answer, dict) and "error" in answer):
                self.entries[self._key(text, task)] = (answer, model)
