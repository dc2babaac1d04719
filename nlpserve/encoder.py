"""MiniLM sentence encoder over pre-tokenized ids, with windowing for long inputs."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import torch
from transformers import AutoModel
from transformers.utils import logging as hf_logging

from nlpserve.resources import minilm_dir
from nlpserve.windows import check_stride, padded_batches, window_pieces


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
        self.window = min(max_length, limit)  # positions per model call, special tokens included
        check_stride(self.window - 2, stride)
        self.stride = stride
        self.max_batch_tokens = max_batch_tokens
        self.dim = self.model.config.hidden_size
        self.fp32 = self.model
        self.int8 = False
        self.device = torch.device("cpu")

    def to(self, device: torch.device) -> None:
        """Run on ``device`` (the replica's GPU, see nlpserve.device); int8 stays on the CPU."""
        if self.int8 and device.type != "cpu":
            raise ValueError("int8 quantization runs on the CPU only")
        self.fp32 = self.fp32.to(device)
        self.model = self.model if self.int8 else self.fp32
        self.device = device

    def set_int8(self, enabled: bool) -> None:
        """Switch to dynamic int8 quantization of the Linear layers (or back to float32)."""
        if enabled and self.device.type != "cpu":
            raise ValueError("int8 quantization runs on the CPU only")
        if enabled and not self.int8:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # torch.ao.quantization is deprecated, still works in 2.13
                self.model = torch.ao.quantization.quantize_dynamic(self.fp32, {torch.nn.Linear}, dtype=torch.qint8)
        elif not enabled:
            self.model = self.fp32
        self.int8 = enabled

    @torch.inference_mode()
    def token_vectors(
        self, rows: list[np.ndarray], prefix: tuple[int, ...], suffix: tuple[int, ...], pad_id: int
    ) -> list[torch.Tensor]:
        """Per row, float32 [len(prefix) + len(row) + len(suffix), dim]: the prefix tokens ([CLS]) and
        the suffix tokens ([SEP]) from the row's first and last windows, each token from the first
        window that holds it."""
        p, q = len(prefix), len(suffix)
        out = [torch.empty(p + len(ids) + q, self.dim) for ids in rows]
        pieces = window_pieces(rows, self.window - p - q, self.stride, prefix, suffix)
        for index, ids, mask in padded_batches([piece[3] for piece in pieces], pad_id, self.max_batch_tokens):
            hidden = self.model(input_ids=ids.to(self.device), attention_mask=mask.to(self.device)).last_hidden_state
            hidden = hidden.cpu()
            for h, (r, start, owned, seq, first, last) in zip(hidden, (pieces[i] for i in index)):
                n = len(seq) - p - q
                out[r][p + start + owned : p + start + n] = h[p + owned : p + n]
                if first:
                    out[r][:p] = h[:p]
                if last:
                    out[r][len(out[r]) - q :] = h[p + n : p + n + q]
        return out

    def embed(
        self, rows: list[np.ndarray], prefix: tuple[int, ...], suffix: tuple[int, ...], pad_id: int
    ) -> np.ndarray:
        """One normalised vector per row, float32 [len(rows), dim]: the mean of its token vectors."""
        if not rows:
            return np.zeros((0, self.dim), dtype=np.float32)
        vecs = torch.stack([v.mean(0) for v in self.token_vectors(rows, prefix, suffix, pad_id)])
        return torch.nn.functional.normalize(vecs, dim=-1).numpy()
