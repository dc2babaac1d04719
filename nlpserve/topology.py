"""What each task and encoder reads, asked of them: the tokenizer groups a batch is tokenized in, the
encoder each head reads, and what keeps the service from being ready. The ingress and the pipeline ask
this one object; nothing else keeps these facts."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable, MutableMapping, Sequence
from dataclasses import dataclass

from nlpserve.dispatch import detached
from nlpserve.errors import describe
from nlpserve.tokens import Tokenizer, TokenizerSpec


@dataclass(frozen=True)
class Inputs:
    """What a task reads: tokens of ``tokenizer`` and, for a head, the vectors of the shared encoder
    whose key is ``encoder``. An encoder answers with its own tokenizer and key."""

    tokenizer: TokenizerSpec
    encoder: str | None = None


# Asks each task and encoder what it reads: {name: Inputs}, or {name: exception} where it cannot say.
InputsCall = Callable[[], Awaitable[dict[str, "Inputs | BaseException"]]]


@dataclass
class Group:
    """Tasks whose tokenizers have the same fingerprint, and the one tokenizer they share."""

    tokenizer: Tokenizer
    tasks: list[str]


class Topology:
    """The tasks and encoders as their last answers to ``inputs`` describe them.

    Tasks are grouped by the fingerprint of the tokenizer each needs; a head (a task that reads an
    encoder's vectors) is joined to the encoder deployment that serves that encoder's key. The groups
    are asked for before the first batch and again after a task said its model changed (``mismatch``);
    a task that cannot answer keeps its last known answer and is asked again in the background, so it
    never holds up the batches of the others."""

    def __init__(
        self,
        ask: InputsCall,
        tasks: Iterable[str],
        encoders: Iterable[str] = (),
        cache: Callable[[], MutableMapping | None] = lambda: None,
    ) -> None:
        self.ask = ask
        self.tasks = list(tasks)
        self.encoders = list(encoders)
        self.cache = cache
        self.groups: dict[str, Group] = {}
        self.encoder_of: dict[str, str] = {}  # head task -> the encoder deployment whose vectors it reads
        self.unknown: dict[str, str] = {}  # task -> why its tokenizer or encoder is not known
        self.known: dict[str, Inputs] = {}  # the last answer of every task and encoder that gave one
        self.last: dict[str, Inputs | BaseException] = {}  # the last round's answers, for readiness
        self.refreshes = 0
        self.stale = True
        self.changed = False  # a task's model changed: the next batch waits for new groups
        self.refreshing: asyncio.Future | None = None

    def mismatch(self) -> None:
        """A task's model changed (it refused tokens or vectors): ask again before the next batch."""
        self.stale = self.changed = True

    def set_cache(self, cache: Callable[[], MutableMapping | None]) -> None:
        """New token caches (one per group) from ``cache()``, now and for groups formed later."""
        self.cache = cache
        for g in self.groups.values():
            g.tokenizer.cache = cache()

    async def refresh(self) -> None:
        """Ask the tasks and encoders what they read and regroup; a known tokenizer keeps its cache.
        One that cannot answer now keeps its last known answer (it may be busy), and is asked again."""
        self.changed = False  # a mismatch from now on asks again
        self.last = answers = await self.ask()
        failed = {name for name, a in answers.items() if isinstance(a, BaseException)}
        self.known.update((name, a) for name, a in answers.items() if name not in failed)
        answers = {name: self.known.get(name, a) for name, a in answers.items()}
        old = {fp: g.tokenizer for fp, g in self.groups.items()}
        groups: dict[str, Group] = {}
        self.unknown = {}
        self.encoder_of = {}
        serving = {a.encoder: e for e, a in answers.items() if e in self.encoders and isinstance(a, Inputs)}
        for task in self.tasks:
            read = answers.get(task, KeyError("did not answer"))
            if isinstance(read, BaseException):
                self.unknown[task] = describe(read)
                continue
            if read.encoder is not None:
                if read.encoder not in serving:
                    self.unknown[task] = f"no encoder deployment serves encoder {read.encoder}"
                    continue
                self.encoder_of[task] = serving[read.encoder]
            fp = read.tokenizer.fingerprint
            if fp not in groups:
                groups[fp] = Group(old.get(fp) or Tokenizer(read.tokenizer, self.cache()), [])
            groups[fp].tasks.append(task)
        self.groups = groups
        self.stale = bool(failed)  # ask again, in the background, those that did not say
        self.refreshes += 1

    async def current(self) -> dict[str, Group]:
        """The groups to tokenize with. The first time, and after a mismatch, the caller waits for a
        round of answers; otherwise it gets the last known groups and stale ones are refreshed in the
        background."""
        if not self.refreshes or self.changed:
            await asyncio.shield(self._round())
        elif self.stale:
            self._round()
        return self.groups

    def _round(self) -> asyncio.Future:
        """The round of inputs() in flight, or a new one: callers share it, so rounds never stack
        behind a task that does not answer."""
        if self.refreshing is None or self.refreshing.done():
            self.refreshing = detached(self.refresh())
        return self.refreshing

    async def fresh(self) -> None:
        """Groups from a round of answers that is not stale (the round in flight, or a new one)."""
        if self.stale:
            await asyncio.shield(self._round())

    async def tokenizers(self, tasks: Sequence[str]) -> list[Tokenizer]:
        """The tokenizers of the groups that ``tasks`` read, as the next batch will use them."""
        groups = await self.current()
        return [g.tokenizer for g in groups.values() if not set(tasks).isdisjoint(g.tasks)]

    def tokenizer_counts(self) -> Counter[str]:
        """Tokenizations and token cache hits and misses, summed over the tokenizer groups."""
        return sum((g.tokenizer.counts for g in self.groups.values()), Counter())

    def group_info(self) -> list[dict]:
        return [
            {
                "fingerprint": fp,
                "name": g.tokenizer.spec.name,
                "tasks": g.tasks,
                "tokenizations": g.tokenizer.counts["calls"],
            }
            for fp, g in self.groups.items()
        ]

    def unavailable(self, task: str) -> str:
        """Why ``task`` is in no tokenizer group."""
        return self.unknown.get(task, "not in any tokenizer group")

    def unready(self) -> dict[str, str]:
        """What keeps the service from being ready, {task or encoder: why}; empty when it is ready: every
        task and encoder said what it reads in the last round and every task is in a tokenizer group.
        Errors are named by type only: any Host may ask (/version has more)."""
        if not self.refreshes:
            return {"inputs": "not asked yet"}
        why = {
            # Ray wraps what a replica raised: its cause is the error to name.
            name: f"did not say what it reads ({type(getattr(answer, 'cause', None) or answer).__name__})"
            for name, answer in self.last.items()
            if isinstance(answer, BaseException)
        }
        for task, reason in self.unknown.items():  # e.g. a head whose encoder no deployment serves
            why.setdefault(task, reason)
        return why

    def reads(self, tasks: Iterable[str]) -> set[str]:
        """The deployments ``tasks`` read from: the tasks and the encoders of the heads among them."""
        return {*tasks, *(self.encoder_of[t] for t in tasks if t in self.encoder_of)}

    def answering(self, task: str, infos: dict) -> dict | BaseException | None:
        """What answers ``task`` now, as its answers' ``models`` say, from the deployments' ``info()``
        answers: the model, its settings and device, and for a head the kernel of the encoder it reads;
        the exception that stopped an ``info()`` it needs; None if one is missing."""
        info, encoder = infos.get(task), self.encoder_of.get(task)
        if encoder is None or not isinstance(info, dict):
            return info
        kernel = infos.get(encoder)
        return {**info, "encoder": kernel["kernel"]} if isinstance(kernel, dict) else kernel
