"""Readiness, health checks and the Grafana dashboard, without Ray (docs/operations.md).
tests/test_serve.py checks /readyz and the dashboard's metrics against the running graph."""

import ast
import asyncio
import json
import re
from pathlib import Path

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from pydantic import ValidationError

from deployments.base import TaskReplica
from deployments.encoder import Encoder
from deployments.guard import RequestGuard
from deployments.ingress import Ingress
from nlpserve.schemas import IngressSettings
from nlpserve.tokens import default_spec
from nlpserve.topology import Inputs

ROOT = Path(__file__).resolve().parents[1]
DASHBOARD = ROOT / "docs" / "grafana" / "nlpserve.json"

# The Serve series the dashboard may chart: tests/test_serve.py finds each in a real scrape after traffic.
SERVE_SERIES = {
    "ray_serve_num_http_requests_total",
    "ray_serve_num_http_error_requests_total",
    "ray_serve_http_request_latency_ms_bucket",
    "ray_serve_deployment_processing_latency_ms_bucket",
    "ray_serve_replica_processing_queries",
    "ray_serve_deployment_queued_queries",
    "ray_serve_deployment_replica_healthy",
    "ray_serve_deployment_error_counter_total",
}
# What Prometheus calls the series of each kind of metric (Ray adds the ray_ prefix).
SUFFIXES = {"Counter": ("_total",), "Histogram": ("_bucket", "_sum", "_count"), "Gauge": ("",)}
PROMQL_WORDS = {"and", "or", "unless", "bool", "offset"}


