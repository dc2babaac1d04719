"""Request limits before a request joins a batch: characters first, then tokens of its own groups only."""

from __future__ import annotations

import pytest

from nlpserve.admission import TOKENS_PER_CHAR, Limits, Refused
from nlpserve.tokens import Tokenizer

LIMITS = Limits(max_text_chars=100, max_request_chars=150, max_text_tokens=10, max_request_tokens=12)


class Counting:
    """A tokenizer stand-in whose count is fixed per text, and which notes what it was asked."""

    def __init__(self, counts: dict[str, int]) -> None:
        self.counts, self.asked = counts, []

    def count(self, text: str) -> int:
        self.asked.append(text)
        return self.counts[text]


def test_characters_are_refused_per_text_then_per_request():
    with pytest.raises(Refused, match=r"^texts\[1\] is 101 characters; the limit is 100$"):
        LIMITS.check_chars(["a", "b" * 101], ["texts[0]", "texts[1]"])
    with pytest.raises(Refused, match=r"^the request is 160 characters; the limit is 150$"):
        LIMITS.check_chars(["a" * 80, "b" * 80], ["texts[0]", "texts[1]"])
    LIMITS.check_chars(["a" * 75, "b" * 75], ["texts[0]", "texts[1]"])


def test_only_texts_that_could_pass_a_token_limit_are_counted():
    assert not LIMITS.needs_counting(["a"])  # 4 tokens at most, for any tokenizer
    assert LIMITS.needs_counting(["a" * 3])  # could be 12 tokens: over max_text_tokens
    assert LIMITS.needs_counting(["a" * 2, "b" * 2])  # could be 16 in all: over max_request_tokens
    # Only the first holds a long text (one that gets calls of its own): many short ones are not one.
    assert LIMITS.has_long_text(["a", "a" * 3]) and not LIMITS.has_long_text(["a" * 2, "b" * 2])
    # A real tokenizer never makes more tokens than TOKENS_PER_CHAR per character.
    hostile = "\U0001f600é,!" * 50
    assert Tokenizer().count(hostile) <= TOKENS_PER_CHAR * len(hostile)


def test_tokens_are_counted_with_a_real_tokenizer_and_named_in_the_refusal():
    tokenizer = Tokenizer()
    with pytest.raises(Refused, match=r"^text is 11 tokens; the limit is 10 \(max_text_tokens\)$"):
        LIMITS.check_tokens(["a " * 11], ["text"], [tokenizer])
    with pytest.raises(Refused, match=r"^the request is over 12 tokens \(max_request_tokens\) at texts\[1\]$"):
        LIMITS.check_tokens(["b " * 7, "c " * 7], ["texts[0]", "texts[1]"], [tokenizer])
    LIMITS.check_tokens(["b " * 6, "c " * 6], ["texts[0]", "texts[1]"], [tokenizer])
    assert tokenizer.counts["calls"] == 0  # counting tokenizes nothing for the batches, caches nothing


def test_counting_stops_at_the_first_limit_and_reads_every_group_asked_for():
    first = Counting({"x": 5, "y": 11, "z": 1})
    with pytest.raises(Refused, match="texts.1. is 11 tokens"):
        LIMITS.check_tokens(["x", "y", "z"], ["texts[0]", "texts[1]", "texts[2]"], [first])
    assert first.asked == ["x", "y"]  # z was never tokenized
    # A request within one group's limits but over another's is refused by that other group.
    wide, narrow = Counting({"x": 3}), Counting({"x": 13})
    with pytest.raises(Refused, match="text is 13 tokens"):
        LIMITS.check_tokens(["x"], ["text"], [wide, narrow])
    LIMITS.check_tokens(["x"], ["text"], [wide])  # the group of the tasks it asked for only: admitted
