"""What every model replica shares: configured by Serve's user_config, unhealthy while that failed."""

from __future__ import annotations

import asyncio
import contextlib

from nlpserve.errors import describe


class Configured:
    """A replica configured by Serve's ``user_config`` (``_configure``) whose health check fails while
    its last reconfigure has failed, so Serve replaces it. One bound without a user_config (Serve then
    never calls ``reconfigure``) configures itself with the defaults on its first call (``_ready``).
    A reconfigure waits for the model calls running (``lock``, one of its ``passes`` slots held around
    every model call), and the next call waits for it: a call's answers are made, and labelled, by one
    model with one set of settings."""

    model: object | None = None
    failure: str | None = None  # why the last reconfigure failed, until one succeeds
    passes = 1  # model calls at once
    lock: asyncio.Semaphore  # ``passes`` slots: one held around each model call, all around a reconfigure

    def _configure(self, config: dict) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    async def reconfigure(self, config: dict) -> None:
        async with contextlib.AsyncExitStack() as held:
            for _ in range(self.passes):  # every slot: never under a running model call
                await held.enter_async_context(self.lock)
            await asyncio.to_thread(self.apply, config)  # a model load: off the loop, health checks go on

    def apply(self, config: dict) -> None:
        """Configure now; a failure is kept for the health check."""
        try:
            self._configure(config)
        except Exception as e:
            self.failure = f"reconfigure failed: {describe(e)}"
            raise
        self.failure = None

    def _ready(self) -> None:
        if self.model is None:
            self.apply({})

    def check_health(self) -> None:
        """Serve's periodic check; cheap, no model call."""
        if self.failure:
            raise RuntimeError(self.failure)
