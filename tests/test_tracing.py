"""Tracing: the pipeline's spans without Ray (a batch of two requests, tracing off, a failed task),
the two exporters, and the graph under Serve's native tracing, one trace per request.

The Serve test uses the session's graph, whose Ray starts with Serve's tracing variables (conftest):
every sampled span goes to a JSON-lines file (``nlpserve.tracing:jsonl``).
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections import defaultdict
from http.server import BaseHTTPRequestHandler, HTTPServer

import httpx
import pytest
from batches import run_batch
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from nlpserve import tracing
from nlpserve.dispatch import Reply
from nlpserve.pipeline import Item, Pipeline
from nlpserve.tokens import default_spec
from nlpserve.topology import Inputs, Topology

TASKS = ("ner", "sentiment", "summary")
DEPLOYMENTS = {"Ingress", "Encoder", "NER", "Sentiment", "Summary"}
CALL_OF = {"Encoder": "encode", "NER": "ner call", "Sentiment": "sentiment call", "Summary": "summary call"}
# Three different texts: a text answered from the result cache makes no task call, so no task spans.
TEXTS = [
    "Apple Inc. reported record revenue on Thursday. Tim Cook said growth will continue next year.",
    "Goldman Sachs in New York had expected less. Shares of Apple rose 3% in after-hours trading.",
    "Berlin's mayor opened the new airport on Sunday. Travellers said the queues were short.",
]
# Each request names itself (x-request-id, on the ingress replica's span). The first two continue their
# callers' traces (traceparent, sampled); the third sends none, so is not traced at sampling ratio 0.
REQUEST_IDS = ["tracing-test-1", "tracing-test-2"]
UNSAMPLED = "tracing-test-3"
CALLER_TRACES = ["a1" * 16, "b2" * 16]
HEADERS = [
    *({"x-request-id": r, "traceparent": f"00-{t}-{'1' * 16}-01"} for r, t in zip(REQUEST_IDS, CALLER_TRACES)),
    {"x-request-id": UNSAMPLED},
]


@pytest.fixture
def spans(monkeypatch):
    """Spans of nlpserve.tracing go to memory, through a provider of the test's own (no global one)."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    monkeypatch.setattr(tracing, "tracer", provider.get_tracer("test"))
    return provider.get_tracer("requests"), exporter


def fake_graph(seen: dict, fail: str | None = None) -> Pipeline:
    """A pipeline whose task and encoder calls, like Serve handle calls, note the span current when made."""

    class Encoding:
        def __init__(self, rows):
            self.vectors = asyncio.ensure_future(asyncio.sleep(0, {"rows": rows}))

        async def done(self, timeout):
            await asyncio.wait([self.vectors], timeout=timeout)

        def cancel(self):
            self.vectors.cancel()

    async def encode(refs, rows):
        seen["encode"] = trace.get_current_span()
        return Encoding(rows)

    def task(name):
        def call(refs, rows, encoded=None):
            seen[name] = trace.get_current_span()

            async def answer():
                await asyncio.gather(*(encoded or []))
                if name == fail:
                    raise ValueError("model exploded")
                results = [name] * sum(map(len, rows))
                return Reply(results, {"name": name}, len(results), time.time(), 0.1, 1, 1.5)

            return asyncio.ensure_future(answer())

        return call

    spec = default_spec()
    inputs = {
        "ner": Inputs(spec),
        "sentiment": Inputs(spec, "m"),
        "summary": Inputs(spec, "m"),
        "encoder": Inputs(spec, "m"),
    }

    async def ask():
        return inputs

    topology = Topology(ask, TASKS, ["encoder"])
    return Pipeline(topology, {t: task(t) for t in TASKS}, put=lambda batch: "ref", encoders={"encoder": encode})


def by_name(finished) -> dict[str, list]:
    out = defaultdict(list)
    for s in finished:
        out[s.name].append(s)
    return out


