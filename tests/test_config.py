"""The shipped Serve config is valid for Serve and for our own settings models."""

from pathlib import Path

import pytest
import yaml
from ray.serve.schema import ServeDeploySchema

from nlpserve.schemas import EncoderSettings, IngressSettings, NERSettings, SentimentSettings, SummarySettings

CONFIGS = Path(__file__).resolve().parents[1] / "config"
SETTINGS = {
    "Ingress": IngressSettings,
    "Encoder": EncoderSettings,
    "NER": NERSettings,
    "Sentiment": SentimentSettings,
    "Summarize": SummarySettings,
}


@pytest.mark.parametrize("config", ["config.yaml", "hub.yaml"])
def test_config_is_a_valid_serve_config_for_every_deployment(config):
    schema = ServeDeploySchema.model_validate(yaml.safe_load((CONFIGS / config).read_text()))
    assert schema.http_options.host == "127.0.0.1"
    (app,) = schema.applications
    assert app.import_path == "graph:app"
    deployments = {d.name: d for d in app.deployments}
    assert set(deployments) == set(SETTINGS)
    total_cpus = 0.0
    for name, d in deployments.items():
        SETTINGS[name](**d.user_config)  # raises on an unknown or invalid key
        assert 0 < d.ray_actor_options.num_cpus < 1
        total_cpus += d.ray_actor_options.num_cpus * d.num_replicas
    assert total_cpus <= 2.0  # fits the 2-core machine it is sized for
    ingress = deployments["Ingress"]
    assert ingress.max_queued_requests > 0 and ingress.backpressure_config.retry_after_s  # overload: fast 503s
    tasks = [d for name, d in deployments.items() if name not in ("Ingress", "Encoder")]
    backends = {d.user_config.get("backend", "default") for d in tasks}
    assert backends == ({"transformers"} if config == "hub.yaml" else {"default"})
