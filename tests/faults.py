"""Deliberately broken task deployments for the degradation tests."""

import asyncio

from ray import serve

from nlpserve.dispatch import Reply
from nlpserve.pipeline import Inputs
from nlpserve.tokens import default_spec


@serve.deployment(name="BrokenNER", ray_actor_options={"num_cpus": 0}, graceful_shutdown_timeout_s=1)
class BrokenNER:
    async def __call__(self, refs: list, rows: list[list[int]], encoded: list | None = None) -> Reply:
        await refs[0]
        raise RuntimeError("NER model crashed")

    def info(self) -> dict:
        return {"name": "broken", "version": "0", "checksum": "0"}

    def inputs(self) -> Inputs:
        return Inputs(default_spec())


@serve.deployment(name="StuckSummary", ray_actor_options={"num_cpus": 0}, graceful_shutdown_timeout_s=1)
class StuckSummary:
    async def __call__(self, refs: list, rows: list[list[int]], encoded: list | None = None) -> Reply:
        await asyncio.sleep(300)
        raise AssertionError("a stuck task never answers")

    def info(self) -> dict:
        return {"name": "stuck", "version": "0", "checksum": "0"}

    def inputs(self) -> Inputs:
        return Inputs(default_spec())
