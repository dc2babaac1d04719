"""The batch CLI: input parsing, resume bookkeeping, and its requests, against a fake service
(an http.server in a thread answering like the real one, also used by test_client.py), so no Ray is needed."""

import ast
import codecs
import json
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import yaml

from nlpserve import cli
from nlpserve.cli import main
from nlpserve.client import AsyncClient
from nlpserve.jsonl import Line, done_lines, parse
from nlpserve.schemas import TASKS

CONFIGS = Path(__file__).resolve().parents[1] / "config"
# What the fake service does with a request's path and JSON body (None for a GET): (status, headers, answer:
# JSON, or bytes sent as they are), or None to never answer.
Respond = Callable[[str, dict | None], tuple[int, dict, dict | list | bytes] | None]
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
                data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
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
    assert parse(10, b"  \r\n") == "blank line"


def test_parse_refuses_a_lone_surrogate_which_no_request_can_carry():
    # Valid JSON, but its \ud800 escape decodes to half a character: no UTF-8 request body or Arrow string holds it.
    text = "text has a lone surrogate \\ud800 at character 6, which UTF-8 cannot encode"
    assert parse(1, b'{"text": "Paris \\ud800 x"}') == text
    ident = "id has a lone surrogate \\udc80, which UTF-8 cannot encode"
    assert parse(2, b'{"id": ["a", "\\udc80"], "text": "fine"}') == ident
    assert parse(3, b'"\\ud83d\\ude00 ok"') == Line(3, 3, "\U0001f600 ok")  # a pair is one character


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


@pytest.mark.parametrize(
    "status, detail",
    [
        (413, "a text is over max_text_chars (100000)"),
        (422, [{"type": "value_error", "loc": ["body", "texts", 1], "msg": "Value error, texts[1]: blank"}]),
    ],
)
def test_a_refused_batch_is_split_and_only_the_refused_line_is_a_final_error(service, tmp_path, status, detail):
    def respond(path: str, body: dict) -> tuple[int, dict, dict]:
        if "huge" in body["texts"]:
            return status, {}, {"detail": detail}
        return all_ok(path, body)

    service.respond = respond
    out, errors = run(service, tmp_path, [b'"small"', b'"huge"', b'"also small"'])
    assert out.keys() == {1, 3}
    assert errors == {2: {"line": 2, "error": f"HTTP {status}: {detail}", "retry": False}}
    whole, *one_by_one = (r.body["texts"] for r in service.requests)
    assert whole == ["small", "huge", "also small"] and one_by_one == [["small"], ["huge"], ["also small"]]


def like_the_service(path: str, body: dict) -> tuple[int, dict, dict]:
    """all_ok, but a batch with a text over max_text_chars is refused with the service's 413."""
    for i, text in enumerate(body["texts"]):
        if len(text) > 100_000:
            return 413, {}, {"detail": f"texts[{i}] is {len(text)} characters; the limit is 100000"}
    return all_ok(path, body)


# Each line of a hostile file, and the start of its error (None: a good line, analyzed).
HOSTILE = [
    (codecs.BOM_UTF8 + b'{"id": "bom", "text": "first"}', None),  # a BOM at the start of the file, from Notepad
    (b'{"id": "s", "text": "Paris \\ud800 x"}', "text has a lone surrogate \\ud800 at character 6"),
    (b'{"id": "\\udc80", "text": "fine"}', "id has a lone surrogate \\udc80"),
    (b'{"id": "nul", "text": "nul \\u0000 inside"}', None),  # escaped: valid JSON, the service takes it
    (b'"raw \x00 nul"', "not JSON: Invalid control character"),  # a raw NUL byte is not
    (json.dumps("x" * 1_000_000).encode(), "HTTP 413: texts[0] is 1000000 characters; the limit is 100000"),
    (b'{"id": "dup", "text": "one"}', None),
    (b'{"id": "dup", "text": "two"}', None),  # the same id: both analyzed, told apart by their line numbers
    (b"", "blank line"),
    (b" \t ", "blank line"),
    (b'"last"', None),
]


