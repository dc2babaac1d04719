"""gRPC beside HTTP: the same graph through Serve's gRPC proxy (HAProxy in front), the same answers, the
HTTP errors as gRPC statuses, and the checked-in protobuf modules current."""

import asyncio
import filecmp
import json
import subprocess
import sys
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
import pytest
from samples import NEWS, post

from nlpserve import AsyncClient, Client, ServiceError, grpc_api
from nlpserve.protos import analyze_pb2 as pb
from nlpserve.protos import analyze_pb2_grpc as rpc

ROOT = Path(__file__).resolve().parents[1]
TEXTS = [
    NEWS,
    "Angela Merkel met Emmanuel Macron in Berlin on Tuesday. Talks were difficult.",
    "I waited two hours for a cold pizza. Never again. 🍕 Terrible service at Luigi's in Naples.",
]


def test_the_checked_in_modules_are_what_grpcio_tools_makes_of_the_proto(tmp_path):
    (tmp_path / "nlpserve" / "protos").mkdir(parents=True)
    proto = "nlpserve/protos/analyze.proto"
    (tmp_path / proto).write_bytes((ROOT / proto).read_bytes())
    outs = ("--python_out=.", "--pyi_out=.", "--grpc_python_out=.")
    subprocess.run([sys.executable, "-m", "grpc_tools.protoc", "-I.", *outs, proto], cwd=tmp_path, check=True)
    made = ["analyze_pb2.py", "analyze_pb2.pyi", "analyze_pb2_grpc.py"]
    _, differ, missing = filecmp.cmpfiles(tmp_path / "nlpserve/protos", ROOT / "nlpserve/protos", made, shallow=False)
    assert not differ and not missing, f"regenerate with the command at the top of {proto}: {differ + missing}"


def test_an_answer_survives_the_message_and_back_zeros_and_errors_included():
    answer = {
        "ner": [{"entity_group": "ORG", "score": 0.5, "word": "Apple", "start": 0, "end": 5}],  # offset 0
        "sentiment": {"error": "sentiment failed: ValueError: x", "code": "failed"},
        "summary": {"summary_text": "", "sentences": []},
        "models": {"ner": {"name": "n", "version": "1", "checksum": "c", "device": "cpu", "settings": "s"}},
        "timings": {
            "batch_size": 1,
            "queue_ms": 0.0,
            "groups": 1,
            "tokenize_ms": 0.25,
            "tokenized_texts": 0,
            "put_ms": 0.5,
            "ingress_ms": 3.0,
            "tasks": {"ner": {"call_ms": 2.0, "texts": 1}},
            "cached": ["sentiment"],
        },
    }
    assert grpc_api.answer(grpc_api.response(answer)) == answer
    nothing = grpc_api.response({"ner": [], "models": {}, "timings": answer["timings"]})
    assert grpc_api.answer(nothing)["ner"] == [] and "sentiment" not in grpc_api.answer(nothing)


def _same(a: dict, b: dict) -> dict:
    """What must not differ between two answers to the same text: the tasks and the models (not timings)."""
    return {k: v for k, v in a.items() if k != "timings"} == {k: v for k, v in b.items() if k != "timings"}


@pytest.mark.serve
def test_each_rpc_answers_as_http_does(url, grpc_url):
    with Client(url) as http, Client(grpc_url, transport="grpc", application="nlp") as over_grpc:
        for text in TEXTS:
            assert _same(over_grpc.analyze(text), http.analyze(text))
        via_grpc = over_grpc.analyze_batch(TEXTS, tasks=["ner", "sentiment"])
        assert all(_same(g, h) for g, h in zip(via_grpc, http.analyze_batch(TEXTS, tasks=["ner", "sentiment"])))
        assert "🍕" in TEXTS[2] and via_grpc[2]["ner"], "offsets past a non-BMP character"
        for e in via_grpc[2]["ner"]:
            assert TEXTS[2][e["start"] : e["end"]] == e["word"]  # code points, as the proto says
        assert over_grpc.version() == http.version()
        assert over_grpc.health() == {"status": "ok"}


