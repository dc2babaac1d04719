"""Cancellation between the chunks of a model call: the caller's Stop token, and what a call raises
when it sees it set."""

from typing import Protocol


class Stop(Protocol):
    """Set when a model call's caller has given up (a threading.Event): the call ends at its next chunk."""

    def is_set(self) -> bool: ...


class Cancelled(RuntimeError):
    """A model call stopped between two chunks (windows, sub-batches) because its caller gave up."""


def check(stop: Stop | None) -> None:
    """Between two chunks of a model call: raise Cancelled if its caller has given up."""
    if stop is not None and stop.is_set():
        raise Cancelled("stopped between chunks: the caller gave up")
