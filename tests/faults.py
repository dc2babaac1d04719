"""Deliberately broken or slow task deployments for the degradation tests."""

import asyncio
import time

from ray import serve

from nlpserve.dispatch import Reply
from nlpserve.tokens import default_spec
from nlpserve.topology import Inputs


class Reads:
    """What a stand-in reads, found as it starts, as a real task replica finds it when its model loads."""

    def __init__(self) -> None:
        self.reads = Inputs(default_spec())

    def inputs(self) -> Inputs:
        return self.reads


@serve.deployment(name="BrokenNER", ray_actor_options={"num_cpus": 0}, graceful_shutdown_timeout_s=1)
class BrokenNER(Reads):
    async def __call__(self, refs: list, rows: list[list[int]], encoded: list | None = None) -> Reply:
        await refs[0]
        raise RuntimeError("NER model crashed")

    def info(self) -> dict:
        return {"name": "broken", "version": "0", "checksum": "0"}


@serve.deployment(name="StuckSummary", ray_actor_options={"num_cpus": 0}, graceful_shutdown_timeout_s=1)
class StuckSummary(Reads):
    async def __call__(self, refs: list, rows: list[list[int]], encoded: list | None = None) -> Reply:
        await asyncio.sleep(300)
        raise AssertionError("a stuck task never answers")

    def info(self) -> dict:
        return {"name": "stuck", "version": "0", "checksum": "0"}


@serve.deployment(name="SlowNER", ray_actor_options={"num_cpus": 0}, graceful_shutdown_timeout_s=1)
class SlowNER(Reads):
    """Takes 1 s a call, finds no entities, and remembers how many texts each call held."""

    def __init__(self) -> None:
        super().__init__()
        self.texts: list[int] = []

    async def __call__(self, refs: list, rows: list[list[int]], encoded: list | None = None) -> Reply:
        n = sum(map(len, rows))
        self.texts.append(n)
        await asyncio.sleep(1)
        return Reply([[] for _ in range(n)], self.info(), n, time.time(), 0.0, 1000.0, 1000.0)

    def calls(self) -> list[int]:
        return self.texts

    def info(self) -> dict:
        return {"name": "slow", "version": "0", "checksum": "0"}


def cache_app(args: dict):
    """The real Ingress, Summary and Encoder (NER and Sentiment broken), for a deploy by config
    (tests/test_serve.py): a change of Summary's user_config alone then reconfigures its replica in
    place and leaves the ingress, and its result cache, as they were."""
    from deployments.encoder import Encoder
    from deployments.ingress import Ingress
    from deployments.summary import Summary

    small = {"ray_actor_options": {"num_cpus": 0.05}}
    return Ingress.options(**small).bind(
        BrokenNER.options(name="CacheNER").bind(),
        BrokenNER.options(name="CacheSentiment").bind(),
        Summary.options(**small).bind(),
        Encoder.options(user_config={}, **small).bind(),
    )
