"""Does the extractive summary keep a news story's lead? Lead prior off against on.

    python scripts/eval_summary.py [--weight 0.08] [--sweep] [--kernel onnx-int8]

Runs the served summarizer (ExtractiveSummarizer on the shared MiniLM encoder, in process) over
wire-style paragraphs whose first sentence is the lead (nlpserve/data/news_lead.jsonl) and prints,
at the default summary length and at one sentence: lead recall (summaries that include the lead),
the mean position of the picked sentences (0 is the lead) and how often the summary is exactly the
first k sentences (lead-k). The prior should raise lead recall without turning into lead-k.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import get_args

import numpy as np

from nlpserve.models.encoder import MiniLMEncoder
from nlpserve.models.summary import ExtractiveSummarizer, split_sentences
from nlpserve.schemas import EncoderKernel, SummarySettings
from nlpserve.tokens import TokenBatch, Tokenizer

HERE = Path(__file__).resolve().parent
SWEEP = (0.0, 0.02, 0.04, 0.06, 0.08, 0.1, 0.15, 0.2, 0.3)


def measure(
    model: ExtractiveSummarizer, batch: TokenBatch, vectors: list[np.ndarray], leads: list[str]
) -> dict[str, float]:
    rows = list(range(len(leads)))
    recall, positions, lead_k = [], [], []
    for i, answer in zip(rows, model(batch, rows, vectors)):
        text = batch.texts[i]
        starts = [s.start for s in split_sentences(text, batch.offsets[batch.span(i)])]
        picked = [starts.index(s["start"]) for s in answer["sentences"]]
        recall.append(any(text[s["start"] : s["end"]] == leads[i] for s in answer["sentences"]))
        positions += picked
        lead_k.append(picked == list(range(len(picked))))
    return {"lead recall": np.mean(recall), "mean position": np.mean(positions), "exactly lead-k": np.mean(lead_k)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=HERE.parent / "nlpserve/data/news_lead.jsonl")
    parser.add_argument("--weight", type=float, default=SummarySettings().lead_prior, help="lead_prior when on")
    parser.add_argument("--sweep", action="store_true", help=f"also print every weight of {SWEEP}")
    parser.add_argument("--kernel", default="onnx-int8", choices=get_args(EncoderKernel))
    args = parser.parse_args()

    records = [json.loads(line) for line in args.data.read_text(encoding="utf-8").splitlines() if line.strip()]
    leads = [r["lead"] for r in records]
    batch = Tokenizer()([r["text"] for r in records])
    rows = list(range(len(records)))
    (encoded,) = MiniLMEncoder(kernel=args.kernel).encode([(batch, rows)])
    vectors = [encoded.row(i) for i in rows]

    counts = [len(split_sentences(r["text"], batch.offsets[batch.span(i)])) for i, r in enumerate(records)]
    split_right = sum(
        r["text"][s.start : s.end] == r["lead"]
        for i, r in enumerate(records)
        for s in split_sentences(r["text"], batch.offsets[batch.span(i)])[:1]
    )
    print(f"{len(records)} paragraphs, {min(counts)}-{max(counts)} sentences; lead split off right in {split_right}")

    defaults = SummarySettings()
    lengths = {
        f"default length (max_sentences {defaults.max_sentences}, ratio {defaults.ratio})": defaults.max_sentences,
        "one sentence": 1,
    }
    for title, k in lengths.items():
        weights = SWEEP if args.sweep else (0.0, args.weight)
        results = {
            w: measure(ExtractiveSummarizer(SummarySettings(max_sentences=k, lead_prior=w)), batch, vectors, leads)
            for w in weights
        }
        print(f"\n{title}\n{'lead_prior':>22}" + "".join(f"{w:>8g}" for w in weights))
        for metric in results[weights[0]]:
            print(f"{metric:>22}" + "".join(f"{results[w][metric]:>8.3f}" for w in weights))


if __name__ == "__main__":
    main()
