"""The graph on a local Ray over HTTP, deployed from config/config.yaml as `serve run` does."""

import asyncio
import contextlib
import json
import select
import socket
import sys
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests
from ray import serve
from samples import NEWS, post

pytestmark = pytest.mark.serve


@pytest.fixture(scope="module")
def in_process():
    """The served default pack's encoder (default kernel) and sentiment head, in this process."""
    from nlpserve.models.encoder import MiniLMEncoder
    from nlpserve.models.sentiment import SentimentModel

    return MiniLMEncoder(), SentimentModel()


def test_news_paragraph_gets_entities_sentiment_and_summary(url, tokenizer, in_process):
    r = post(url, "/analyze", {"text": NEWS})
    assert r.status_code == 200, r.text
    out = r.json()
    found = {(e["word"], e["entity_group"]) for e in out["ner"]}
    assert {("Apple Inc.", "ORG"), ("Tim Cook", "PERSON"), ("Goldman Sachs", "ORG")} <= found
    for e in out["ner"]:
        assert NEWS[e["start"] : e["end"]] == e["word"]
    # The answer the same classes give in one process (any argmax of 3 classes scores over 1/3).
    encoder, sentiment = in_process
    batch = tokenizer([NEWS])
    (encoded,) = encoder.encode([(batch, [0])])
    (expected,) = sentiment(batch, [0], [encoded.row(0)])
    assert out["sentiment"]["label"] == expected["label"]
    assert abs(out["sentiment"]["score"] - expected["score"]) < 1e-4, (out["sentiment"], expected)
    summary = out["summary"]
    assert summary["sentences"] and len(summary["summary_text"]) < len(NEWS)
    assert summary["summary_text"] == " ".join(NEWS[s["start"] : s["end"]] for s in summary["sentences"])
    timings = out["timings"]
    assert set(timings["tasks"]) == {"ner", "sentiment", "summary"}
    for t in timings["tasks"].values():
        assert 0 <= t["get_ms"] + t["compute_ms"] <= t["call_ms"] <= timings["ingress_ms"]


def test_curl_style_form_content_type_is_read_as_json(url):
    r = post(
        url,
        "/analyze",
        {"text": "I love it.", "tasks": ["sentiment"]},
        headers={"content-type": "application/x-www-form-urlencoded"},
    )
    assert r.status_code == 200 and r.json()["sentiment"]["label"] == "positive"


def test_only_requested_tasks_are_returned(url):
    r = post(url, "/analyze", {"text": "Berlin is lovely in May.", "tasks": ["ner"]})
    assert r.status_code == 200
    assert set(r.json()) == {"ner", "models", "timings"}
    assert set(r.json()["models"]) == {"ner"}
    assert set(r.json()["timings"]["tasks"]) == {"ner"}


def test_batch_endpoint_keeps_order(url):
    texts = [
        "Angela Merkel visited Paris.",
        "This is the worst film I have ever seen. Awful!",
        "Microsoft hired 300 people.",
    ]
    r = post(url, "/analyze/batch", {"texts": texts, "tasks": ["ner", "sentiment"]})
    assert r.status_code == 200, r.text
    results = r.json()["results"]
    assert len(results) == 3
    assert ("Angela Merkel", "PERSON") in {(e["word"], e["entity_group"]) for e in results[0]["ner"]}
    assert results[1]["sentiment"]["label"] == "negative"
    assert ("Microsoft", "ORG") in {(e["word"], e["entity_group"]) for e in results[2]["ner"]}


def _stats():
    ingress = serve.get_deployment_handle("Ingress", app_name="nlp").stats.remote().result()
    tasks = {
        name: serve.get_deployment_handle(name, app_name="nlp").stats.remote().result()
        for name in ("NER", "Sentiment", "Summary", "Encoder")
    }
    return ingress, tasks


def _delta(after: dict, before: dict) -> dict:
    return {k: v - before.get(k, 0) for k, v in after.items() if isinstance(v, int)}


def _together(url: str, texts: list[str]) -> list[requests.Response]:
    """POST each text to /analyze from a thread of its own, all released at once."""
    start = threading.Barrier(len(texts))

    def send(text: str) -> requests.Response:
        start.wait(30)
        return post(url, "/analyze", {"text": text})

    with ThreadPoolExecutor(len(texts)) as pool:
        return list(pool.map(send, texts))


