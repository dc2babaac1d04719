"""The batch CLI: input parsing, resume bookkeeping, and its requests, against a fake service
(an http.server in a thread answering like the real one, also used by test_client.py), so no Ray is needed."""

import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from nlpserve.cli import Line, done_lines, main, parse
from nlpserve.schemas import TASKS

# What the fake service does with a request's path and JSON body (None for a GET): (status, headers, JSON
# answer), or None to never answer.
Respond = Callable[[str, dict | None], tuple[int, dict, dict] | None]
TIMINGS = {"batch_size": 1, "queue_ms": 0.0, "tokenize_ms": 0.0, "put_ms": 0.0, "tasks": {}}


def answer(text: str, tasks: list[str], failed: dict[str, str] | None = None) -> dict:
    """One /analyze answer shaped like the real one; ``failed`` maps a task to its error code."""
    ok = {"ner": [], "sentiment": {"label": "neutral", "score": 0.9}, "summary": {"summary_text": text}}
    failed = failed or {}
    result = {t: {"error": f"{t} broke", "code": failed[t]} if t in failed else ok[t] for t in tasks}
    return result | {"models": {}, "timings": TIMINGS}


def all_ok(path: str, body: dict | None) -> tuple[int, dict, dict]:
    """/healthz, or /analyze and /analyze/batch with every task done."""
    if path == "/healthz":
        return 200, {}, {"status": "ok"}
    tasks = body.get("tasks", list(TASKS))
    if path == "/analyze":
        return 200, {}, answer(body["text"], tasks)
    return 200, {}, {"results": [answer(t, tasks) for t in body["texts"]]}


@dataclass
class Request:
    at: float  # time.monotonic() on arrival
    method: str
    path: str
    body: dict | None


class FakeService:
    def __init__(self) -> None:
        self.respond: Respond = all_ok
        self.requests: list[Request] = []
        service = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                self.reply_to(None)

            def do_POST(self) -> None:
                self.reply_to(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))

            def reply_to(self, body: dict | None) -> None:
                service.requests.append(Request(time.monotonic(), self.command, self.path, body))
                reply = service.respond(self.path, body)
                if reply is None:
                    time.sleep(1)  # past the client's timeout; then the connection just closes
                    return
                status, headers, payload = reply
                data = json.dumps(payload).encode()
                self.send_response(status)
                for name, value in {"Content-Type": "application/json", **headers}.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}"

    def texts(self) -> list[str]:
        return [t for r in self.requests for t in r.body["texts"]]

    def __enter__(self) -> "FakeService":
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def service():
    with FakeService() as fake:
        yield fake


def run(service: FakeService, tmp_path, lines: list[bytes], *options: str) -> tuple[dict, dict]:
    """Runs the CLI on ``lines``; the output and errors files' records by line number."""
    src, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    src.write_bytes(b"".join(x + b"\n" for x in lines))
    options = ("--url", service.url, "--quiet", "--tasks", "ner", "sentiment", *options)
    main(["analyze", str(src), "-o", str(out), *options])
    return records(out), records(tmp_path / "out.errors.jsonl")


def records(path) -> dict[int, dict]:
    rows = [json.loads(x) for x in path.read_text().splitlines()]
    assert len(rows) == len({r["line"] for r in rows})  # no line recorded twice
    return {r["line"]: r for r in rows}


def test_parse_accepts_strings_and_objects_and_says_why_a_line_is_bad():
    assert parse(3, b'"hello"\n') == Line(3, 3, "hello")
    assert parse(4, '{"id": "a", "text": "café"}'.encode()) == Line(4, "a", "café")
    assert parse(5, b"{broken").startswith("not JSON")
    assert "string" in parse(6, b'{"id": 1}')
    assert "string" in parse(7, b"[1, 2]")
    assert parse(8, b'"   "') == "text is empty"
    assert parse(9, b'"caf\xe9"') == "not UTF-8: invalid continuation byte at byte 4 of the line"


