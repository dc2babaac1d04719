"""MiniLM sentence encoder over pre-tokenized ids, with windowing for long inputs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from transformers import AutoModel

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
        self.model = AutoModel.from_pretrained(self.path, use_safetensors=True).eval()
        limit = self.model.config.max_position_embeddings
        self.window = min(max_length, limit) - 2
        if not 0 <= stride < self.window:
            raise ValueError(f"stride must be in [0, {self.window}), got {stride}")
        self.stride = stride
        self.max_batch_tokens = max_batch_tokens
        self.dim = self.model.config.hidden_size

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
    def embed(self, rows: list[np.ndarray], cls_id: int, sep_id: int, pad_id: int) -> np.ndarray:
        """One normalised vector per row: float32 [len(rows), dim]."""
        pieces = []  # (row index, ids with specials, owned mask)
        for r, ids in enumerate(rows):
            wins = self._windows(len(ids))
            for k, (start, end, owned) in enumerate(wins):
                seq = np.concatenate(([cls_id], ids[start:end], [sep_id]))
                own = np.ones(len(seq), dtype=np.float32)
                own[1 : 1 + owned] = 0
                if k > 0:
                    own[0] = 0
                if k < len(wins) - 1:
                    own[-1] = 0
                pieces.append((r, seq, own))
        sums = torch.zeros(len(rows), self.dim)
        counts = torch.zeros(len(rows), 1)
        pieces.sort(key=lambda p: len(p[1]))
        i = 0
        while i < len(pieces):
            j = i + 1
            while j < len(pieces) and len(pieces[j][1]) * (j + 1 - i) <= self.max_batch_tokens:
                j += 1
            chunk = pieces[i:j]
            width = len(chunk[-1][1])
            ids = torch.full((len(chunk), width), pad_id, dtype=torch.long)
            mask = torch.zeros((len(chunk), width), dtype=torch.long)
            own = torch.zeros((len(chunk), width))
            for k, (_, seq, o) in enumerate(chunk):
                ids[k, : len(seq)] = torch.from_numpy(seq.astype(np.int64))
                mask[k, : len(seq)] = 1
                own[k, : len(seq)] = torch.from_numpy(o)
            hidden = self.model(input_ids=ids, attention_mask=mask).last_hidden_state
            index = torch.tensor([p[0] for p in chunk])
            sums.index_add_(0, index, (hidden * own.unsqueeze(-1)).sum(1))
            counts.index_add_(0, index, own.sum(1, keepdim=True))
            i = j
        vecs = sums / counts.clamp(min=1)
        return torch.nn.functional.normalize(vecs, dim=-1).numpy()