def test_one_tokenization_and_one_put_per_batch_and_tasks_get_object_refs(url):
    before, tasks_before = _stats()
    fresh = uuid.uuid4().hex  # texts no cache has seen
    r = post(
        url, "/analyze/batch", {"texts": [f"{NEWS} ({fresh} {i})" for i in range(8)], "tasks": ["ner", "sentiment"]}
    )
    assert r.status_code == 200
    after, tasks_after = _stats()
    d = _delta(after, before)
    assert d["items"] == 8
    assert d["batches"] == d["tokenizations"] == d["puts"] == 1  # 8 texts, one batch, one tokenization
    assert d["calls.ner"] == d["calls.sentiment"] == 1 and d.get("calls.summary", 0) == 0
    for name in ("NER", "Sentiment"):
        t = _delta(tasks_after[name], tasks_before[name])
        assert t["calls"] == 1 and t["object_refs"] == 1 and t["rows"] == 8
    assert _delta(tasks_after["Summary"], tasks_before["Summary"]).get("calls", 0) == 0

    # Concurrent single requests are batched together: fewer batches than requests, still one
    # tokenization and put per batch. 16 requests are released at once; a round in which every one
    # happened to get a batch of its own is sent again, at most 3 rounds.
    for attempt in range(3):
        before, _ = _stats()
        answers = _together(url, [f"Text {fresh} {attempt} {i}." for i in range(16)])
        assert [r.status_code for r in answers] == [200] * 16
        after, _ = _stats()
        d = _delta(after, before)
        assert d["items"] == 16
        assert d["tokenizations"] == d["puts"] == d["batches"]
        assert d["calls.ner"] == d["calls.sentiment"] == d["calls.summary"] == d["batches"]
        sizes = [r.json()["timings"]["batch_size"] for r in answers]
        print(f"\nround {attempt}: {d['batches']} batches for 16 concurrent requests, batch sizes {sorted(sizes)}")
        if d["batches"] < 16:
            break
    assert d["batches"] < 16 and max(sizes) > 1, sizes


def test_each_text_is_encoded_once_for_both_heads_with_the_same_answers(url, tokenizer):
    from nlpserve.models.encoder import MiniLMEncoder
    from nlpserve.models.sentiment import SentimentModel
    from nlpserve.models.summary import ExtractiveSummarizer

    before, tasks_before = _stats()
    fresh = uuid.uuid4().hex
    texts = [f"{NEWS} Reference {fresh} {i}." for i in range(12)]
    with ThreadPoolExecutor(6) as pool:
        answers = list(pool.map(lambda t: post(url, "/analyze", {"text": t}).json(), texts))
    after, tasks_after = _stats()
    encoder = _delta(tasks_after["Encoder"], tasks_before["Encoder"])
    assert encoder["texts"] == len(texts)  # one encoder pass per text, for sentiment and summary together
    ingress = _delta(after, before)
    # One encoder call per send of the ingress: batches that waited for the Encoder went together.
    assert ingress["texts.encoder"] == len(texts) and encoder["calls"] == ingress["sends.encoder"] <= ingress["batches"]
    for name in ("Sentiment", "Summary"):
        assert _delta(tasks_after[name], tasks_before[name])["rows"] == len(texts)

    # The heads answer as the same classes do in one process on the same encoder output.
    batch = tokenizer(texts)
    rows = list(range(len(texts)))
    (encoded,) = MiniLMEncoder().encode([(batch, rows)])
    vectors = [encoded.row(i) for i in rows]
    sentiments = SentimentModel()(batch, rows, vectors)
    summaries = ExtractiveSummarizer()(batch, rows, vectors)
    for answer, sentiment, summary in zip(answers, sentiments, summaries):
        assert answer["sentiment"]["label"] == sentiment["label"]
        assert abs(answer["sentiment"]["score"] - sentiment["score"]) < 1e-4
        assert answer["summary"] == summary
        assert answer["timings"]["tasks"]["sentiment"]["encode_ms"] > 0