def test_done_lines_reads_finished_lines_and_cuts_a_torn_last_line(tmp_path):
    out = tmp_path / "out.jsonl"
    assert done_lines(out) == set()
    out.write_text(json.dumps({"line": 1}) + "\n" + json.dumps({"line": 4}) + '\n{"line": 7, "ner"')
    assert done_lines(out) == {1, 4}
    assert out.read_text().endswith("}\n")  # the torn line is gone, so a re-run appends cleanly


def test_a_degraded_line_goes_to_the_errors_file_and_is_retried_on_resume(service, tmp_path):
    lines = [json.dumps(t).encode() for t in ("fine", "unlucky", "also fine")]
    service.respond = lambda path, body: (
        200,
        {},
        {"results": [answer(t, body["tasks"], {"ner": "timeout"} if t == "unlucky" else None) for t in body["texts"]]},
    )
    out, errors = run(service, tmp_path, lines)
    assert out.keys() == {1, 3}  # not written as if analyzed
    assert errors[2]["retry"] is True
    assert errors[2]["tasks"] == {"ner": {"error": "ner broke", "code": "timeout"}}
    assert "ner (timeout)" in errors[2]["error"]

    service.respond, service.requests = all_ok, []
    out, errors = run(service, tmp_path, lines)
    assert service.texts() == ["unlucky"]  # only the degraded line is sent again
    assert out.keys() == {1, 2, 3} and out[2]["ner"] == []
    assert errors == {}  # its old record is gone, so the line is recorded once


def test_a_line_of_bad_utf8_is_an_error_with_its_number_and_the_rest_is_analyzed(service, tmp_path):
    lines = [b'"first"', b'"caf\xff au lait"', b'"third"']
    out, errors = run(service, tmp_path, lines)
    assert out.keys() == {1, 3}
    assert errors[2]["error"].startswith("not UTF-8") and errors[2]["retry"] is False
    assert service.texts() == ["first", "third"]  # nothing sent with a replacement character


def test_a_503_is_retried_after_its_retry_after(service, tmp_path):
    def respond(path: str, body: dict) -> tuple[int, dict, dict]:
        if len(service.requests) == 1:
            return 503, {"Retry-After": "1"}, {"detail": "overloaded"}
        return all_ok(path, body)

    service.respond = respond
    out, errors = run(service, tmp_path, [b'"one"', b'"two"'])
    assert out.keys() == {1, 2} and errors == {}
    first, second = (r.at for r in service.requests)
    assert second - first >= 0.95  # the service's 1 s, not the first backoff step (0.5 s)


def test_a_read_timeout_is_retried_at_most_retries_times_and_the_lines_are_kept_for_the_next_run(service, tmp_path):
    service.respond = lambda path, body: None
    out, errors = run(service, tmp_path, [b'"slow"', b'"slower"'], "--timeout", "0.2", "--retries", "2")
    assert len(service.requests) == 3  # the first try and 2 retries
    assert out == {}
    assert errors.keys() == {1, 2} and all(e["retry"] and "ReadTimeout" in e["error"] for e in errors.values())


def test_each_request_asks_the_service_to_answer_before_the_client_times_out(service, tmp_path):
    run(service, tmp_path, [b'"one"'], "--timeout", "30")
    assert [r.body["deadline_ms"] for r in service.requests] == [27_000]


def test_a_refused_batch_is_split_and_only_the_refused_line_is_a_final_error(service, tmp_path):
    def respond(path: str, body: dict) -> tuple[int, dict, dict]:
        if "huge" in body["texts"]:
            return 413, {}, {"detail": "a text is over max_text_chars (100000)"}
        return all_ok(path, body)

    service.respond = respond
    out, errors = run(service, tmp_path, [b'"small"', b'"huge"', b'"also small"'])
    assert out.keys() == {1, 3}
    assert errors == {2: {"line": 2, "error": "HTTP 413: a text is over max_text_chars (100000)", "retry": False}}
    whole, *one_by_one = (r.body["texts"] for r in service.requests)
    assert whole == ["small", "huge", "also small"] and one_by_one == [["small"], ["huge"], ["also small"]]
