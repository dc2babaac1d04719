"""MiniLM sentence encoder over pre-tokenized ids, with windowing for long inputs."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import torch
from transformers import AutoModel
from transformers.utils import logging as hf_logging

from nlpserve.resources import minilm_dir


class Encoder:
    """Mean-pooled, L2-normalised embeddings (as sentence-transformers' all-MiniLM-L6-v2).

    Rows are token ids without special tokens. A row longer than the model's window is
    split into windows that overlap by ``stride`` tokens; every token is pooled once,
    from the first window that holds it, so no part of a long text is dropped.
    """

    def __init__(
        self,
        path: str | Path | None = None,
        max_length: int = 256,
        stride: int = 32,
        max_batch_tokens: int = 8192,
    ) -> None:
        self.path = str(path or minilm_dir())
        hf_logging.disable_progress_bar()  # no "Loading weights" bar in every replica's log
        self.model = AutoModel.from_pretrained(self.path, use_safetensors=True).eval()
        limit = self.model.config.max_position_embeddings
        self.window = min(max_length, limit) - 2
        if not 0 <= stride < self.window:
            raise ValueError(f"stride must be in [0, {self.window}), got {stride}")
        self.stride = stride
        self.max_batch_tokens = max_batch_tokens
        self.dim = self.model.config.hidden_size
        self.fp32 = self.model
        self.int8 = False

    def set_int8(self, enabled: bool) -> None:
        """Switch to dynamic int8 quantization of the Linear layers (or back to float32)."""
        if enabled and not self.int8:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # torch.ao.quantization is deprecated, still works in 2.13
                self.model = torch.ao.quantization.quantize_dynamic(self.fp32, {torch.nn.Linear}, dtype=torch.qint8)
        elif not enabled:
            self.model = self.fp32
        self.int8 = enabled

    def _windows(self, n: int) -> list[tuple[int, int, int]]:
        """(start, end, first owned token) of each window over a row of n tokens."""
        if n <= self.window:
            return [(0, n, 0)]
        out, start = [], 0
        while True:
            end = min(start + self.window, n)
            owned = 0 if start == 0 else out[-1][1] - start
            out.append((start, end, owned))
            if end == n:
                return out
            start = end - self.stride

    @torch.inference_mode()
    def token_vectors(self, rows: list[np.ndarray], cls_id: int, sep_id: int, pad_id: int) -> list[torch.Tensor]:
        """Per row, float32 [len(row) + 2, dim]: [CLS], each token from the first window that holds it, [SEP]."""
        out = [torch.empty(len(ids) + 2, self.dim) for ids in rows]
        pieces = []  # (row, first token, owned offset, ids with specials, is first window, is last window)
        for r, ids in enumerate(rows):
            wins = self._windows(len(ids))
            for k, (start, end, owned) in enumerate(wins):
                seq = np.concatenate(([cls_id], ids[start:end], [sep_id]))
                pieces.append((r, start, owned, seq, k == 0, k == len(wins) - 1))
        pieces.sort(key=lambda p: len(p[3]))
        i = 0
        while i < len(pieces):
            j = i + 1
            while j < len(pieces) and len(pieces[j][3]) * (j + 1 - i) <= self.max_batch_tokens:
                j += 1
            chunk = pieces[i:j]
            width = len(chunk[-1][3])
            ids = torch.full((len(chunk), width), pad_id, dtype=torch.long)
            mask = torch.zeros((len(chunk), width), dtype=torch.long)
            for k, piece in enumerate(chunk):
                seq = piece[3]
                ids[k, : len(seq)] = torch.from_numpy(seq.astype(np.int64))
                mask[k, : len(seq)] = 1
            hidden = self.model(input_ids=ids, attention_mask=mask).last_hidden_state
            for h, (r, start, owned, seq, first, last) in zip(hidden, chunk):
                n = len(seq) - 2
                out[r][1 + start + owned : 1 + start + n] = h[1 + owned : 1 + n]
                if first:
                    out[r][0] = h[0]
                if last:
                    out[r][-1] = h[n + 1]
            i = j
        return out

    def embed(self, rows: list[np.ndarray], cls_id: int, sep_id: int, pad_id: int) -> np.ndarray:
        """One normalised vector per row, float32 [len(rows), dim]: the mean of its token vectors."""
        if not rows:
            return np.zeros((0, self.dim), dtype=np.float32)
        vecs = torch.stack([v.mean(0) for v in self.token_vectors(rows, cls_id, sep_id, pad_id)])
        return torch.nn.functional.normalize(vecs, dim=-1).numpy()