def test_hostile_lines_each_end_in_one_file_with_their_reason_and_a_rerun_writes_nothing(service, tmp_path):
    service.respond = like_the_service
    lines = [x + b"\r" for x, _ in HOSTILE]  # CRLF line endings
    out, errors = run(service, tmp_path, lines, "--batch-size", "4")
    assert out.keys() == {n for n, (_, why) in enumerate(HOSTILE, 1) if why is None}
    for number, (_, why) in enumerate(HOSTILE, 1):
        if why is not None:
            assert errors[number]["error"].startswith(why) and errors[number]["retry"] is False, number
    assert sorted([*out, *errors]) == list(range(1, len(HOSTILE) + 1))  # each line once, in one of them
    assert [out[n]["id"] for n in (1, 4, 7, 8)] == ["bom", "nul", "dup", "dup"]
    assert "nul \x00 inside" in service.texts()

    before = (tmp_path / "out.jsonl").read_bytes(), (tmp_path / "out.errors.jsonl").read_bytes()
    service.requests = []
    run(service, tmp_path, lines, "--batch-size", "4")
    assert service.requests == []
    assert ((tmp_path / "out.jsonl").read_bytes(), (tmp_path / "out.errors.jsonl").read_bytes()) == before


def test_a_line_that_cannot_be_sent_is_a_final_error_and_the_run_goes_on(service, tmp_path, monkeypatch):
    send = AsyncClient.analyze_batch

    async def analyze_batch(self, texts: list[str], *args) -> list[dict]:
        if "poison" in texts:  # as httpx raised UnicodeEncodeError for a lone surrogate, before parse refused it
            raise RuntimeError("cannot encode this text")
        return await send(self, texts, *args)

    monkeypatch.setattr(AsyncClient, "analyze_batch", analyze_batch)
    out, errors = run(service, tmp_path, [b'"fine"', b'"poison"', b'"also fine"'])
    assert out.keys() == {1, 3}
    assert errors == {2: {"line": 2, "error": "RuntimeError: cannot encode this text", "retry": False}}


@pytest.mark.parametrize(
    "body",
    [
        b"<html>Welcome to the proxy</html>",
        b'{"detail": "no results"}',
        b'{"results": [{}]}',  # one answer for two texts
        b'{"results": "nope"}',
        b'{"results": [1, 2]}',
        b"[]",
    ],
)
def test_an_unexpected_answer_leaves_its_batch_to_the_next_run_and_the_run_goes_on(service, tmp_path, body):
    service.respond = lambda path, request: (200, {}, body)
    out, errors = run(service, tmp_path, [b'"one"', b'"two"'])
    assert out == {}
    assert errors.keys() == {1, 2}
    assert all(e["retry"] and e["error"].startswith("UnexpectedAnswer: HTTP 200: ") for e in errors.values())

    service.respond = all_ok
    out, errors = run(service, tmp_path, [b'"one"', b'"two"'])
    assert out.keys() == {1, 2} and errors == {}


def test_an_answer_without_an_asked_task_is_retried_on_the_next_run(service, tmp_path):
    def respond(path: str, body: dict) -> tuple[int, dict, dict]:
        results = [answer(t, ["ner"] if t == "partial" else body["tasks"]) for t in body["texts"]]
        return 200, {}, {"results": results}

    service.respond = respond
    out, errors = run(service, tmp_path, [b'"whole"', b'"partial"'])
    assert out.keys() == {1}  # not written as if every task had answered
    assert errors == {2: {"line": 2, "error": "not in the answer: sentiment", "retry": True}}


@pytest.mark.parametrize(
    "status, body",
    [
        (400, {"detail": "Host 'nlp.example.com' is not allowed; add it to the Ingress's allowed_hosts"}),
        (401, b"<html>Sign in</html>"),  # an auth proxy
        (403, {"detail": "cross-site browser request refused (Sec-Fetch-Site: cross-site)"}),
        (404, b"Path '/wrong/analyze/batch' not found."),  # Serve, for a path no application serves
        (405, {"detail": "Method Not Allowed"}),
    ],
)
def test_a_refusal_of_the_run_stops_it_at_once_and_leaves_every_line_to_the_next_run(service, tmp_path, status, body):
    service.respond = lambda path, request: (status, {}, body)
    lines = [json.dumps(f"text {i}").encode() for i in range(1, 9)]
    with pytest.raises(SystemExit) as stopped:
        run(service, tmp_path, lines, "--batch-size", "2", "--concurrency", "2")
    assert f"HTTP {status}" in stopped.value.code  # a message: exit status 1
    assert len(service.requests) <= 2  # the batches in flight: none split into lines, none sent after
    assert records(tmp_path / "out.jsonl") == records(tmp_path / "out.errors.jsonl") == {}

    service.respond, service.requests = all_ok, []
    out, errors = run(service, tmp_path, lines)
    assert out.keys() == set(range(1, 9)) and errors == {}


