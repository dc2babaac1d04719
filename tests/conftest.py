import os
import shutil
import sys
import tempfile
from pathlib import Path

import pytest
from ray import serve

from nlpserve.on_ray import local
from nlpserve.tokens import Tokenizer


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Tests with a Ray of their own first (a stable sort keeps the rest in order): once the session's
    graph is up, its idle replicas take ~20 % of the machine from them."""
    items.sort(key=lambda item: item.get_closest_marker("own_ray") is None)


@pytest.fixture(scope="session")
def tokenizer() -> Tokenizer:
    return Tokenizer()


TESTS = Path(__file__).resolve().parent
METRICS_PORT = local.free_port()
GRPC_PORT = local.free_port()
# Serve's tracing on, every span to one JSON-lines file, but only where the caller sampled the trace
# (a traceparent with the sampled flag; ratio 0 for the rest): as a production setup would trace.
TRACE_FILE = Path(tempfile.mkdtemp(prefix="nlpserve-spans-"), "spans.jsonl")
TRACING = {
    "RAY_SERVE_TRACING_EXPORTER_IMPORT_PATH": "nlpserve.tracing:jsonl",
    "RAY_SERVE_TRACING_SAMPLING_RATIO": "0",
    "NLPSERVE_TRACE_FILE": str(TRACE_FILE),
}


@pytest.fixture(scope="session")
def url():
    # Behind HAProxy an ingress replica that stops keeps answering for a drain period (Serve's default
    # 30 s) while HAProxy stops sending to it; here 1 s: the tests replace and delete apps often, each
    # time waiting out the drain, and nothing sends to a test app as it goes.
    os.environ["RAY_SERVE_DIRECT_INGRESS_MIN_DRAINING_PERIOD_S"] = "1"
    # Workers import the fault deployments from tests/.
    with local.ray_environment(TRACING):
        base = local.start(
            grpc_port=GRPC_PORT,
            num_cpus=4,
            runtime_env={"env_vars": {"PYTHONPATH": str(TESTS)}},
            _metrics_export_port=METRICS_PORT,
        )
    _deploy_faulty_app()
    _deploy_small_app()
    yield base
    local.stop()
    shutil.rmtree(TRACE_FILE.parent, ignore_errors=True)


def _deploy_faulty_app():
    """A second app: real ingress and sentiment, NER that raises, a summarizer that never returns."""
    sys.path.insert(0, str(TESTS))
    from faults import BrokenNER, StuckSummary

    from deployments.encoder import Encoder
    from deployments.ingress import Ingress
    from deployments.sentiment import Sentiment

    ingress = Ingress.options(name="FaultyIngress", user_config={"task_timeout_s": 5.0})
    sentiment = Sentiment.options(name="FaultySentiment", user_config={})  # {}: loads its model at start
    encoder = Encoder.options(name="FaultyEncoder", user_config={})
    app = ingress.bind(BrokenNER.bind(), sentiment.bind(), StuckSummary.bind(), encoder.bind())
    serve.run(app, name="faulty", route_prefix="/faulty")


def _deploy_small_app():
    """A third app for overload: an ingress that takes 2 requests, queues 2 more, and whose only
    task (summary) takes 2 s, so a burst overflows it at once."""
    from faults import BrokenNER, StuckSummary

    from deployments.ingress import Ingress

    ingress = Ingress.options(
        name="SmallIngress",
        max_ongoing_requests=2,
        max_queued_requests=2,
        backpressure_config={"retry_after_s": 1},
        user_config={"task_timeout_s": 2.0, "result_cache_bytes": 0},
    )
    app = ingress.bind(BrokenNER.bind(), BrokenNER.options(name="BrokenSentiment").bind(), StuckSummary.bind())
    serve.run(app, name="small", route_prefix="/small")


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory) -> dict[str, Path]:
    import tiny

    return tiny.build(tmp_path_factory.mktemp("tiny"))


@pytest.fixture(scope="session")
def metrics_port(url) -> int:
    return METRICS_PORT


@pytest.fixture(scope="session")
def trace_file(url) -> Path:
    """Where the session graph's sampled spans go."""
    return TRACE_FILE


@pytest.fixture(scope="session")
def grpc_url(url) -> str:
    """The session graph's gRPC address (config/config.yaml's grpc_options, on a free port)."""
    return f"grpc://127.0.0.1:{GRPC_PORT}"
