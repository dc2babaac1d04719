"""The shared MiniLM encoder: token vectors of a TokenBatch's rows, one pass per text, windowed
when long; the tasks that read them (sentiment, summary) are small heads over its output."""

from __future__ import annotations

import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch
from transformers import AutoConfig

from nlpserve.cancel import Stop, check
from nlpserve.errors import EncoderMismatch
from nlpserve.models.kernels import DEFAULT_KERNEL, ONNX_KERNELS, TorchKernel, load_kernel
from nlpserve.models.windows import check_stride, padded_batches, window_pieces
from nlpserve.resources import checksum, minilm_dir
from nlpserve.tokens import EncodedBatch, TokenBatch, TokenizerSpec, default_spec


def encoder_key(model_dir: str | Path, fingerprint: str) -> str:
    """Who may share an encoder pass: the same weights (checksum) fed by the same tokenizer."""
    return f"{checksum(Path(model_dir) / 'model.safetensors')}:{fingerprint}"


def default_encoder_key() -> str:
    return encoder_key(minilm_dir(), default_spec().fingerprint)


class MiniLMEncoder:
    """Mean-pooled, L2-normalised embeddings (as sentence-transformers' all-MiniLM-L6-v2).

    Rows are token ids without special tokens. A row longer than the model's window is
    split into windows that overlap by ``stride`` tokens; every token is pooled once,
    from the first window that holds it, so no part of a long text is dropped.

    ``kernel`` picks the forward pass (nlpserve.models.kernels): ONNX Runtime int8 by default, the fastest
    here at a sentence-vector cosine of ~0.99 to torch float32 (docs/performance.md). Every kernel but
    torch float32 runs each window alone: on one CPU thread padding batches gains nothing, and an int8
    kernel's activation scales would then depend on the other texts of the batch. With ``threads`` > 1 an
    ONNX kernel runs that many windows side by side (a 2-core machine: ~1.9x the windows per second), each
    on ``window_threads`` of ONNX Runtime's (intra-op). One is the default: a lone window on two threads ends
    ~1.3x sooner for ~15-45 % more CPU, and two windows side by side on a shared pool of two slowed the
    served graph at 16 clients (docs/performance.md). The torch kernels run on ``threads`` of torch's.
    """

    def __init__(
        self,
        path: str | Path | None = None,
        kernel: str = DEFAULT_KERNEL,
        threads: int = 1,
        window_threads: int = 1,
        max_length: int = 256,
        stride: int = 32,
        max_batch_tokens: int = 8192,
    ) -> None:
        self.path = str(path or minilm_dir())
        config = AutoConfig.from_pretrained(self.path)
        self.window = min(max_length, config.max_position_embeddings)  # positions per call, specials included
        check_stride(self.window - 2, stride)
        self.stride = stride
        onnx = kernel in ONNX_KERNELS
        self.kernel = load_kernel(kernel, Path(self.path), window_threads if onnx else threads)
        self.max_batch_tokens = max_batch_tokens if kernel == "torch" else 0  # 0: one window per call
        self.workers = threads if onnx else 1  # torch threads itself
        self.dim = config.hidden_size
        self.device = torch.device("cpu")
        self.key = encoder_key(self.path, default_spec().fingerprint)

    @property
    def spec(self) -> TokenizerSpec:
        return default_spec()

    def info(self) -> dict:
        return {"name": "all-MiniLM-L6-v2", "kernel": self.kernel.name, "key": self.key}

    def to(self, device: torch.device) -> None:
        """Run on ``device`` (the replica's GPU, see nlpserve.device): the torch kernel only."""
        if device.type != "cpu":
            if not isinstance(self.kernel, TorchKernel):
                raise ValueError(f"kernel {self.kernel.name} runs on the CPU only; use kernel: torch on a GPU")
            self.kernel.to(device)
        self.device = device

    def token_vectors(
        self,
        rows: list[np.ndarray],
        prefix: tuple[int, ...],
        suffix: tuple[int, ...],
        pad_id: int,
        stop: Stop | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Flat float32 [sum(len(prefix) + len(row) + len(suffix)), dim] and the row splits: per row the
        prefix tokens ([CLS]) and the suffix tokens ([SEP]) from its first and last windows, each of
        its tokens from the first window that holds it. Once ``stop`` is set, raises Cancelled before
        the next model call (one window, or one padded batch of them)."""
        p, q = len(prefix), len(suffix)
        splits = np.zeros(len(rows) + 1, dtype=np.int64)
        np.cumsum([p + len(ids) + q for ids in rows], out=splits[1:])
        out = np.empty((int(splits[-1]), self.dim), dtype=np.float32)
        pieces = window_pieces(rows, self.window - p - q, self.stride, prefix, suffix)
        for index, hidden in self._run(pieces, pad_id, stop):
            for h, piece in zip(hidden, (pieces[i] for i in index)):
                row = out[splits[piece.row] : splits[piece.row + 1]]
                n, start = len(piece.ids) - p - q, piece.start
                row[p + start + piece.owned : p + start + n] = h[p + piece.owned : p + n]
                if piece.first:
                    row[:p] = h[:p]
                if piece.last:
                    row[len(row) - q :] = h[p + n : p + n + q]
        return out, splits

    def _run(self, pieces: list, pad_id: int, stop: Stop | None) -> Iterator[tuple[list[int], np.ndarray]]:
        """Each model call's pieces and hidden states, ``workers`` calls at a time; a stop is seen
        before each call."""

        def run(batch: tuple) -> tuple[list[int], np.ndarray]:
            index, ids, mask = batch
            check(stop)
            return index, self.kernel(ids.numpy(), mask.numpy())

        batches = padded_batches([piece.ids for piece in pieces], pad_id, self.max_batch_tokens)
        if self.workers == 1 or len(pieces) == 1:
            yield from map(run, batches)
            return
        # Threads of this call only: a short call beside a long one is not queued behind its windows.
        with ThreadPoolExecutor(self.workers) as pool:
            yield from pool.map(run, batches)

    def encode(self, calls: list[tuple[TokenBatch, list[int]]], stop: Stop | None = None) -> list[EncodedBatch]:
        """One pass over the given rows of several batches (one model call, long ones windowed):
        per call, the vectors every head of this encoder reads. ``stop``: see token_vectors."""
        for batch, _ in calls:
            if batch.fingerprint != default_spec().fingerprint:
                raise EncoderMismatch(f"tokens from tokenizer {batch.fingerprint}, encoder {self.key} reads others")
        start = time.perf_counter()
        rows = [batch.ids[batch.span(i)] for batch, wanted in calls for i in wanted]
        vectors, splits = self.token_vectors(rows, *calls[0][0].specials, stop) if calls else (None, [0])
        ms = (time.perf_counter() - start) * 1000
        out, k = [], 0
        for _, wanted in calls:
            part = splits[k : k + len(wanted) + 1]
            out.append(
                EncodedBatch(
                    self.key, list(wanted), vectors[part[0] : part[-1]], part - part[0], ms, len(rows), self.kernel.name
                )
            )
            k += len(wanted)
        return out


def mean_pool(rows: list[np.ndarray], dim: int) -> np.ndarray:
    """L2-normalised mean of each row's token vectors (sentence-transformers' pooling), [len(rows), dim]."""
    if not rows:
        return np.zeros((0, dim), dtype=np.float32)
    vecs = np.stack([r.mean(0) for r in rows])
    return vecs / np.maximum(np.linalg.norm(vecs, axis=1, keepdims=True), 1e-12)
