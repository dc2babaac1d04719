"""The graph served with your own transformers models (tiny random ones built by the tests)."""

import pytest
import requests
from ray import serve
from samples import post

from deployments.ingress import Ingress
from deployments.ner import NER
from deployments.sentiment import Sentiment
from deployments.summary import Summary

pytestmark = pytest.mark.serve

SMALL_CPU = {"ray_actor_options": {"num_cpus": 0.1}}


def _config(path, **extra) -> dict:
    return {"backend": "transformers", "model": str(path), **extra}


@pytest.fixture(scope="module")
def tiny_url(url, tiny_models):
    """Stand-ins for config/hub.yaml's models: a cased BERT NER, an uncased DistilBERT (here of the
    same vocabulary, so only the case splits them) and BART."""
    app = Ingress.options(name="TinyIngress", user_config={"result_cache_bytes": 0}, **SMALL_CPU).bind(
        NER.options(user_config=_config(tiny_models["cased-ner"], window=24, stride=4), **SMALL_CPU).bind(),
        Sentiment.options(user_config=_config(tiny_models["sentiment"]), **SMALL_CPU).bind(),
        Summary.options(
            user_config=_config(tiny_models["summary"], max_length=12, min_length=2, num_beams=2), **SMALL_CPU
        ).bind(),
    )
    serve.run(app, name="tiny", route_prefix="/tiny")
    yield url + "/tiny"
    serve.delete("tiny", _blocking=False)  # its replicas go in the background


def test_tiny_models_serve_over_http_in_three_tokenizer_groups(tiny_url):
    texts = ["Apple Inc. said Tim Cook will visit Goldman Sachs in New York. " * 5, "Paris is lovely.", "Berlin."]
    handle = serve.get_deployment_handle("TinyIngress", app_name="tiny")
    before = handle.stats.remote().result()
    r = post(tiny_url, "/analyze/batch", {"texts": texts})
    assert r.status_code == 200, r.text
    after = handle.stats.remote().result()

    for text, out in zip(texts, r.json()["results"]):
        for e in out["ner"]:
            assert text[e["start"] : e["end"]] == e["word"] and e["entity_group"] in {"PER", "ORG", "LOC"}
        assert out["sentiment"]["label"] in {"NEGATIVE", "POSITIVE"}
        assert isinstance(out["summary"]["summary_text"], str) and out["summary"]["sentences"] == []
        assert out["timings"]["groups"] == 3
        assert {m["name"] for m in out["models"].values()} == {str(p) for p in _models(tiny_url)}

    # One vocabulary, but NER's tokenizer does not lower-case: it is a group of its own.
    groups = {tuple(g["tasks"]): g for g in after["groups"]}
    assert set(groups) == {("ner",), ("sentiment",), ("summary",)}
    tokenized = {tasks: g["tokenizations"] for tasks, g in groups.items()}
    tokenized_before = {tuple(g["tasks"]): g["tokenizations"] for g in before.get("groups", [])}
    batches = after["batches"] - before.get("batches", 0)
    assert batches >= 1
    for tasks, n in tokenized.items():  # each group tokenized once per batch
        assert n - tokenized_before.get(tasks, 0) == batches
    assert after["puts"] - before.get("puts", 0) == 3 * batches

    version = requests.get(tiny_url + "/version", timeout=30).json()
    assert sorted(g["tasks"] for g in version["tokenizer_groups"]) == [["ner"], ["sentiment"], ["summary"]]


def _models(tiny_url) -> set[str]:
    return {info["name"] for info in requests.get(tiny_url + "/version", timeout=30).json()["tasks"].values()}


def test_a_bad_model_path_stops_the_deployment_with_a_clear_error(url, tmp_path):
    missing = tmp_path / "no-such-model"
    bad = NER.options(name="BadNER", user_config=_config(missing), max_constructor_retry_count=1, **SMALL_CPU)
    with pytest.raises(RuntimeError, match="Deploying application bad failed"):
        serve.run(bad.bind(), name="bad", route_prefix="/bad")
    status = serve.status().applications["bad"].deployments["BadNER"]
    assert status.status == "DEPLOY_FAILED"
    assert f"ner: cannot load token-classification model '{missing}': no such directory" in status.message
    serve.delete("bad", _blocking=False)
