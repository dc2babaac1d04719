"""The shipped Serve config is valid for Serve and for our own settings models."""

from fnmatch import fnmatch
from pathlib import Path

import pytest
import yaml
from ray.serve.schema import ServeDeploySchema
from served import replica_options

from nlpserve.schemas import EncoderSettings, IngressSettings, NERSettings, SentimentSettings, SummarySettings

CONFIGS = Path(__file__).resolve().parents[1] / "config"
SETTINGS = {
    "Ingress": IngressSettings,
    "Encoder": EncoderSettings,
    "NER": NERSettings,
    "Sentiment": SentimentSettings,
    "Summary": SummarySettings,
}


@pytest.mark.parametrize("config", ["config.yaml", "hub.yaml"])
def test_config_is_a_valid_serve_config_for_every_deployment(config):
    schema = ServeDeploySchema.model_validate(yaml.safe_load((CONFIGS / config).read_text()))
    assert schema.http_options.host == "127.0.0.1"
    (app,) = schema.applications
    assert app.import_path == "graph:app"
    deployments = {d.name: d for d in app.deployments}
    assert set(deployments) == set(SETTINGS)
    for name, d in deployments.items():
        SETTINGS[name](**d.user_config)  # raises on an unknown or invalid key
    served = replica_options(yaml.safe_load((CONFIGS / config).read_text()))
    assert all(0 < o["num_cpus"] < 1 for o in served.values())
    assert sum(o["num_cpus"] * o["replicas"] for o in served.values()) <= 2.0  # fits the 2-core machine
    ingress = served["Ingress"]
    assert ingress["max_queued_requests"] > 0 and ingress["retry_after_s"]  # overload: fast 503s
    tasks = [d for name, d in deployments.items() if name not in ("Ingress", "Encoder")]
    backends = {d.user_config.get("backend", "default") for d in tasks}
    assert backends == ({"transformers"} if config == "hub.yaml" else {"default"})


def _flat(x, prefix: str = "") -> dict:
    """{"applications.nlp.deployments.NER.user_config.backend": value, ...}: lists of named items by name."""
    if isinstance(x, dict):
        return {k: v for key, value in x.items() for k, v in _flat(value, f"{prefix}{key}.").items()}
    if isinstance(x, list) and x and all(isinstance(i, dict) and "name" in i for i in x):
        return {k: v for i in x for k, v in _flat(i, f"{prefix}{i['name']}.").items()}
    return {prefix[:-1]: x}


def _set_keys(name: str) -> dict:
    schema = ServeDeploySchema.model_validate(yaml.safe_load((CONFIGS / name).read_text()))
    return _flat(schema.model_dump(exclude_unset=True))


APP = "applications.nlp."
# What each profile may change from config/config.yaml; anything else must stay the same (no drift).
MAY_DIFFER = {
    "autoscale.yaml": [
        APP + "deployments.*.num_replicas",  # replaced by autoscaling_config
        APP + "deployments.*.autoscaling_config.*",
        APP + "deployments.*.ray_actor_options.num_cpus",
        APP + "deployments.Ingress.user_config.max_calls_in_flight",  # room for the calls of more replicas
    ],
    "hub.yaml": [
        APP + "deployments.*.ray_actor_options.num_cpus",
        APP + "deployments.NER.user_config.*",
        APP + "deployments.Sentiment.user_config.*",
        APP + "deployments.Summary.user_config.*",
        APP + "runtime_env.env_vars.HF_HUB_OFFLINE",  # hub models may download
        APP + "runtime_env.env_vars.TRANSFORMERS_OFFLINE",
    ],
}


@pytest.mark.parametrize("profile", sorted(MAY_DIFFER))
def test_a_profile_differs_from_config_yaml_only_where_it_means_to(profile):
    base, other = _set_keys("config.yaml"), _set_keys(profile)
    differ = sorted(k for k in base.keys() | other.keys() if base.get(k) != other.get(k))
    assert differ  # a profile that changed nothing would be a copy
    assert [k for k in differ if not any(fnmatch(k, p) for p in MAY_DIFFER[profile])] == []


def test_the_autoscale_profile_lets_the_autoscaler_see_the_load():
    """The ingress keeps at most max_calls_in_flight calls per deployment in flight and holds the rest back:
    with fewer than max_replicas x target_ongoing_requests, no deployment could ever be seen loaded enough to
    grow to its maximum."""
    schema = ServeDeploySchema.model_validate(yaml.safe_load((CONFIGS / "autoscale.yaml").read_text()))
    (app,) = schema.applications
    deployments = {d.name: d for d in app.deployments}
    in_flight = IngressSettings(**deployments["Ingress"].user_config).max_calls_in_flight
    for name in ("Encoder", "NER"):  # the deployments the ingress calls first (the heads ride on the Encoder's)
        scaling = deployments[name].autoscaling_config
        assert in_flight >= scaling["max_replicas"] * scaling["target_ongoing_requests"], name
