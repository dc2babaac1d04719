"""OpenTelemetry spans for what Serve's own spans do not show, and the span processors to export them.

Serve traces when ``RAY_SERVE_TRACING_EXPORTER_IMPORT_PATH`` names a function that returns span
processors (``otlp`` or ``jsonl`` below): every proxy and replica then makes a tracer provider with
them, a span per HTTP request, per handle call and per replica request, and carries the trace
context over HTTP (``traceparent``) and through handle calls. This module adds a request's wait for
its batch, the batch's tokenization and ``ray.put``, the encoder call, each task call and each
replica's model time. Spans are made only under a span that records, so with tracing off (the
default) or a request not sampled nothing here makes a span.

The ingress batches requests, so some work is done once for several requests:
- steps in the ingress's own process (tokenize, put) are recorded in each request's trace, with the
  batch's measured times and size;
- a remote call (the encoder, a task) and a replica's model pass are one span, in the trace of the
  first request they serve, linked to the spans of the others.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterable, Sequence
from contextlib import AbstractContextManager, nullcontext

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.trace import Link, Span, SpanKind, Status, StatusCode

tracer = trace.get_tracer("nlpserve")
CLIENT, PRODUCER = SpanKind.CLIENT, SpanKind.PRODUCER
# Per tokenizer group of a batch: (tokenize start, put start, put end, texts tokenized), perf_counter times.
Step = tuple[float, float, float, int]


def recording(ctx: Context | None) -> Span | None:
    """The span of a trace context (``serve.get_trace_context()``) if it records, else None."""
    if ctx is None:
        return None
    span = trace.get_current_span(ctx)
    return span if span.is_recording() else None


def wall(perf: float) -> int:
    """Nanoseconds since the epoch, as OpenTelemetry wants, of a ``time.perf_counter()`` reading."""
    return time.time_ns() - round((time.perf_counter() - perf) * 1e9)


def _attributes(attributes: dict | None) -> dict:
    return {k: v for k, v in (attributes or {}).items() if v is not None}  # OpenTelemetry warns on None


def _under(parents: Iterable[Span | None]) -> tuple[Context, list[Link]] | None:
    """The context of the first of ``parents`` and links to the others; None without one."""
    distinct = list({id(p): p for p in parents if p is not None}.values())
    if not distinct:
        return None
    return trace.set_span_in_context(distinct[0]), [Link(p.get_span_context()) for p in distinct[1:]]


def begin(
    name: str,
    parents: Iterable[Span | None],
    kind: SpanKind = SpanKind.INTERNAL,
    attributes: dict | None = None,
    start: int | None = None,
) -> Span | None:
    """A span under the first of ``parents``, linked to the others (work shared by several requests
    is one span, in the first one's trace), from ``start`` (``wall``) or now; None without a parent."""
    under = _under(parents)
    if under is None:
        return None
    return tracer.start_span(
        name, under[0], kind=kind, attributes=_attributes(attributes), links=under[1], start_time=start
    )


def each(name: str, parents: Iterable[Span | None]) -> list[Span]:
    """A span ``name`` under each distinct one of ``parents`` (one per request), from now."""
    return [begin(name, [p]) for p in {id(p): p for p in parents if p is not None}.values()]


def record(
    name: str, parents: Iterable[Span | None], start: int, end: int, attributes: dict | None = None
) -> Span | None:
    """A finished span from ``start`` to ``end`` (``wall``), placed as ``begin`` places it."""
    span = begin(name, parents, attributes=attributes, start=start)
    if span is not None:
        span.end(end_time=end)
    return span


def using(span: Span | None) -> AbstractContextManager:
    """Makes ``span`` current for a block: Serve sends the current span's context with a handle call."""
    return trace.use_span(span) if span is not None else nullcontext()


def end(spans: Iterable[Span | None], attributes: dict | None = None, error: str | None = None) -> None:
    """Ends each of ``spans`` once, with ``attributes`` and, if given, an error status."""
    for span in {id(s): s for s in spans if s is not None}.values():
        span.set_attributes(_attributes(attributes))
        if error is not None:
            span.set_status(Status(StatusCode.ERROR, error))
        span.end()


def batch_spans(
    traces: Sequence[Span | None], received: Sequence[float], start: float, steps: list[Step], attributes: dict
) -> list[Span | None]:
    """Per item of a batch, a "batch" span in its request's trace (None for an untraced item), after
    a "batch wait" span from the request's arrival to the batch's start, with a "tokenize" and a
    "put" span per tokenizer group: the batch's times and ``attributes``, shared by every request in
    it. The caller ends them (``end``) once the batch's calls are sent."""
    requests = {id(t): (t, wall(r)) for t, r in zip(traces, received) if t is not None}
    start_ns, steps_ns = wall(start), [(wall(t0), wall(t1), wall(t2), texts) for t0, t1, t2, texts in steps]
    batch = {}
    for key, (parent, arrived) in requests.items():
        record("batch wait", [parent], arrived, start_ns)
        span = batch[key] = begin("batch", [parent], attributes=attributes, start=start_ns)
        for t0, t1, t2, texts in steps_ns:
            record("tokenize", [span], t0, t1, {"nlpserve.tokenized_texts": texts, **attributes})
            record("put", [span], t1, t2, attributes)
    return [batch.get(id(t)) for t in traces]


class JsonLinesExporter(SpanExporter):
    """Appends each span to a file as one JSON line. Every process of a local cluster may append to
    the same file: one ``write`` per export, in append mode, so lines do not interleave."""

    def __init__(self, path: str) -> None:
        self.path = path

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        lines = "".join(json.dumps(_row(s)) + "\n" for s in spans).encode()
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, lines)
        finally:
            os.close(fd)
        return SpanExportResult.SUCCESS


def _ids(ctx: trace.SpanContext) -> dict:
    return {"trace_id": f"{ctx.trace_id:032x}", "span_id": f"{ctx.span_id:016x}"}


def _row(span: ReadableSpan) -> dict:
    return {
        "name": span.name,
        **_ids(span.get_span_context()),
        "parent_id": f"{span.parent.span_id:016x}" if span.parent else None,
        "kind": span.kind.name,
        "start_ns": span.start_time,
        "end_ns": span.end_time,
        "status": span.status.status_code.name,
        "attributes": dict(span.attributes or {}),
        "links": [_ids(link.context) for link in span.links],
        "pid": os.getpid(),
    }


def jsonl() -> list[SpanProcessor]:
    """Span processors that append every span, as it ends, to the file ``$NLPSERVE_TRACE_FILE`` as
    JSON lines: for tests and a quick look (one write per span), not for production."""
    return [SimpleSpanProcessor(JsonLinesExporter(os.environ["NLPSERVE_TRACE_FILE"]))]


def otlp() -> list[SpanProcessor]:
    """Span processors that send spans in batches to an OpenTelemetry collector over OTLP/HTTP. The
    exporter reads OpenTelemetry's own variables: ``OTEL_EXPORTER_OTLP_ENDPOINT`` (default
    ``http://localhost:4318``), ``OTEL_EXPORTER_OTLP_HEADERS``, ...; needs the ``otlp`` extra."""
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    return [BatchSpanProcessor(OTLPSpanExporter())]
