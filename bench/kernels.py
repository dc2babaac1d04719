"""Speed and accuracy of the MiniLM kernels (nlpserve.models.kernels) on news texts of ~107 tokens.

    python -m bench.kernels [--threads 1] [--texts 200] [--passes 30]

Speed: median wall ms per pass at batch 1 and batch 16, kernels interleaved pass by pass so a busy
neighbour slows them alike. Accuracy against torch float32: max |diff| of last_hidden_state over real
(unpadded) tokens, and cosine of the mean-pooled, normalised sentence embeddings.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import numpy as np

from bench.texts import make_texts
from nlpserve.models.kernels import KERNELS, Kernel, cache_dir, load_kernel
from nlpserve.models.windows import padded_batches
from nlpserve.resources import minilm_dir
from nlpserve.tokens import Tokenizer


def batches(texts: list[str], size: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """[CLS] ids [SEP] of ``texts``, padded to the longest in each batch of ``size`` (in order)."""
    tokens = Tokenizer()(texts)
    rows = [
        np.concatenate((tokens.prefix, tokens.ids[tokens.span(i)], tokens.suffix)).astype(np.int64)
        for i in range(len(texts))
    ]
    out = []
    for start in range(0, len(rows), size):
        # An unlimited token budget: padded_batches then yields the whole chunk as one batch.
        for _, ids, mask in padded_batches(rows[start : start + size], tokens.pad_id, max_batch_tokens=1 << 30):
            out.append((ids.numpy(), mask.numpy()))
    return out


def sentence_embeddings(hidden: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Mean over real tokens, L2-normalised (as sentence-transformers pools)."""
    m = mask[..., None].astype(np.float32)
    vecs = (hidden * m).sum(1) / m.sum(1)
    return vecs / np.linalg.norm(vecs, axis=1, keepdims=True)


def speed(kernels: dict[str, Kernel], data: list[tuple[np.ndarray, np.ndarray]], passes: int) -> dict[str, tuple]:
    """Per kernel: median wall ms and median process-CPU ms per pass."""
    wall: dict[str, list[float]] = {k: [] for k in kernels}
    cpu: dict[str, list[float]] = {k: [] for k in kernels}
    for kernel in kernels.values():  # warm-up: first runs allocate and pick kernels
        kernel(*data[0])
    for i in range(passes):
        ids, mask = data[i % len(data)]
        for name, kernel in kernels.items():
            w, c = time.perf_counter(), time.process_time()
            kernel(ids, mask)
            wall[name].append((time.perf_counter() - w) * 1000)
            cpu[name].append((time.process_time() - c) * 1000)
    return {k: (statistics.median(wall[k]), statistics.median(cpu[k])) for k in kernels}


def accuracy(kernels: dict[str, Kernel], data: list[tuple[np.ndarray, np.ndarray]]) -> dict[str, tuple]:
    """Per kernel vs torch float32: (max abs diff, min cosine, mean cosine) over every text in ``data``."""
    diffs: dict[str, float] = {k: 0.0 for k in kernels}
    cosines: dict[str, list[np.ndarray]] = {k: [] for k in kernels}
    for ids, mask in data:
        ref = kernels["torch"](ids, mask)
        ref_emb = sentence_embeddings(ref, mask)
        real = mask.astype(bool)
        for name, kernel in kernels.items():
            hidden = kernel(ids, mask)
            diffs[name] = max(diffs[name], float(np.abs(hidden - ref)[real].max()))
            cosines[name].append((sentence_embeddings(hidden, mask) * ref_emb).sum(1))
    return {k: (diffs[k], float(np.concatenate(c).min()), float(np.concatenate(c).mean())) for k, c in cosines.items()}


def served(texts: list[str], reps: int = 3) -> dict[str, dict]:
    """Each kernel as the Encoder deployment runs it (one window per call, 1 thread), against torch
    float32 on the same texts: ms per text, the summary sentences picked (identical share) and the
    sentiment labels (same share)."""
    from nlpserve.models.encoder import MiniLMEncoder
    from nlpserve.models.sentiment import SentimentModel
    from nlpserve.models.summary import ExtractiveSummarizer

    batch = Tokenizer()(texts)
    rows = list(range(len(texts)))
    sentiment, summary = SentimentModel(), ExtractiveSummarizer()
    out: dict[str, dict] = {}
    for name in KERNELS:
        encoder = MiniLMEncoder(kernel=name)
        times = []
        for _ in range(reps):
            start = time.perf_counter()
            (encoded,) = encoder.encode([(batch, rows)])
            times.append((time.perf_counter() - start) * 1000 / len(texts))
        vectors = [encoded.row(i) for i in rows]
        out[name] = {
            "ms_per_text": statistics.median(times),
            "picks": [s["sentences"] for s in summary(batch, rows, vectors)],
            "labels": [s["label"] for s in sentiment(batch, rows, vectors)],
        }
    for r in out.values():
        r["same_summary"] = float(np.mean([a == b for a, b in zip(r["picks"], out["torch"]["picks"])]))
        r["same_label"] = float(np.mean([a == b for a, b in zip(r["labels"], out["torch"]["labels"])]))
    return {k: {m: v for m, v in r.items() if m not in ("picks", "labels")} for k, r in out.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--texts", type=int, default=200, help="texts for the accuracy columns")
    parser.add_argument("--passes", type=int, default=30, help="timed passes at batch 1 (batch 16: a quarter)")
    args = parser.parse_args()

    kernels: dict[str, Kernel] = {}
    for name in KERNELS:
        start = time.perf_counter()
        kernels[name] = load_kernel(name, minilm_dir(), threads=args.threads)
        print(f"loaded {name:10s} in {time.perf_counter() - start:5.1f} s (ONNX cache: {cache_dir()})")

    texts = make_texts(args.texts)
    one = speed(kernels, batches(texts[:64], 1), args.passes)
    sixteen = speed(kernels, batches(texts[:64], 16), max(3, args.passes // 4))
    acc = accuracy(kernels, batches(texts, 16))

    print()
    print(f"{args.threads} thread(s), news texts of ~107 tokens; {os.cpu_count()} CPUs visible, possibly shared.")
    print("ms = median wall time per pass (CPU = median process CPU time; CPU well below wall means contention).")
    print()
    print(
        "| kernel | b1 ms/pass | b1 CPU ms | b16 ms/pass | b16 ms/text | b16 CPU ms | speed-up b16 "
        "| max abs diff | cos min | cos mean |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    base = sixteen["torch"][0]
    for name in kernels:
        (w1, c1), (w16, c16), (diff, cmin, cmean) = one[name], sixteen[name], acc[name]
        print(
            f"| {name} | {w1:.1f} | {c1:.1f} | {w16:.0f} | {w16 / 16:.1f} | {c16:.0f} | {base / w16:.2f}x "
            f"| {diff:.2g} | {cmin:.5f} | {cmean:.5f} |"
        )
    print(f"\nAccuracy vs torch float32 over {len(texts)} texts (batches of 16, padded).")
    print("\nAs served (the Encoder's one window per call, 1 thread), against torch float32:\n")
    print("| kernel | ms/text | same summary sentences | same sentiment label |")
    print("|---|---|---|---|")
    for name, r in served(texts).items():
        print(f"| {name} | {r['ms_per_text']:.1f} | {r['same_summary']:.1%} | {r['same_label']:.1%} |")


if __name__ == "__main__":
    main()