def test_repeated_text_is_answered_from_the_result_cache_per_task_and_model(url):
    text = f"I really enjoyed this hotel in Lisbon ({uuid.uuid4().hex})."
    before, _ = _stats()
    first = post(url, "/analyze", {"text": text, "tasks": ["sentiment"]}).json()
    assert first["timings"]["cached"] == []
    second = post(url, "/analyze", {"text": text, "tasks": ["sentiment"]}).json()
    assert second["timings"]["cached"] == ["sentiment"] and second["timings"]["tasks"] == {}
    assert second["sentiment"] == first["sentiment"] and second["models"] == first["models"]
    # Another task set: the cached task is reused, the new one is computed.
    third = post(url, "/analyze", {"text": text, "tasks": ["sentiment", "ner"]}).json()
    assert third["timings"]["cached"] == ["sentiment"] and set(third["timings"]["tasks"]) == {"ner"}
    assert ("Lisbon", "GPE") in {(e["word"], e["entity_group"]) for e in third["ner"]}
    counted = _delta(_stats()[0], before)  # this test's own lookups: the counters serve the whole session
    assert counted["result_cache_hits"] == 2 and counted["token_cache_misses"] >= 1


def test_every_answer_names_the_models_that_made_it(url):
    out = post(url, "/analyze", {"text": f"Paris in spring ({uuid.uuid4().hex})."}).json()
    version = requests.get(url + "/version", timeout=30).json()
    assert out["models"] == version["tasks"]


def test_healthz_and_version(url):
    assert requests.get(url + "/healthz", timeout=10).json() == {"status": "ok"}
    v = requests.get(url + "/version", timeout=30).json()
    assert set(v["tasks"]) == {"ner", "sentiment", "summary"}
    for info in v["tasks"].values():
        assert info["name"] and info["version"] and len(info["checksum"]) == 12
        assert info["device"] == "cpu"  # num_gpus: 0 in the config
    (group,) = v["tokenizer_groups"]  # the default pack: one tokenizer for all three tasks
    assert group["name"] == "all-MiniLM-L6-v2" and sorted(group["tasks"]) == ["ner", "sentiment", "summary"]


def test_failed_and_stuck_tasks_degrade_only_themselves(url):
    post(url, "/faulty/analyze", {"text": "warm up", "tasks": ["ner", "sentiment"]})
    start = time.monotonic()
    r = post(url, "/faulty/analyze", {"text": "What a wonderful, happy day!"})
    elapsed = time.monotonic() - start
    assert r.status_code == 200, r.text
    out = r.json()
    assert out["ner"]["error"].startswith("ner failed: RuntimeError: NER model crashed")
    assert out["summary"] == {"error": "summary timed out after 5 s", "code": "timeout"}
    assert out["ner"]["code"] == "failed"
    assert out["sentiment"]["label"] == "positive"
    assert elapsed < 20  # the stuck task is cut off at its timeout, not waited for


def test_deadline_returns_finished_tasks_without_waiting_for_a_stuck_one(url):
    post(url, "/faulty/analyze", {"text": "warm up", "tasks": ["sentiment"]})
    start = time.monotonic()
    text = f"What a lovely day, I love it! ({uuid.uuid4().hex})"  # clear enough that the hex cannot sway it
    body = {"text": text, "tasks": ["sentiment", "summary"], "deadline_ms": 1500}
    r = post(url, "/faulty/analyze", body)
    elapsed = time.monotonic() - start
    assert r.status_code == 200, r.text
    out = r.json()
    assert out["sentiment"]["label"] == "positive"
    assert out["summary"]["code"] == "deadline_exceeded"
    assert elapsed < 4  # the app's task timeout is 5 s and the summarizer never answers