def series(expr: str) -> set[str]:
    """The series a PromQL expression reads: identifiers that are neither functions nor label names."""
    expr = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)  # label values
    expr = re.sub(r"\{[^}]*\}|\[[^\]]*\]", " ", expr)  # matchers, ranges
    expr = re.sub(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", expr)  # label lists
    # Not after a digit (5m is a duration); a name followed by ( is a function.
    names = re.findall(r"(?<![\w:.])[A-Za-z_:][\w:]*(?![\w:])(?!\s*\()", expr)
    return set(names) - PROMQL_WORDS


def queries(dashboard: dict) -> list[str]:
    """Every PromQL expression of the dashboard's panels (rows' panels included) and variables."""
    panels = [*dashboard["panels"], *(p for row in dashboard["panels"] for p in row.get("panels", []))]
    exprs = [t["expr"] for p in panels for t in p.get("targets", [])]
    for variable in dashboard["templating"]["list"]:
        if variable["type"] == "query":  # label_values(<series>, <label>)
            exprs.append(re.sub(r"^label_values\((.*),\s*\w+\)$", r"\1", variable["query"]["query"]))
    return exprs


def charted() -> set[str]:
    return set().union(*map(series, queries(json.loads(DASHBOARD.read_text()))))


def defined() -> dict[str, str]:
    """{name as exported: metric kind} of every metric the deployments define through ray.serve.metrics."""
    out = {}
    for path in (ROOT / "deployments").glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            call = node.func if isinstance(node, ast.Call) else None
            if isinstance(call, ast.Attribute) and ast.unparse(call.value) == "metrics" and call.attr in SUFFIXES:
                out["ray_" + ast.literal_eval(node.args[0])] = call.attr
    return out


@pytest.mark.parametrize(
    "expr,names",
    [
        (
            'sum by (task, kind) (rate(ray_nlpserve_task_failure_total{kind="timeout"}[5m]))',
            {"ray_nlpserve_task_failure_total"},
        ),
        (
            'histogram_quantile(0.95, sum by (le) (rate(x_bucket{application=~"$application"}[$__rate_interval])))',
            {"x_bucket"},
        ),
        ("sum(rate(a_total[1m])) / sum(rate(b_total[1m])) > bool 0", {"a_total", "b_total"}),
        ('c{note="rate(d)"} offset 5m', {"c"}),
    ],
)
def test_the_series_of_an_expression_are_found(expr, names):
    assert series(expr) == names


def test_the_dashboard_charts_every_project_metric_by_its_exported_names():
    """A misspelt series, or one of the wrong kind (a counter without _total), fails here."""
    metrics = defined()
    assert {"ray_nlpserve_task_failures", "ray_nlpserve_encoded_texts"} <= set(metrics)  # both files are read
    exported = {name + suffix: name for name, kind in metrics.items() for suffix in SUFFIXES[kind]}
    ours = {name for name in charted() if name.startswith("ray_nlpserve_")}
    assert ours - set(exported) == set(), "not defined in deployments/, or not under that name"
    assert set(metrics) - {exported[name] for name in ours} == set(), "a metric with no panel"


def test_the_dashboard_charts_only_serve_series_checked_against_a_scrape():
    others = {name for name in charted() if not name.startswith("ray_nlpserve_")}
    assert others - SERVE_SERIES == set(), "add it to SERVE_SERIES, which test_serve.py checks against a scrape"
    assert SERVE_SERIES - others == set(), "in SERVE_SERIES but not charted"


def test_every_query_reads_the_datasource_variable():
    dashboard = json.loads(DASHBOARD.read_text())
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource" and variables["datasource"]["query"] == "prometheus"
    panels = [p for p in dashboard["panels"] if p["type"] != "row"]
    assert panels and len({p["id"] for p in dashboard["panels"]}) == len(dashboard["panels"])
    for p in panels:
        assert p["datasource"]["uid"] == "${datasource}", p["title"]
        assert p["targets"] and all(t["datasource"]["uid"] == "${datasource}" for t in p["targets"]), p["title"]
        assert all('application=~"$application"' in t["expr"] for t in p["targets"]), p["title"]


# Readiness: the Ingress's own class, with stand-ins for the deployment handles.


class Method:
    def __init__(self, handle: "Handle") -> None:
        self.handle = handle

    def remote(self):
        async def answer():
            if isinstance(self.handle.reads, BaseException):
                raise self.handle.reads
            return self.handle.reads

        return answer()


class Handle:
    """A deployment whose ``inputs()`` answers ``reads`` (an Inputs), or raises it (an exception)."""

    def __init__(self, reads: Inputs | BaseException) -> None:
        self.reads = reads
        self.inputs = Method(self)

    def remote(self, *args) -> None:
        raise AssertionError("a task call: these tests run no batch")


def reads(encoder: str | None = None) -> Handle:
    return Handle(Inputs(default_spec(), encoder))


def ingress(ner: Handle, sentiment: Handle, summary: Handle, encoder: Handle | None):
    cls = Ingress.func_or_class.__mro__[1]  # the class itself, under serve.ingress's ASGI wrapper
    return cls(ner, sentiment, summary, encoder)


async def probe(app) -> tuple[int, dict]:
    answer = await app.readyz()
    return answer.status_code, json.loads(answer.body)


def test_readyz_names_a_task_that_cannot_say_what_it_reads_until_it_does():
    async def run():
        ner = Handle(RuntimeError("model not loaded"))
        app = ingress(ner, reads("minilm"), reads("minilm"), reads("minilm"))
        first = await probe(app)  # a new ingress asks at once: no batch has run
        ner.reads = Inputs(default_spec())
        return first, await probe(app)

    first, second = asyncio.run(run())
    assert first == (503, {"status": "not ready", "missing": {"ner": "did not say what it reads (RuntimeError)"}})
    assert second == (200, {"status": "ready"})  # that round was stale: asked again


def test_readyz_names_heads_whose_encoder_no_deployment_serves():
    status, body = asyncio.run(probe(ingress(reads(), reads("minilm"), reads("minilm"), None)))
    assert status == 503
    assert body["missing"] == dict.fromkeys(["sentiment", "summary"], "no encoder deployment serves encoder minilm")


def test_readyz_names_an_encoder_that_cannot_say_what_it_reads():
    status, body = asyncio.run(probe(ingress(reads(), reads("minilm"), reads(), Handle(TimeoutError()))))
    assert status == 503
    assert body["missing"] == {
        "encoder": "did not say what it reads (TimeoutError)",
        "sentiment": "no encoder deployment serves encoder minilm",
    }


@pytest.mark.parametrize("path", ["/readyz", "/healthz"])
@pytest.mark.parametrize("root_path", ["", "/faulty"])
def test_probes_answer_any_host_and_other_routes_do_not(path, root_path):
    app = FastAPI()
    app.state.settings = IngressSettings()
    app.add_middleware(RequestGuard, state=app.state)
    app.get(path)(lambda: {"status": "ok"})
    app.post(path)(lambda: {"status": "ok"})
    client = TestClient(app, base_url="http://127.0.0.1:8000", root_path=root_path)
    node = {"host": "10.0.3.7:8000"}  # a load balancer's probe: the node's IP as Host
    assert client.get(root_path + path, headers=node).status_code == 200
    assert client.post(root_path + path, headers=node).status_code == 400  # only GET is a probe


# Health checks: Serve calls check_health on every replica every health_check_period_s.


class Summary(TaskReplica):
    task = "summary"


@pytest.mark.parametrize("replica", [Summary, Encoder.func_or_class], ids=["task", "encoder"])
def test_a_replica_whose_reconfigure_failed_fails_its_health_check_until_one_succeeds(replica, monkeypatch):
    r = replica()
    r.check_health()  # bound without a user_config: no model until its first call, and healthy
    with pytest.raises(ValidationError):
        asyncio.run(r.reconfigure({"torch_threads": 0}))
    with pytest.raises(RuntimeError, match="reconfigure failed: ValidationError"):
        r.check_health()
    monkeypatch.setattr(r, "_configure", lambda config: None)  # a reconfigure that succeeds, without a model load
    asyncio.run(r.reconfigure({}))
    r.check_health()


def test_a_task_replica_knows_what_it_reads_once_its_model_loads(monkeypatch):
    """The ingress asks at /readyz and before the first request; the answer must not wait for a tokenizer
    to load then (the default spec loads transformers), on the first request's clock."""
    r = Summary()
    asyncio.run(r.reconfigure({}))
    monkeypatch.setattr(type(r.model), "spec", property(lambda model: pytest.fail("spec read at the question")))
    assert r.inputs() == Inputs(default_spec(), r.model.encoder)