def test_a_batch_of_two_requests_traces_each_request_and_links_the_shared_calls(spans):
    requests, exporter = spans
    a, b = requests.start_span("request a"), requests.start_span("request b")
    items = [Item("first text", TASKS, trace=a, request=0), Item("second text", TASKS, trace=b, request=1)]
    seen = {}
    out = asyncio.run(run_batch(fake_graph(seen), items))
    assert [o["ner"] for o in out] == ["ner", "ner"]
    names = by_name(exporter.get_finished_spans())
    trace_of = {"a": a.get_span_context().trace_id, "b": b.get_span_context().trace_id}
    assert trace_of["a"] != trace_of["b"]

    # Each request's own trace: its wait for the batch, the batch with its tokenize and put, its wait for each task.
    for request, trace_id in trace_of.items():
        mine = {n: [s for s in ss if s.context.trace_id == trace_id] for n, ss in names.items()}
        for name in ("batch wait", "batch", "tokenize", "put", *TASKS):
            assert len(mine[name]) == 1, (request, name, mine[name])
        (batch,) = mine["batch"]
        assert mine["tokenize"][0].parent.span_id == batch.context.span_id
        assert batch.attributes["nlpserve.batch.requests"] == 2 and batch.attributes["nlpserve.batch.texts"] == 2
        assert mine["ner"][0].attributes["nlpserve.compute_ms"] == 1
    # The batch's times, the same in both traces.
    assert len({(s.start_time, s.end_time) for s in names["tokenize"]}) == 1

    # The shared calls: one span each, in the first request's trace, linked to the second's span, and
    # current when the call was made (Serve sends the current span's context with a handle call).
    for name, linked in (("encode", "batch"), *((f"{t} call", t) for t in TASKS)):
        (span,) = names[name]
        assert span.context.trace_id == trace_of["a"], name
        (other,) = [s for s in names[linked] if s.context.trace_id == trace_of["b"]]
        assert [link.context.span_id for link in span.links] == [other.context.span_id], name
        assert seen[name.removesuffix(" call")].get_span_context() == span.context, name
    assert names["encode"][0].kind == trace.SpanKind.PRODUCER and names["ner call"][0].kind == trace.SpanKind.CLIENT


def test_a_request_of_several_texts_has_one_span_per_step(spans):
    requests, exporter = spans
    root = requests.start_span("request")  # /analyze/batch: one request, its texts items of one batch
    asyncio.run(run_batch(fake_graph({}), [Item("one", TASKS, trace=root), Item("two", TASKS, trace=root)]))
    names = by_name(exporter.get_finished_spans())
    for name in ("batch wait", "batch", "tokenize", "put", "encode", *TASKS, *(f"{t} call" for t in TASKS)):
        assert len(names[name]) == 1, name
    assert names["batch"][0].attributes["nlpserve.batch.texts"] == 2 and not names["ner call"][0].links


def test_untraced_requests_make_no_spans(spans):
    _, exporter = spans
    seen = {}
    asyncio.run(run_batch(fake_graph(seen), [Item("a text", TASKS), Item("another", TASKS)]))
    assert exporter.get_finished_spans() == ()
    assert not any(span.is_recording() for span in seen.values())


def test_a_failed_task_marks_its_call_and_the_requests_waits(spans):
    requests, exporter = spans
    root = requests.start_span("request")
    out = asyncio.run(run_batch(fake_graph({}, fail="sentiment"), [Item("a text", TASKS, trace=root)]))
    assert out[0]["sentiment"]["code"] == "failed" and out[0]["ner"] == "ner"
    names = by_name(exporter.get_finished_spans())
    for name in ("sentiment call", "sentiment"):
        assert names[name][0].status.status_code == trace.StatusCode.ERROR, name
    assert names["sentiment"][0].status.description == "failed"
    assert names["ner"][0].status.status_code == trace.StatusCode.UNSET


def test_jsonl_writes_a_line_per_span_with_its_ids_and_links(tmp_path, monkeypatch):
    path = tmp_path / "spans.jsonl"
    monkeypatch.setenv("NLPSERVE_TRACE_FILE", str(path))
    provider = TracerProvider()
    for processor in tracing.jsonl():
        provider.add_span_processor(processor)
    tracer = provider.get_tracer("test")
    with tracer.start_as_current_span("parent") as parent:
        with tracer.start_as_current_span("child", links=[trace.Link(parent.get_span_context())]):
            pass
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    assert [r["name"] for r in rows] == ["child", "parent"]
    child, parent = rows
    assert child["trace_id"] == parent["trace_id"] and child["parent_id"] == parent["span_id"]
    assert child["links"] == [{"trace_id": parent["trace_id"], "span_id": parent["span_id"]}]