LIMIT_TEXT = "x" * 100_001
BAD_INPUT = [
    ("malformed JSON", "/analyze", b'{"text": "unterminated', 400, "malformed JSON"),
    ("invalid UTF-8", "/analyze", b'{"text": "caf\xe9"}', 400, "not valid UTF-8"),
    ("missing text", "/analyze", {"tasks": ["ner"]}, 422, "Field required"),
    ("empty text", "/analyze", {"text": ""}, 422, "at least 1 character"),
    ("blank text", "/analyze", {"text": "  \n\t "}, 422, "white space"),
    ("text not a string", "/analyze", {"text": 42}, 422, "valid string"),
    ("unknown task", "/analyze", {"text": "hi", "tasks": ["translate"]}, 422, "'ner', 'sentiment' or 'summary'"),
    ("tasks not a list", "/analyze", {"text": "hi", "tasks": "ner"}, 422, "valid list"),
    ("no tasks", "/analyze", {"text": "hi", "tasks": []}, 422, "at least 1 item"),
    ("unknown field", "/analyze", {"text": "hi", "lang": "en"}, 422, "Extra inputs"),
    ("deadline a boolean", "/analyze", {"text": "hi", "deadline_ms": True}, 422, "not a boolean"),
    ("body not an object", "/analyze", [1, 2], 422, "valid dictionary"),
    ("empty body", "/analyze", b"", 422, "Field required"),
    ("text too long", "/analyze", {"text": LIMIT_TEXT}, 413, "the limit is 100000"),
    ("body too large", "/analyze", {"text": "x" * (8 * 1024 * 1024)}, 413, "request body is over"),
    ("empty batch", "/analyze/batch", {"texts": []}, 422, "at least 1 item"),
    ("blank item", "/analyze/batch", {"texts": ["ok", " "]}, 422, "texts[1]"),
    ("batch too large", "/analyze/batch", {"texts": ["a"] * 65}, 413, "the limit is 64"),
    ("batch item too long", "/analyze/batch", {"texts": ["a", LIMIT_TEXT]}, 413, "texts[1] is 100001 characters"),
]


@pytest.mark.parametrize("case,path,body,status,message", BAD_INPUT, ids=[c[0] for c in BAD_INPUT])
def test_bad_input_gets_a_clear_4xx(url, case, path, body, status, message):
    r = post(url, path, body, headers={"content-type": "application/json"})
    assert r.status_code == status, r.text
    assert message in json.dumps(r.json()["detail"])


def test_a_chunked_upload_of_a_gigabyte_is_cut_off_at_the_limit(url):
    """A body without Content-Length is counted as it arrives: the 413 comes back after about the limit
    (8 MB), while the client still has most of its gigabyte to send, so nothing on the way holds it all."""
    host, port = url.removeprefix("http://").split(":")
    chunk = b"x" * (1 << 20)
    frame = b"%x\r\n%s\r\n" % (len(chunk), chunk)
    sent, answer = 0, b""
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(f"POST /analyze HTTP/1.1\r\nHost: {host}\r\nTransfer-Encoding: chunked\r\n\r\n".encode())
        while sent < 1 << 30 and not select.select([sock], [], [], 0)[0]:
            try:
                sock.sendall(frame)
            except OSError:  # the server closed its side, or stopped reading (timeout): the answer is in
                break
            sent += len(chunk)
        with contextlib.suppress(OSError):  # until the whole JSON answer is in, or the server closed
            while not answer.endswith(b"}") and (part := sock.recv(65536)):
                answer += part
    assert answer.startswith(b"HTTP/1.1 413"), answer[:200]
    assert b"request body is over" in answer
    assert sent < 64 << 20, f"{sent >> 20} MB sent before the answer"


def test_wrong_method_and_path(url):
    assert requests.get(url + "/analyze", timeout=10).status_code == 405
    assert requests.get(url + "/nope", timeout=10).status_code == 404


def test_async_clients_do_not_hang(url):
    import httpx

    async def many():
        async with httpx.AsyncClient(timeout=60) as client:
            rs = await asyncio.gather(*(client.post(url + "/analyze", json={"text": NEWS}) for _ in range(24)))
        return [r.status_code for r in rs]

    assert asyncio.run(many()) == [200] * 24


