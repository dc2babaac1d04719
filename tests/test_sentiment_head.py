"""The trained sentiment head file: its metadata, its rebuilt architecture and its labels, without Ray."""

import json
import math

import numpy as np
import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from nlpserve.models.encoder import MiniLMEncoder
from nlpserve.models.kernels import DEFAULT_KERNEL
from nlpserve.models.sentiment import SentimentHead, SentimentModel, load_head
from nlpserve.resources import SENTIMENT_HEAD


@pytest.fixture(scope="module")
def model() -> SentimentModel:
    return SentimentModel(head_path=SENTIMENT_HEAD)


@pytest.fixture(scope="module")
def stored() -> tuple[dict[str, str], dict[str, torch.Tensor]]:
    with safe_open(str(SENTIMENT_HEAD), framework="pt") as f:
        return f.metadata(), {k: f.get_tensor(k) for k in f.keys()}


def reference_probabilities(meta: dict[str, str], tensors: dict[str, torch.Tensor], rows: list) -> np.ndarray:
    """The head written out in float64 numpy from the file alone (its metadata and tensors), one text at
    a time, no padding: pool (mean, or softmax(x . query) weights), L2-normalise, scale by sqrt(dim), then
    a linear layer or Linear -> exact GELU -> Linear, then softmax."""
    arch = json.loads(meta["architecture"])
    t = {k: v.double().numpy() for k, v in tensors.items()}
    erf = np.vectorize(math.erf)
    out = []
    for x in rows:
        x = np.asarray(x, dtype=np.float64)
        pooled = []
        for kind in arch["pooling"].split("+"):
            if kind == "mean":
                p = x.mean(0)
            else:
                a = x @ t["query"]
                w = np.exp(a - a.max())
                p = (w / w.sum()) @ x
            pooled.append(p / np.linalg.norm(p) * math.sqrt(arch["dim"]))
        h = np.concatenate(pooled)
        if arch["hidden"]:
            h = t["classifier.0.weight"] @ h + t["classifier.0.bias"]
            h = 0.5 * h * (1 + erf(h / math.sqrt(2)))
            logits = t["classifier.3.weight"] @ h + t["classifier.3.bias"]
        else:
            logits = t["classifier.1.weight"] @ h + t["classifier.1.bias"]
        e = np.exp(logits - logits.max())
        out.append(e / e.sum())
    return np.array(out)


def test_head_labels_clear_reviews_through_the_served_path(tokenizer, model, stored):
    texts = [
        "I absolutely loved this phone. The battery lasts forever and the screen is gorgeous. Best purchase ever!",
        "Terrible product. It broke after two days, support was rude and I want my money back. Awful.",
    ]
    batch = tokenizer(texts)
    (encoded,) = MiniLMEncoder().encode([(batch, [0, 1])])
    rows = [encoded.row(0), encoded.row(1)]
    out = model(batch, [0, 1], rows)
    assert [r["label"] for r in out] == ["positive", "negative"]
    # Label and score are the argmax and the max of the head's probabilities, computed independently
    # (any argmax of 3 classes scores over 1/3); clear reviews get a confident score (0.99, 0.998 here).
    labels = stored[0]["labels"].split(",")
    for r, p in zip(out, reference_probabilities(*stored, rows)):
        assert set(r) == {"label", "score"}
        assert r["label"] == labels[int(p.argmax())]
        assert abs(r["score"] - p.max()) < 1e-5, (r, p)
        assert r["score"] > 0.9


def test_rebuilt_head_matches_the_file_metadata_and_tensors(model, stored):
    meta, tensors = stored
    assert json.loads(meta["architecture"]) == model.head.architecture()
    assert meta["labels"].split(",") == model.labels == ["negative", "neutral", "positive"]
    assert {k: tuple(v.shape) for k, v in model.head.state_dict().items()} == {
        k: tuple(v.shape) for k, v in tensors.items()
    }
    # Trained on the embeddings the service computes by default.
    assert meta["encoder_kernel"] == DEFAULT_KERNEL
    assert SENTIMENT_HEAD.stat().st_size < 2_000_000


def test_loading_rejects_metadata_that_disagrees_with_the_tensors(stored, tmp_path):
    meta, tensors = stored
    arch = json.loads(meta["architecture"])
    arch["hidden"] = 0 if arch["hidden"] else 64
    path = tmp_path / "head.safetensors"
    save_file(tensors, str(path), metadata={**meta, "architecture": json.dumps(arch)})
    with pytest.raises(RuntimeError):
        load_head(path)


def test_padding_does_not_change_a_rows_probabilities(model):
    rng = np.random.default_rng(0)
    rows = [rng.standard_normal((n, model.head.dim)).astype(np.float32) for n in (3, 17, 40)]
    together = model.probabilities(rows)
    alone = np.concatenate([model.probabilities([r]) for r in rows])
    np.testing.assert_allclose(together, alone, rtol=1e-5, atol=1e-6)


def test_attention_pooling_starts_as_the_mean():
    torch.manual_seed(0)
    mean, attention = SentimentHead(8, 3, "mean"), SentimentHead(8, 3, "attention")
    attention.classifier.load_state_dict(mean.classifier.state_dict())
    x, mask = torch.randn(2, 5, 8), torch.tensor([[True] * 5, [True] * 3 + [False] * 2])
    torch.testing.assert_close(attention(x, mask), mean(x, mask))
