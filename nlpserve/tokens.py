"""Shared tokenization: one fast-tokenizer call per batch, stored as flat numpy arrays."""

from __future__ import annotations

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

    def __len__(self) -> int:
        return len(self.texts)

    def span(self, i: int) -> slice:
        return slice(int(self.splits[i]), int(self.splits[i + 1]))


class Tokenizer:
    """A Hugging Face fast tokenizer that turns a list of texts into one TokenBatch."""

    def __init__(self, path: str | Path | None = None) -> None:
        self.path = str(path or minilm_dir())
        tok = AutoTokenizer.from_pretrained(self.path)
        if not isinstance(tok, PreTrainedTokenizerFast):
            raise ValueError(f"{self.path}: a fast tokenizer is required")
        self.hf = tok
        self.backend = tok.backend_tokenizer
        # Tasks window long texts themselves, so the shared tokenization never truncates.
        self.backend.no_truncation()
        self.backend.no_padding()

    def __call__(self, texts: list[str]) -> TokenBatch:
        encodings = self.backend.encode_batch(texts, add_special_tokens=False)
        lengths = np.fromiter((len(e.ids) for e in encodings), dtype=np.int64, count=len(texts))
        splits = np.zeros(len(texts) + 1, dtype=np.int64)
        np.cumsum(lengths, out=splits[1:])
        n = int(splits[-1])
        ids = np.empty(n, dtype=np.int32)
        offsets = np.empty((n, 2), dtype=np.int32)
        word_ids = np.empty(n, dtype=np.int32)
        for i, e in enumerate(encodings):
            s = slice(int(splits[i]), int(splits[i + 1]))
            ids[s] = e.ids
            if e.ids:
                offsets[s] = e.offsets
                word_ids[s] = [-1 if w is None else w for w in e.word_ids]
        return TokenBatch(
            texts=list(texts),
            ids=ids,
            offsets=offsets,
            word_ids=word_ids,
            splits=splits,
            cls_id=self.hf.cls_token_id,
            sep_id=self.hf.sep_token_id,
            pad_id=self.hf.pad_token_id,
        )