def test_cli_resumes_after_a_kill_without_losing_or_repeating_lines(url, tmp_path):
    import os
    import signal
    import subprocess

    src, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    fresh = uuid.uuid4().hex
    lines = []
    for i in range(1, 121):
        if i in (5, 50):
            lines.append("{not json")
        elif i == 77:
            lines.append('{"id": 77}')
        elif i % 2:
            lines.append(json.dumps(f"Line {i} about Berlin and Paris ({fresh})."))
        else:
            lines.append(json.dumps({"id": f"doc-{i}", "text": f"Line {i}: Apple hired Tim Cook ({fresh})."}))
    src.write_text("\n".join(lines) + "\n")
    cmd = [sys.executable, "-m", "nlpserve.cli", "analyze", str(src), "-o", str(out), "--url", url]
    cmd += ["--batch-size", "4", "--concurrency", "2", "--quiet", "--tasks", "ner", "sentiment"]

    first = subprocess.Popen(cmd)
    deadline = time.monotonic() + 120
    while (not out.exists() or len(out.read_text().splitlines()) < 12) and time.monotonic() < deadline:
        time.sleep(0.05)
    os.kill(first.pid, signal.SIGKILL)
    first.wait()
    assert first.returncode == -signal.SIGKILL  # it really was cut off mid-file
    partial = len(out.read_text().splitlines())
    assert 12 <= partial < 117

    subprocess.run(cmd, check=True, timeout=300)
    rows = [json.loads(x) for x in out.read_text().splitlines()]
    numbers = [r["line"] for r in rows]
    assert len(numbers) == len(set(numbers)) == 117  # every good line once
    assert set(numbers) == set(range(1, 121)) - {5, 50, 77}
    by_line = {r["line"]: r for r in rows}
    assert by_line[2]["id"] == "doc-2" and by_line[3]["id"] == 3
    assert ("Tim Cook", "PERSON") in {(e["word"], e["entity_group"]) for e in by_line[2]["ner"]}
    assert by_line[3]["models"].keys() == {"ner", "sentiment"}
    errors = [json.loads(x) for x in (tmp_path / "out.errors.jsonl").read_text().splitlines()]
    assert sorted(e["line"] for e in errors) == [5, 50, 77]
    assert all(e["error"] for e in errors)


def test_prometheus_metrics_after_traffic(url, metrics_port):
    """Runs last: the traffic of the tests above, the faulty app's included, shows up in Ray's exporter."""
    post(url, "/analyze", {"text": f"Metrics from Madrid ({uuid.uuid4().hex})."})
    wanted = [
        "ray_nlpserve_task_latency_ms_bucket{",
        "ray_nlpserve_task_compute_ms_bucket{",
        "ray_nlpserve_batch_size_bucket{",
        "ray_nlpserve_batches_total",
        "ray_nlpserve_tokenizations_total",
        'cache="result"',
        'cache="token"',
        'kind="timeout"',
        'kind="failed"',
    ]
    deadline = time.monotonic() + 90
    while True:
        text = requests.get(f"http://127.0.0.1:{metrics_port}/metrics", timeout=10).text
        missing = [w for w in wanted if w not in text]
        if not missing or time.monotonic() > deadline:
            break
        time.sleep(2)
    assert not missing, missing
    failures = [x for x in text.splitlines() if x.startswith("ray_nlpserve_task_failures")]
    assert any('task="ner"' in x and 'kind="failed"' in x for x in failures)
    assert any('task="summary"' in x and 'kind="timeout"' in x for x in failures)