@pytest.mark.serve
def test_bad_input_gets_the_http_message_under_its_grpc_status(url, grpc_url):
    stub = rpc.AnalyzerStub(grpc.insecure_channel(grpc_url.removeprefix("grpc://")))
    meta = [("application", "nlp")]
    cases = [
        (pb.AnalyzeRequest(text="   "), {"text": "   "}, grpc.StatusCode.INVALID_ARGUMENT),
        (
            pb.AnalyzeRequest(text="x", tasks=["nope"]),
            {"text": "x", "tasks": ["nope"]},
            grpc.StatusCode.INVALID_ARGUMENT,
        ),
        (pb.AnalyzeRequest(text="a " * 60_000), {"text": "a " * 60_000}, grpc.StatusCode.RESOURCE_EXHAUSTED),
    ]
    for message, body, code in cases:
        with pytest.raises(grpc.RpcError) as refused:
            stub.Analyze(message, metadata=meta, timeout=30)
        r = post(url, "/analyze", body)
        assert refused.value.code() == code and r.status_code in (413, 422)
        detail = r.json()["detail"]
        assert refused.value.details() == (detail if isinstance(detail, str) else json.dumps(detail))
    with pytest.raises(grpc.RpcError) as refused:
        stub.AnalyzeBatch(pb.AnalyzeBatchRequest(texts=["x"] * 65), metadata=meta, timeout=30)
    assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED and "the limit is 64" in refused.value.details()
    # Over 4 MB: refused before it is read, like an HTTP body over max_body_bytes.
    with pytest.raises(grpc.RpcError) as refused:
        stub.Analyze(pb.AnalyzeRequest(text="x", tasks=["ner"] * 1_000_000), metadata=meta, timeout=30)
    assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED and "larger than max" in refused.value.details()


@pytest.mark.serve
def test_a_deadline_gives_per_task_deadline_exceeded_and_the_others_answer(url, grpc_url):
    async def go() -> tuple[dict, float]:
        async with AsyncClient(grpc_url, transport="grpc", application="faulty") as client:
            start = time.monotonic()
            out = await client.analyze(f"Tim Cook visited Paris {uuid.uuid4().hex}.", deadline_ms=1000)
            return out, time.monotonic() - start

    out, seconds = asyncio.run(go())  # the faulty app's summary never answers, its NER raises
    assert out["summary"]["code"] == "deadline_exceeded" and out["ner"]["code"] == "failed"
    assert out["sentiment"]["label"] in ("positive", "negative", "neutral") and seconds < 4


@pytest.mark.serve
@pytest.mark.slow
def test_a_burst_beyond_capacity_is_refused_at_once_and_the_client_retries_it(url, grpc_url):
    # The small app takes 2 requests at a time; each takes 2 s (its summary times out).
    stub = rpc.AnalyzerStub(grpc.insecure_channel(grpc_url.removeprefix("grpc://")))
    burst = threading.Barrier(12)

    def call(i: int) -> tuple[grpc.StatusCode, float, str]:
        burst.wait()
        start = time.monotonic()
        request = pb.AnalyzeRequest(text=f"Burst {uuid.uuid4().hex} {i}.", tasks=["summary"])
        try:
            stub.Analyze(request, metadata=[("application", "small")], timeout=30)
            return grpc.StatusCode.OK, time.monotonic() - start, ""
        except grpc.RpcError as e:
            return e.code(), time.monotonic() - start, e.details()

    with ThreadPoolExecutor(12) as pool:
        results = list(pool.map(call, range(12)))
    refused = [r for r in results if r[0] != grpc.StatusCode.OK]
    assert refused and len(refused) < 12, results
    # Serve's own refusal, said at once; the Python client reads it as overload and retries it.
    assert all(r[0] == grpc.StatusCode.RESOURCE_EXHAUSTED and r[2].startswith(grpc_api.BACKPRESSURE) for r in refused)
    assert all(seconds < 1.5 for _, seconds, _ in refused), results
    with Client(grpc_url, transport="grpc", application="small", retries=0) as client:
        with pytest.raises(ServiceError) as no_retries:
            with ThreadPoolExecutor(6) as pool:
                list(pool.map(lambda i: client.analyze(f"Again {uuid.uuid4().hex} {i}.", tasks=["summary"]), range(6)))
    assert no_retries.value.status == 503 and no_retries.value.retryable


@pytest.mark.serve
def test_the_cli_runs_a_file_over_grpc_and_a_rerun_sends_nothing_again(grpc_url, tmp_path):
    from nlpserve import cli

    src, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    src.write_text("".join(f'{{"id": {i}, "text": "{t}"}}\n' for i, t in enumerate(TEXTS[1:])) + "   \n")
    argv = ["analyze", str(src), "-o", str(out), "--url", f"{grpc_url}/nlp", "--quiet"]
    cli.main(argv)  # returns; a refused run would exit 1
    lines = [json.loads(x) for x in out.read_text().splitlines()]
    assert sorted(x["id"] for x in lines) == [0, 1] and all(x["sentiment"]["label"] for x in lines)
    assert '"line": 3' in (tmp_path / "out.errors.jsonl").read_text()  # the blank line, for good
    cli.main(argv)
    assert out.read_text().count("\n") == 2  # resumed: nothing sent twice