def test_a_refusal_after_some_batches_keeps_them_and_records_nothing_for_the_rest(service, tmp_path):
    def respond(path: str, body: dict) -> tuple[int, dict, dict]:
        if len(service.requests) > 1:
            return 400, {}, {"detail": "Host '10.0.0.7' is not allowed; add it to the Ingress's allowed_hosts"}
        return all_ok(path, body)

    service.respond = respond
    lines = [json.dumps(f"text {i}").encode() for i in range(1, 7)]
    with pytest.raises(SystemExit, match="HTTP 400: Host '10.0.0.7' is not allowed"):
        run(service, tmp_path, lines, "--batch-size", "2", "--concurrency", "1")
    assert records(tmp_path / "out.jsonl").keys() == {1, 2}
    assert records(tmp_path / "out.errors.jsonl") == {}

    service.respond, service.requests = all_ok, []
    out, errors = run(service, tmp_path, lines, "--batch-size", "2")
    assert sorted(service.texts()) == [f"text {i}" for i in range(3, 7)]  # two batches, in either order
    assert out.keys() == set(range(1, 7)) and errors == {}


@pytest.mark.parametrize(
    "option, value",
    [
        ("--batch-size", "0"),
        ("--concurrency", "-1"),
        ("--retries", "-1"),
        ("--timeout", "0"),
        ("--timeout", "nan"),
        ("--timeout", "inf"),
        ("--url", "localhost:8000"),  # no scheme: every request would fail
    ],
)
def test_arguments_that_cannot_work_are_refused_before_anything_is_sent(service, tmp_path, capsys, option, value):
    with pytest.raises(SystemExit) as refused:
        run(service, tmp_path, [b'"one"'], option, value)
    assert refused.value.code == 2
    assert f"argument {option}: " in capsys.readouterr().err
    assert service.requests == []


def test_concurrency_0_exits_at_once_with_status_2(service, tmp_path):
    src = tmp_path / "in.jsonl"
    src.write_bytes(b'"one"\n')
    argv = ["analyze", str(src), "-o", str(tmp_path / "out.jsonl"), "--url", service.url, "--concurrency", "0"]
    done = subprocess.run([sys.executable, "-m", "nlpserve.cli", *argv], capture_output=True, text=True, timeout=60)
    assert done.returncode == 2  # it used to wait forever for a free slot
    assert "argument --concurrency: must be 1 or more, not 0" in done.stderr
    assert service.requests == []


def test_the_default_timeout_and_deadline_come_before_the_services_request_timeout(service, tmp_path):
    run(service, tmp_path, [b'"one"'])
    (request,) = service.requests
    assert request.body["deadline_ms"] == 49_500  # 90 % of the default --timeout, 55 s
    for config in CONFIGS.glob("*.yaml"):
        limit = yaml.safe_load(config.read_text())["http_options"]["request_timeout_s"]  # Serve's 408 after it
        assert request.body["deadline_ms"] / 1000 < cli.TIMEOUT_S < limit, config.name


def test_the_line_model_is_shared_by_both_engines_without_ray_or_an_import_circle():
    code = "import sys, nlpserve.jsonl, nlpserve.cli; print(sorted({'ray', 'pyarrow'} & set(sys.modules)))"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout == "[]\n"
    bulk = ast.parse((Path(cli.__file__).parent / "on_ray" / "bulk.py").read_text())  # importing it loads Ray
    imported = {x.module for x in ast.walk(bulk) if isinstance(x, ast.ImportFrom)}
    assert "nlpserve.jsonl" in imported and "nlpserve.cli" not in imported
