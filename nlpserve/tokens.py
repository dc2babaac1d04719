"""Shared tokenization: one fast-tokenizer call per batch, stored as flat numpy arrays."""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import sys
import time
from collections import Counter
from collections.abc import Callable, MutableMapping
from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np
import tokenizers
from cachetools import TTLCache

from nlpserve.resources import minilm_dir


@dataclass(frozen=True)
class TokenizerSpec:
    """What the ingress needs to tokenize for a task: the fast tokenizer itself (its
    ``tokenizer.json``), its pad id, and a fingerprint that decides tokenizer groups."""

    name: str
    json: str
    pad_id: int
    fingerprint: str

    @classmethod
    def of(cls, hf, name: str) -> TokenizerSpec:
        """The spec of a Hugging Face fast tokenizer.

        The fingerprint hashes everything that changes the ids: vocabulary and merges,
        normalizer, pre-tokenizer, post-processor (special tokens), added tokens, and the
        truncation side and maximum length. Two tokenizers share a group only when all of it
        matches, whatever their class or model family."""
        if not hasattr(hf, "backend_tokenizer"):
            raise ValueError(f"{name}: a fast tokenizer (tokenizer.json) is required")
        text = hf.backend_tokenizer.to_str()
        content = json.loads(text)
        for key in ("truncation", "padding"):  # how a caller pads or cuts, not how it tokenizes
            content.pop(key, None)
        content["truncation_side"] = hf.truncation_side
        content["model_max_length"] = hf.model_max_length
        content["special_tokens"] = hf.special_tokens_map
        digest = hashlib.sha256(json.dumps(content, sort_keys=True).encode()).hexdigest()[:16]
        return cls(name=name, json=text, pad_id=hf.pad_token_id or 0, fingerprint=digest)


@functools.cache
def default_spec() -> TokenizerSpec:
    """The tokenizer of the default model pack (bert-base-uncased WordPiece of all-MiniLM-L6-v2)."""
    # Imported here: transformers imports torch, which the ingress (it tokenizes from the spec's JSON with
    # the tokenizers library) never needs; its replicas start ~3 s of CPU sooner.
    from transformers import AutoTokenizer

    return TokenizerSpec.of(AutoTokenizer.from_pretrained(minilm_dir()), "all-MiniLM-L6-v2")


@dataclass
class TokenBatch:
    """Tokens of a batch of texts, ragged and without special tokens.

    Text ``i`` owns tokens ``splits[i]:splits[i + 1]`` of the flat arrays. Keeping the
    arrays flat (not padded) lets each task window and pad only what it needs, and
    numpy arrays are read zero-copy from Ray's object store. ``prefix`` and ``suffix``
    are the special tokens the tokenizer puts around one sequence.
    """

    texts: list[str]
    ids: np.ndarray  # int32 [N]
    offsets: np.ndarray  # int32 [N, 2] character span of each token in its text
    word_ids: np.ndarray  # int32 [N] pre-tokenizer word index within its text
    splits: np.ndarray  # int64 [B + 1]
    prefix: tuple[int, ...]
    suffix: tuple[int, ...]
    pad_id: int
    fingerprint: str = ""  # of the tokenizer that made it
    tokenized: int = 0  # texts actually run through the tokenizer for this batch (the rest were cached)

    def __len__(self) -> int:
        return len(self.texts)

    def span(self, i: int) -> slice:
        return slice(int(self.splits[i]), int(self.splits[i + 1]))

    @staticmethod
    def join(batches: list[TokenBatch], rows: list[list[int]]) -> tuple[TokenBatch, list[int]]:
        """One TokenBatch of several made by the same tokenizer, and ``rows`` (one list per batch)
        numbered in it."""
        if len(batches) == 1:
            return batches[0], list(rows[0])
        first, bases, tokens = batches[0], [0], [0]
        for b in batches:
            if b.fingerprint != first.fingerprint:
                raise ValueError("cannot join batches of different tokenizers")
            bases.append(bases[-1] + len(b))
            tokens.append(tokens[-1] + int(b.splits[-1]))
        joined = TokenBatch(
            texts=[t for b in batches for t in b.texts],
            ids=np.concatenate([b.ids for b in batches]),
            offsets=np.concatenate([b.offsets for b in batches]),
            word_ids=np.concatenate([b.word_ids for b in batches]),
            splits=np.concatenate([[0]] + [b.splits[1:] + t for b, t in zip(batches, tokens)]).astype(np.int64),
            prefix=first.prefix,
            suffix=first.suffix,
            pad_id=first.pad_id,
            fingerprint=first.fingerprint,
            tokenized=sum(b.tokenized for b in batches),
        )
        return joined, [r + base for rs, base in zip(rows, bases) for r in rs]

    @property
    def specials(self) -> tuple[tuple[int, ...], tuple[int, ...], int]:
        return self.prefix, self.suffix, self.pad_id


