"""The result cache: per-task answers keyed on the text and everything that made them."""

from __future__ import annotations

import contextlib
import json
import sys
import time
from collections import Counter
from collections.abc import Callable

from cachetools import TTLCache

from nlpserve.schemas import TaskError


def _made_by(model: dict) -> str:
    """The model, its settings, device and (for a head) encoder kernel, as one key part."""
    return json.dumps(model, sort_keys=True)


class ResultCache:
    """Answers keyed on (text, task, the full description of what made the answer: model name, version,
    checksum, device, settings hash and, for a head, the encoder kernel), LRU with a TTL, bounded by the
    bytes of their texts and answers (an NER answer for a long text can be megabytes).

    ``lookup`` takes, per task, the description of what answers that task *now* (the caller asks the
    replicas), so an answer made by another model or other settings is never served, in whichever
    order they were swapped. ``latest`` remembers what answered each task last, for a first look
    before asking. Error answers are not stored.
    """

    def __init__(self, max_bytes: int, ttl_s: float, timer: Callable[[], float] = time.monotonic) -> None:
        self.entries: TTLCache = TTLCache(max_bytes, ttl_s, timer=timer, getsizeof=lambda entry: entry[2])
        self.latest: dict[str, dict] = {}  # per task, what made its latest stored answer
        self.counts: Counter[str] = Counter()

    def lookup(self, text: str, tasks: tuple[str, ...], current: dict[str, dict]) -> dict[str, tuple[object, dict]]:
        """(answer, model) of each of ``tasks`` whose answer for ``text`` by ``current[task]`` is cached."""
        found = {}
        for task in tasks:
            hit = self.entries.get((text, task, _made_by(current[task]))) if task in current else None
            self.counts["hits" if hit else "misses"] += 1
            if hit:
                found[task] = hit[:2]
        return found

    def might_hit(self, text: str, tasks: tuple[str, ...]) -> bool:
        """Whether an answer for ``text`` by what last answered one of ``tasks`` is cached (not counted)."""
        return any((text, t, _made_by(self.latest[t])) in self.entries for t in tasks if t in self.latest)

    def store(self, text: str, answers: dict[str, object], models: dict[str, dict]) -> None:
        """Remember a text's answers, per task; ``models`` says who made each (errors have none)."""
        for task, model in models.items():
            answer = answers[task]
            if not isinstance(answer, TaskError):
                self.latest[task] = model
                size = sys.getsizeof(text) + len(json.dumps(answer))
                with contextlib.suppress(ValueError):  # cachetools: an entry larger than the whole cache
                    self.entries[(text, task, _made_by(model))] = (answer, model, size)
