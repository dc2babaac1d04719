"""Shared tokenization: one fast-tokenizer call per batch, stored as flat numpy arrays."""

from __future__ import annotations

from collections import Counter
from collections.abc import MutableMapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from transformers import AutoTokenizer, PreTrainedTokenizerFast

from nlpserve.resources import minilm_dir


@dataclass
class TokenBatch:
    """Tokens of a batch of texts, ragged and without special tokens.

    Text ``i`` owns tokens ``splits[i]:splits[i + 1]`` of the flat arrays. Keeping the
    arrays flat (not padded) lets each task window and pad only what it needs, and
    numpy arrays are read zero-copy from Ray's object store.
    """

    texts: list[str]
    ids: np.ndarray  # int32 [N]
    offsets: np.ndarray  # int32 [N, 2] character span of each token in its text
    word_ids: np.ndarray  # int32 [N] pre-tokenizer word index within its text
    splits: np.ndarray  # int64 [B + 1]
    cls_id: int
    sep_id: int
    pad_id: int
    encoded: int = 0  # texts actually run through the tokenizer for this batch (the rest were cached)

    def __len__(self) -> int:
        return len(self.texts)

    def span(self, i: int) -> slice:
        return slice(int(self.splits[i]), int(self.splits[i + 1]))


class Tokenizer:
    """A Hugging Face fast tokenizer that turns a list of texts into one TokenBatch.

    With a ``cache`` (any mapping, e.g. a cachetools TTLCache) texts seen before are not
    tokenized again; the others are tokenized together in one call.
    """

    def __init__(self, path: str | Path | None = None, cache: MutableMapping | None = None) -> None:
        self.path = str(path or minilm_dir())
        tok = AutoTokenizer.from_pretrained(self.path)
        if not isinstance(tok, PreTrainedTokenizerFast):
            raise ValueError(f"{self.path}: a fast tokenizer is required")
        self.hf = tok
        self.backend = tok.backend_tokenizer
        # Tasks window long texts themselves, so the shared tokenization never truncates.
        self.backend.no_truncation()
        self.backend.no_padding()
        self.cache = cache
        self.counts: Counter[str] = Counter()

    def _encode(self, texts: list[str]) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
        self.counts["calls"] += 1
        out = []
        for e in self.backend.encode_batch(texts, add_special_tokens=False):
            n = len(e.ids)
            out.append(
                (
                    np.array(e.ids, dtype=np.int32),
                    np.array(e.offsets, dtype=np.int32).reshape(n, 2),
                    np.array([-1 if w is None else w for w in e.word_ids], dtype=np.int32),
                )
            )
        return out

    def __call__(self, texts: list[str]) -> TokenBatch:
        if self.cache is None:
            rows = self._encode(texts)
            encoded = len(texts)
        else:
            found = {t: self.cache.get(t) for t in dict.fromkeys(texts)}
            missing = [t for t, r in found.items() if r is None]
            self.counts.update(cache_hits=len(found) - len(missing), cache_misses=len(missing))
            if missing:
                for text, row in zip(missing, self._encode(missing)):
                    found[text] = self.cache[text] = row
            rows = [found[t] for t in texts]
            encoded = len(missing)
        splits = np.zeros(len(texts) + 1, dtype=np.int64)
        np.cumsum([len(r[0]) for r in rows], out=splits[1:])
        return TokenBatch(
            texts=list(texts),
            ids=np.concatenate([r[0] for r in rows]) if rows else np.zeros(0, np.int32),
            offsets=np.concatenate([r[1] for r in rows]) if rows else np.zeros((0, 2), np.int32),
            word_ids=np.concatenate([r[2] for r in rows]) if rows else np.zeros(0, np.int32),
            splits=splits,
            cls_id=self.hf.cls_token_id,
            sep_id=self.hf.sep_token_id,
            pad_id=self.hf.pad_token_id,
            encoded=encoded,
        )
