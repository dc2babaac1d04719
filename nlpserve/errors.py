"""Typed errors that cross the graph: raised in a task replica, caught by type in the ingress."""


class TokenizerMismatch(RuntimeError):
    """A task got tokens from a tokenizer other than its own (its model was swapped)."""


class EncoderMismatch(RuntimeError):
    """A head got vectors from an encoder other than the one it reads (a model was swapped)."""
