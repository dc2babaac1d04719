"""Bring-your-own transformers models, without Ray: tiny random models of real architectures."""

import json
import shutil

import pytest
import torch
from safetensors.torch import load_file

from nlpserve.models.hf import ModelLoadError, Seq2SeqSummarizer, SequenceClassifier, TokenClassifier, load
from nlpserve.tokens import Tokenizer, TokenizerSpec, default_spec

TEXTS = ["Apple Inc. said Tim Cook will visit Goldman Sachs in New York. " * 6, "Paris is lovely in May."]


@pytest.fixture(scope="module")
def ner(tiny_models):
    return TokenClassifier("ner", str(tiny_models["ner"]), window=24, stride=4)


def test_fingerprints_compare_tokenizers_not_model_families(tiny_models, tmp_path):
    bert, distil, bart = (
        TokenizerSpec.of(load(task, kind, str(tiny_models[task]))[1], task)
        for task, kind in [
            ("ner", "token-classification"),
            ("sentiment", "text-classification"),
            ("summary", "summarization"),
        ]
    )
    assert bert.fingerprint == distil.fingerprint  # BERT and DistilBERT classes, one vocabulary
    assert bart.fingerprint != bert.fingerprint
    assert default_spec().fingerprint != bert.fingerprint  # another WordPiece vocabulary
    # Same class and vocabulary, different normalizer (no lower-casing): a different group.
    cased = load("ner", "token-classification", str(tiny_models["cased-ner"]))[1]
    assert TokenizerSpec.of(cased, "cased").fingerprint != bert.fingerprint


def test_token_classifier_windows_long_texts_and_returns_pipeline_entities(ner):
    batch = Tokenizer(ner.spec)(TEXTS)
    assert batch.prefix and batch.suffix  # [CLS] ... [SEP] around every window
    first_window_end = batch.offsets[batch.span(0)][ner.size - 1][1]
    out = ner(batch, [0, 1])
    assert len(out) == 2
    for text, entities in zip(TEXTS, out):
        for e in entities:
            assert set(e) == {"entity_group", "score", "word", "start", "end"}
            assert e["entity_group"] in {"PER", "ORG", "LOC"} and 0 < e["score"] <= 1
            assert text[e["start"] : e["end"]] == e["word"]
    assert max(e["end"] for e in out[0]) > first_window_end  # tokens past the first window are labelled


def test_sequence_classifier_gives_one_label_per_text(tiny_models):
    model = SequenceClassifier("sentiment", str(tiny_models["sentiment"]), window=16, stride=4)
    out = model(Tokenizer(model.spec)(TEXTS), [1, 0])
    assert len(out) == 2
    for r in out:
        assert r["label"] in {"NEGATIVE", "POSITIVE"}
    # TEXTS[1] fits one window: its label and score are the softmax of the model's own forward pass.
    with torch.no_grad():
        probs = torch.softmax(model.model(**model.tokenizer(TEXTS[1], return_tensors="pt")).logits[0], dim=-1)
    assert out[0]["label"] == model.model.config.id2label[int(probs.argmax())]
    assert abs(out[0]["score"] - float(probs.max())) < 1e-5, (out[0], probs)


def test_seq2seq_summarizer_generates_within_its_length_bounds(tiny_models):
    model = Seq2SeqSummarizer("summary", str(tiny_models["summary"]), max_length=12, min_length=4, num_beams=2)
    batch = Tokenizer(model.spec)(TEXTS)
    assert batch.prefix == (0,) and batch.suffix == (2,)  # <s> ... </s>
    out = model(batch, [0, 1])
    for r in out:
        assert set(r) == {"summary_text", "sentences"} and r["summary_text"]
        assert len(model.tokenizer(r["summary_text"], add_special_tokens=False).input_ids) <= 12


def _copy(tiny_models, task, tmp_path):
    return shutil.copytree(tiny_models[task], tmp_path / task)


def test_missing_path_fails_with_the_task_and_the_path(tmp_path):
    missing = str(tmp_path / "nope")
    with pytest.raises(ModelLoadError, match=f"ner: cannot load token-classification model '{missing}': no such"):
        TokenClassifier("ner", missing)


def test_a_model_of_the_wrong_kind_is_refused(tiny_models):
    with pytest.raises(ModelLoadError, match=r"sentiment: .*DistilBertForSequenceClassification.*ForTokenClass"):
        load("sentiment", "token-classification", str(tiny_models["sentiment"]))


def test_pickle_weights_are_refused(tiny_models, tmp_path):
    path = _copy(tiny_models, "ner", tmp_path)
    torch.save(load_file(path / "model.safetensors"), path / "pytorch_model.bin")
    (path / "model.safetensors").unlink()
    with pytest.raises(ModelLoadError, match="no loadable safetensors weights"):
        load("ner", "token-classification", str(path))


def test_remote_code_is_never_run(tiny_models, tmp_path):
    path = _copy(tiny_models, "ner", tmp_path)
    config = json.loads((path / "config.json").read_text())
    config.update(model_type="evil", auto_map={"AutoConfig": "evil.EvilConfig"})
    (path / "config.json").write_text(json.dumps(config))
    (path / "evil.py").write_text("raise SystemExit('remote code ran')\n")
    with pytest.raises(ModelLoadError, match="ner: cannot load token-classification model .*config.json"):
        load("ner", "token-classification", str(path))


def test_the_checksum_covers_every_weight_shard_and_the_version_is_not_the_library_version(tiny_models, tmp_path):
    model, tokenizer = load("sentiment", "text-classification", str(tiny_models["sentiment"]))
    model.save_pretrained(tmp_path / "sharded", max_shard_size="20KB")
    tokenizer.save_pretrained(tmp_path / "sharded")
    assert len(list((tmp_path / "sharded").glob("*.safetensors"))) > 1
    with torch.no_grad():
        next(model.parameters()).add_(1.0)  # another model, same shapes
    model.save_pretrained(tmp_path / "changed", max_shard_size="20KB")
    tokenizer.save_pretrained(tmp_path / "changed")
    sharded = SequenceClassifier("sentiment", str(tmp_path / "sharded")).info()
    changed = SequenceClassifier("sentiment", str(tmp_path / "changed")).info()
    assert len(sharded["checksum"]) == 12 and sharded["checksum"] != changed["checksum"]
    assert sharded["version"] == "local"  # a directory: no hub commit (was transformers' own version)


def test_token_classifier_entities_equal_the_transformers_pipeline_on_one_window(ner):
    # TEXTS[1] fits one window: the entities, spans and scores of transformers' own pipeline
    # (aggregation "simple"), which the class follows.
    from transformers import pipeline

    reference = pipeline(
        "token-classification", model=ner.model, tokenizer=ner.tokenizer, aggregation_strategy="simple"
    )
    expected = [(e["entity_group"], e["start"], e["end"], float(e["score"])) for e in reference(TEXTS[1])]
    (got,) = ner(Tokenizer(ner.spec)(TEXTS[1:]), [0])
    assert [(e["entity_group"], e["start"], e["end"]) for e in got] == [x[:3] for x in expected]
    assert all(abs(e["score"] - x[3]) < 1e-5 for e, x in zip(got, expected)), (got, expected)
