"""Request limits, checked before a request joins a batch: a refusal costs only that request's own
work, and a batch only ever holds requests within their limits, counted on their own texts and tasks."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from nlpserve.tokens import Tokenizer

# The most tokens one character can make: byte-level BPE makes one per UTF-8 byte. A request whose
# characters times this fit every token limit needs no counting.
TOKENS_PER_CHAR = 4


class Refused(Exception):
    """A request over a limit: answered 413 with this message."""


@dataclass(frozen=True)
class Limits:
    max_text_chars: int
    max_request_chars: int
    max_text_tokens: int
    max_request_tokens: int

    def check_chars(self, texts: Sequence[str], labels: Sequence[str]) -> None:
        """Refuses a text or a request over its character limit: nothing is tokenized."""
        for text, label in zip(texts, labels):
            if len(text) > self.max_text_chars:
                raise Refused(f"{label} is {len(text)} characters; the limit is {self.max_text_chars}")
        total = sum(map(len, texts))
        if total > self.max_request_chars:
            raise Refused(f"the request is {total} characters; the limit is {self.max_request_chars}")

    def needs_counting(self, texts: Sequence[str]) -> bool:
        """Whether the request could pass a token limit (else it cannot, whatever its tokenizers)."""
        return self.has_long_text(texts) or sum(map(len, texts)) * TOKENS_PER_CHAR > self.max_request_tokens

    def has_long_text(self, texts: Sequence[str]) -> bool:
        """Whether a text could pass max_text_tokens: one that may take its models seconds."""
        return max(map(len, texts)) * TOKENS_PER_CHAR > self.max_text_tokens

    def check_tokens(self, texts: Sequence[str], labels: Sequence[str], tokenizers: Sequence[Tokenizer]) -> None:
        """Refuses a text or the request over a token limit of one of ``tokenizers`` (the groups its tasks
        read), counting text by text and stopping at the first limit passed; nothing is stored.
        Blocking: run it in a thread."""
        for tokenizer in tokenizers:
            total = 0
            for text, label in zip(texts, labels):
                n = tokenizer.count(text)
                if n > self.max_text_tokens:
                    raise Refused(f"{label} is {n} tokens; the limit is {self.max_text_tokens} (max_text_tokens)")
                total += n
                if total > self.max_request_tokens:
                    raise Refused(
                        f"the request is over {self.max_request_tokens} tokens (max_request_tokens) at {label}"
                    )
