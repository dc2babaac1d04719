"""Long rows as overlapping windows, and padded model batches under a token budget."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import NamedTuple

import numpy as np
import torch

from nlpserve.cancel import Stop, check


def check_stride(size: int, stride: int) -> None:
    if not 0 <= stride < size:
        raise ValueError(f"stride must be in [0, {size}), got {stride}")


def windows(n: int, size: int, stride: int) -> list[tuple[int, int, int]]:
    """(start, end, first owned token) of each window over a row of ``n`` tokens.

    Windows hold at most ``size`` tokens and overlap the previous one by ``stride``; each
    token is owned by the first window that holds it, so a long row is covered once."""
    check_stride(size, stride)
    if n <= size:
        return [(0, n, 0)]
    out, start = [], 0
    while True:
        end = min(start + size, n)
        owned = 0 if start == 0 else out[-1][1] - start
        out.append((start, end, owned))
        if end == n:
            return out
        start = end - stride


class Piece(NamedTuple):
    """One window of a row, ready for the model."""

    row: int  # index of the row in the rows given
    start: int  # the window's first token in the row
    owned: int  # tokens before this one belong to the previous window
    ids: np.ndarray  # int64, with the special tokens around the window
    first: bool  # the row's first window
    last: bool  # the row's last window


def window_pieces(
    rows: Sequence[np.ndarray], size: int, stride: int, prefix: Sequence[int], suffix: Sequence[int]
) -> list[Piece]:
    """Every window of every row, in order."""
    before, after = np.asarray(prefix, np.int64), np.asarray(suffix, np.int64)
    out = []
    for r, ids in enumerate(rows):
        wins = windows(len(ids), size, stride)
        for k, (start, end, owned) in enumerate(wins):
            seq = np.concatenate((before, ids[start:end], after)).astype(np.int64)
            out.append(Piece(r, start, owned, seq, k == 0, k == len(wins) - 1))
    return out


def padded_batches(
    seqs: Sequence[np.ndarray], pad_id: int, max_batch_tokens: int, stop: Stop | None = None
) -> Iterator[tuple[list[int], torch.Tensor, torch.Tensor]]:
    """Indices, ``input_ids`` and ``attention_mask`` of batches of ``seqs``, similar lengths together,
    each batch at most ``max_batch_tokens`` padded tokens (or one sequence). Raises Cancelled before
    a batch once ``stop`` is set, so a long call ends within one model batch of its caller giving up."""
    order = sorted(range(len(seqs)), key=lambda k: len(seqs[k]))
    i = 0
    while i < len(order):
        check(stop)
        j = i + 1
        while j < len(order) and len(seqs[order[j]]) * (j + 1 - i) <= max_batch_tokens:
            j += 1
        chunk = order[i:j]
        width = len(seqs[chunk[-1]])
        ids = torch.full((len(chunk), width), pad_id, dtype=torch.long)
        mask = torch.zeros((len(chunk), width), dtype=torch.long)
        for k, index in enumerate(chunk):
            seq = seqs[index]
            ids[k, : len(seq)] = torch.from_numpy(np.asarray(seq, dtype=np.int64))
            mask[k, : len(seq)] = 1
        yield chunk, ids, mask
        i = j
