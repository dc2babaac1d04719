"""What every model replica shares: configured by Serve's user_config, unhealthy while that failed."""

from __future__ import annotations

from nlpserve.errors import describe


class Configured:
    """A replica configured by Serve's ``user_config`` (``_configure``) whose health check fails while
    its last reconfigure has failed, so Serve replaces it. One bound without a user_config (Serve then
    never calls ``reconfigure``) configures itself with the defaults on its first call (``_ready``)."""

    model: object | None = None
    failure: str | None = None  # why the last reconfigure failed, until one succeeds

    def _configure(self, config: dict) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    def reconfigure(self, config: dict) -> None:
        try:
            self._configure(config)
        except Exception as e:
            self.failure = f"reconfigure failed: {describe(e)}"
            raise
        self.failure = None

    def _ready(self) -> None:
        if self.model is None:
            self.reconfigure({})

    def check_health(self) -> None:
        """Serve's periodic check; cheap, no model call."""
        if self.failure:
            raise RuntimeError(self.failure)