def test_otlp_sends_spans_to_a_collector(monkeypatch):
    """``otlp()`` as the README uses it, against a stand-in collector that decodes OTLP/HTTP protobuf."""
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

    received = []

    class Collector(BaseHTTPRequestHandler):
        def do_POST(self):
            body = self.rfile.read(int(self.headers["Content-Length"]))
            received.append((self.path, ExportTraceServiceRequest.FromString(body)))
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = HTTPServer(("127.0.0.1", 0), Collector)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", f"http://127.0.0.1:{server.server_port}")
        provider = TracerProvider()
        for processor in tracing.otlp():
            provider.add_span_processor(processor)
        provider.get_tracer("test").start_span("tokenize").end()
        provider.shutdown()  # flushes the batch
    finally:
        server.shutdown()
    ((path, request),) = received
    assert path == "/v1/traces"
    assert [s.name for rs in request.resource_spans for ss in rs.scope_spans for s in ss.spans] == ["tokenize"]


@pytest.mark.serve
def test_each_request_is_one_trace_through_every_deployment(url, trace_file):
    """The session's graph traces what its callers sample (conftest: Serve's tracing to a JSON-lines
    file, sampling ratio 0, so only a sampled traceparent starts a trace), behind HAProxy as served."""
    for text, headers in zip(TEXTS, HEADERS):
        r = httpx.post(f"{url}/analyze", json={"text": text}, headers=headers, timeout=120)
        assert r.status_code == 200, r.text
        assert not any("error" in r.json()[t] for t in TASKS), r.json()
    # A span is written as it ends, the ingress's after its answer went: wait until the file stops growing.
    last = -1
    while (size := trace_file.stat().st_size if trace_file.exists() else 0) != last:
        last = size
        time.sleep(1)

    rows = [json.loads(line) for line in trace_file.read_text().splitlines()]
    ingress = {
        r["attributes"].get("request_id"): r for r in rows if r["name"].startswith("replica_handle_request Ingress")
    }
    assert UNSAMPLED not in ingress and not any(r["attributes"].get("request_id") == UNSAMPLED for r in rows)
    for request_id, caller in zip(REQUEST_IDS, CALLER_TRACES):
        root = ingress[request_id]
        assert root["trace_id"] == caller  # the caller's trace goes on
        mine = [r for r in rows if r["trace_id"] == root["trace_id"]]
        by_id = {r["span_id"]: r for r in mine}
        names = {r["name"] for r in mine}
        # One tree: every span descends from the ingress replica's span, whose parent is the caller's.
        assert [r["name"] for r in mine if r["parent_id"] not in by_id] == [root["name"]], request_id
        # Serve's own spans: one per replica request, in every deployment of the graph.
        replicas = {r["attributes"]["deployment"] for r in mine if r["name"].startswith("replica_handle_request")}
        assert replicas >= DEPLOYMENTS, replicas
        # Ours, in the same trace.
        assert names >= {"batch wait", "batch", "tokenize", "put", "encode", *TASKS, *(f"{t} call" for t in TASKS)}
        # A model span in each replica that runs one, under Serve's span of that replica's call ...
        models = [r for r in mine if r["name"] == "model"]
        parents = {by_id[m["parent_id"]]["attributes"]["deployment"] for m in models}
        assert parents == DEPLOYMENTS - {"Ingress"}, parents
        # ... which descends from the ingress's span of that call: the context went with the handle call.
        for m in models:
            deployment = by_id[m["parent_id"]]["attributes"]["deployment"]
            up = ancestors(m, by_id)
            assert CALL_OF[deployment] in up, (deployment, up)


def ancestors(row: dict, by_id: dict[str, dict]) -> list[str]:
    """Names of a span's parent, its parent's parent, ... within one trace."""
    names = []
    while row["parent_id"] in by_id:
        row = by_id[row["parent_id"]]
        names.append(row["name"])
    return names
