"""Run one batch through a Ray-free Pipeline, as the ingress does: start it, then finish each item."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from nlpserve.pipeline import Item, Pipeline


async def run_batch(pipe: Pipeline, items: Sequence[Item]) -> list[dict]:
    """One answer's JSON per item: a key per task it asked for, ``models`` and ``timings``."""
    return [a.json() for a in await asyncio.gather(*(pipe.finish(p) for p in await pipe.start(items)))]
