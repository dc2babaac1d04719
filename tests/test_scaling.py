"""Each task deployment scales on its own load (Serve autoscaling), on the session's local Ray."""

import threading
import time
import uuid

import pytest
from ray import serve
from samples import NEWS, post

from deployments.encoder import Encoder
from deployments.ingress import Ingress
from deployments.ner import NER
from deployments.sentiment import Sentiment
from deployments.summary import Summary

pytestmark = [pytest.mark.serve, pytest.mark.slow]

# Quick to react, so the test is short; config/autoscale.yaml holds the calmer production values.
FAST = {
    "min_replicas": 1,
    "max_replicas": 3,
    "target_ongoing_requests": 1,
    "metrics_interval_s": 0.5,
    "look_back_period_s": 2,
    "upscale_delay_s": 1,
    "downscale_delay_s": 5,
}
SMALL = {"ray_actor_options": {"num_cpus": 0.05}}
# A head's call waits in its replica for the pass it reads, so at the Encoder's target a head looks at least
# as busy as the Encoder: as in config/autoscale.yaml, the heads target twice the Encoder's calls.
HEADS = {**FAST, "target_ongoing_requests": 2 * FAST["target_ongoing_requests"]}


def _replicas() -> dict[str, int]:
    deployments = serve.status().applications["auto"].deployments
    names = ("NER", "Sentiment", "Summary", "Encoder")
    return {name: deployments[name].replica_states.get("RUNNING", 0) for name in names}


def _wait(condition, seconds: float, history: list) -> bool:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        history.append(_replicas())
        if condition(history[-1]):
            return True
        time.sleep(1)
    return False


def test_sentiment_only_load_scales_what_carries_it_and_leaves_ner_and_summary_alone(url):
    """Sentiment is a small head over the shared encoder: under sentiment-only load the Encoder does
    the work and scales up; NER and Summary, with no load, stay at one replica; all come back down."""
    options = {"autoscaling_config": FAST, **SMALL}
    heads = {"autoscaling_config": HEADS, **SMALL}
    # As config/autoscale.yaml: the ingress keeps max_replicas x target calls in flight per deployment, so
    # the autoscaler sees the load (with the default, 1, the work would wait in the ingress instead).
    in_flight = FAST["max_replicas"] * FAST["target_ongoing_requests"]
    user_config = {"result_cache_bytes": 0, "max_calls_in_flight": in_flight}
    app = Ingress.options(name="AutoIngress", user_config=user_config, **SMALL).bind(
        NER.options(**options).bind(),
        Sentiment.options(**heads).bind(),
        Summary.options(**heads).bind(),
        Encoder.options(**options).bind(),  # sentiment's encoder: it carries the load with the head
    )
    serve.run(app, name="auto", route_prefix="/auto")
    stop, history, answers = threading.Event(), [], []

    def client(k: int) -> None:
        i = 0
        while not stop.is_set():
            i += 1
            text = f"{NEWS} ({uuid.uuid4().hex} {k} {i})"
            r = post(url, "/auto/analyze", {"text": text, "tasks": ["sentiment"]})
            answers.append(r.json()["sentiment"] if r.status_code == 200 else r.status_code)

    threads = [threading.Thread(target=client, args=(k,)) for k in range(8)]
    try:
        for t in threads:
            t.start()
        scaled = _wait(lambda r: r["Encoder"] > r["NER"], 120, history)
    finally:
        stop.set()
        for t in threads:
            t.join(90)
    try:
        assert scaled, history[-5:]
        assert all(r["NER"] == 1 and r["Summary"] == 1 for r in history)  # their load stayed zero
        bad = [a for a in answers if not (isinstance(a, dict) and "label" in a)]
        assert not bad, bad[:3]  # real sentiment answers, not task errors or HTTP errors
        assert _wait(lambda r: r["Encoder"] == r["Sentiment"] == 1, 120, history), history[-5:]
        print(f"\nreplicas (NER, Sentiment, Summary, Encoder) every second: {[tuple(r.values()) for r in history]}")
    finally:
        serve.delete("auto", _blocking=False)  # its replicas go in the background
