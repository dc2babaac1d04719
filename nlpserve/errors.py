"""Typed errors that cross the graph: raised in a task replica, caught by type in the ingress."""


class TokenizerMismatch(RuntimeError):
    """A task got tokens from a tokenizer other than its own (its model was swapped)."""


class EncoderMismatch(RuntimeError):
    """A head got vectors from an encoder other than the one it reads (a model was swapped)."""


def describe(error: BaseException) -> str:
    """One line for an error: its type and the first line of its message (of its cause, for Ray's
    wrapped task errors), at most 300 characters."""
    cause = getattr(error, "cause", None) or error
    message = str(cause).strip().splitlines()
    return f"{type(cause).__name__}: {message[0][:300]}" if message else type(cause).__name__