@dataclass
class EncodedBatch:
    """Token vectors of some rows of one TokenBatch: per row, [CLS], its tokens and [SEP], each
    [dim] float32, flat (row ``k`` of ``rows`` owns ``vectors[splits[k]:splits[k + 1]]``)."""

    key: str  # encoder_key of the encoder that made them
    rows: list[int]
    vectors: np.ndarray
    splits: np.ndarray
    compute_ms: float = 0.0
    texts: int = 0  # texts in the pass that made them (several calls' rows may share one pass)
    kernel: str = ""  # the forward pass that made them (nlpserve.models.kernels): int8 vectors differ a little
    _index: dict[int, int] = field(default_factory=dict, repr=False)

    def row(self, i: int) -> np.ndarray:
        """The token vectors of TokenBatch row ``i``."""
        if not self._index:
            self._index.update((r, k) for k, r in enumerate(self.rows))
        k = self._index[i]
        return self.vectors[self.splits[k] : self.splits[k + 1]]


def special_tokens(backend: tokenizers.Tokenizer) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """The special tokens the post-processor puts before and after one sequence."""
    plain = backend.encode("a", add_special_tokens=False).ids
    full = backend.encode("a", add_special_tokens=True).ids
    for i in range(len(full) - len(plain) + 1):
        if full[i : i + len(plain)] == plain:
            return tuple(full[:i]), tuple(full[i + len(plain) :])
    raise ValueError("the tokenizer's post-processor changes the tokens of the text itself")


class Row(NamedTuple):
    """One tokenized text. It holds its text (the cache key's own object, so no copy) to count it."""

    text: str
    ids: np.ndarray
    offsets: np.ndarray
    word_ids: np.ndarray

    @property
    def nbytes(self) -> int:
        return sys.getsizeof(self.text) + self.ids.nbytes + self.offsets.nbytes + self.word_ids.nbytes


class TokenCache(TTLCache):
    """Tokenized texts (Rows), least recently used first out, bounded by the bytes of their texts and
    arrays rather than by a count: one 100k-character text weighs as much as a thousand short ones."""

    def __init__(self, max_bytes: int, ttl_s: float, timer: Callable[[], float] = time.monotonic) -> None:
        super().__init__(max_bytes, ttl_s, timer, getsizeof=lambda row: row.nbytes)


class Tokenizer:
    """A fast tokenizer (from a TokenizerSpec) that turns a list of texts into one TokenBatch.

    With a ``cache`` (a mapping of text to Row, e.g. a TokenCache) texts seen before are not
    tokenized again; the others are tokenized together in one call.
    """

    def __init__(self, spec: TokenizerSpec | None = None, cache: MutableMapping | None = None) -> None:
        self.spec = spec or default_spec()
        self.backend = tokenizers.Tokenizer.from_str(self.spec.json)
        # Tasks window long texts themselves, so the shared tokenization never truncates.
        self.backend.no_truncation()
        self.backend.no_padding()
        self.prefix, self.suffix = special_tokens(self.backend)
        self.cache = cache
        self.counts: Counter[str] = Counter()

    def _encode(self, texts: list[str]) -> list[Row]:
        self.counts["calls"] += 1
        out = []
        for text, e in zip(texts, self.backend.encode_batch(texts, add_special_tokens=False)):
            n = len(e.ids)
            out.append(
                Row(
                    text,
                    np.array(e.ids, dtype=np.int32),
                    np.array(e.offsets, dtype=np.int32).reshape(n, 2),
                    np.array([-1 if w is None else w for w in e.word_ids], dtype=np.int32),
                )
            )
        return out

    def count(self, text: str) -> int:
        """Tokens of ``text``, stored nowhere (the backend is safe to call from several threads)."""
        return len(self.backend.encode(text, add_special_tokens=False).ids)

    def __call__(self, texts: list[str]) -> TokenBatch:
        if self.cache is None:
            rows = self._encode(texts)
            tokenized = len(texts)
        else:
            found = {t: self.cache.get(t) for t in dict.fromkeys(texts)}
            missing = [t for t, r in found.items() if r is None]
            self.counts.update(cache_hits=len(found) - len(missing), cache_misses=len(missing))
            if missing:
                for text, row in zip(missing, self._encode(missing)):
                    found[text] = row
                    with contextlib.suppress(ValueError):  # cachetools: a row larger than the whole cache
                        self.cache[text] = row
            rows = [found[t] for t in texts]
            tokenized = len(missing)
        splits = np.zeros(len(texts) + 1, dtype=np.int64)
        np.cumsum([len(r.ids) for r in rows], out=splits[1:])
        return TokenBatch(
            texts=list(texts),
            ids=np.concatenate([r.ids for r in rows]) if rows else np.zeros(0, np.int32),
            offsets=np.concatenate([r.offsets for r in rows]) if rows else np.zeros((0, 2), np.int32),
            word_ids=np.concatenate([r.word_ids for r in rows]) if rows else np.zeros(0, np.int32),
            splits=splits,
            prefix=self.prefix,
            suffix=self.suffix,
            pad_id=self.spec.pad_id,
            fingerprint=self.spec.fingerprint,
            tokenized=tokenized,
        )