def test_a_reconfigured_task_is_never_answered_from_the_cache_in_either_order(url):
    """Summary reconfigured in place, max_sentences 1 -> 2 -> 1, as `serve deploy` does when only its
    user_config changes: the ingress and its result cache live on (its counters keep counting), yet every
    answer, cached or not, is the one the settings of the moment give, and answers made with the new
    settings are cached again."""
    import yaml
    from ray.serve.context import _get_global_client
    from ray.serve.schema import ServeDeploySchema

    from nlpserve.on_ray.local import ROOT

    raw = yaml.safe_load((ROOT / "config" / "config.yaml").read_text())
    raw["http_options"]["port"] = int(url.rsplit(":", 1)[1])
    tests = str(ROOT / "tests")

    def settings() -> str | None:
        r = requests.get(url + "/cache/version", timeout=30)
        return r.json()["tasks"]["summary"].get("settings") if r.status_code == 200 else None

    def deploy(max_sentences: int) -> None:
        before = settings()  # None before the first deploy
        app = {
            "name": "cache",
            "route_prefix": "/cache",
            "import_path": "faults:cache_app",
            "runtime_env": {"env_vars": {"PYTHONPATH": f"{ROOT}:{tests}"}},
            "deployments": [{"name": "Summary", "user_config": {"max_sentences": max_sentences, "ratio": 1}}],
        }
        # The served graph is in the config too: a deploy by config removes the apps it does not name.
        schema = ServeDeploySchema.model_validate({**raw, "applications": [*raw["applications"], app]})
        _get_global_client().deploy_apps(schema, _blocking=True)
        deadline = time.monotonic() + 120
        while settings() in (None, before):  # until the replica runs with the new settings
            assert time.monotonic() < deadline, f"Summary not reconfigured to max_sentences {max_sentences}"
            time.sleep(0.5)

    text = f"{NEWS} ({uuid.uuid4().hex})"
    seen, hits = [], []
    try:
        for max_sentences in (1, 2, 1):
            deploy(max_sentences)
            for _ in range(2):
                out = post(url, "/cache/analyze", {"text": text, "tasks": ["summary"]}).json()
                seen.append((max_sentences, len(out["summary"]["sentences"]), out["timings"]["cached"]))
            ingress = serve.get_deployment_handle("Ingress", app_name="cache")
            hits.append(ingress.stats.remote().result()["result_cache_hits"])
    finally:
        serve.delete("cache", _blocking=False)  # its replicas go in the background
    assert hits == [1, 2, 4]  # one ingress all along, with the answers of both settings in its cache
    assert [(m, n) for m, n, _ in seen] == [(1, 1), (1, 1), (2, 2), (2, 2), (1, 1), (1, 1)]
    # Computed after the change to 2, though the text was cached; back at 1, its answer for 1 is still good.
    assert [cached for *_, cached in seen] == [[], ["summary"], [], ["summary"], ["summary"], ["summary"]]


@serve.deployment(name="MuteNER", ray_actor_options={"num_cpus": 0}, graceful_shutdown_timeout_s=1)
class MuteNER:
    """A task that cannot say what it reads, as one whose model never loaded."""

    def inputs(self):
        raise RuntimeError("no model loaded")


def test_readyz_is_200_on_the_graph_and_503_naming_a_task_that_cannot_say_what_it_reads(url):
    from faults import BrokenNER, StuckSummary

    from deployments.ingress import Ingress

    ready = requests.get(url + "/readyz", timeout=30)
    assert ready.status_code == 200 and ready.json() == {"status": "ready"}
    app = Ingress.options(name="UnreadyIngress", ray_actor_options={"num_cpus": 0.05}).bind(
        MuteNER.bind(),
        BrokenNER.options(name="UnreadySentiment").bind(),
        StuckSummary.options(name="UnreadySummary").bind(),
    )
    serve.run(app, name="unready", route_prefix="/unready")
    try:
        probe = {"host": "10.0.3.7:8000"}  # a load balancer's: the node's IP as Host
        r = requests.get(url + "/unready/readyz", headers=probe, timeout=30)
        alive = requests.get(url + "/unready/healthz", headers=probe, timeout=10)
    finally:
        serve.delete("unready")
    assert r.status_code == 503, r.text
    assert r.json() == {"status": "not ready", "missing": {"ner": "did not say what it reads (RuntimeError)"}}
    assert alive.status_code == 200  # liveness: the ingress itself serves


def test_every_series_the_dashboard_charts_is_exported(url, metrics_port):
    """docs/grafana/nlpserve.json charts only series that Ray exports: scraped after traffic that makes each."""
    from test_observability import SERVE_SERIES, charted

    text = f"Dashboards in Dublin ({uuid.uuid4().hex})."
    for _ in range(2):  # the second from the result cache
        assert post(url, "/analyze", {"text": text}).status_code == 200
    post(url, "/faulty/analyze", {"text": text, "tasks": ["ner"]})  # a task call that fails
    requests.get(url + "/nope", timeout=10)  # an HTTP error
    wanted = charted() | SERVE_SERIES
    deadline = time.monotonic() + 90
    while True:
        lines = requests.get(f"http://127.0.0.1:{metrics_port}/metrics", timeout=10).text.splitlines()
        exported = {x.split("{")[0].split()[0] for x in lines if x and not x.startswith("#")}  # name{labels} value
        missing = wanted - exported
        if not missing or time.monotonic() > deadline:
            break
        time.sleep(2)
    assert not missing, sorted(missing)
