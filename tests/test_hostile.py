"""Hostile input: generated from the OpenAPI spec by schemathesis, and explicit nasty cases."""

import json
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, settings
from samples import post

pytestmark = pytest.mark.serve


@pytest.fixture
def api_schema(url):
    return schemathesis.openapi.from_url(url + "/openapi.json")


schema = schemathesis.pytest.from_fixture("api_schema")


@pytest.mark.slow
@schema.parametrize()
@settings(max_examples=200, deadline=None, suppress_health_check=list(HealthCheck))
def test_generated_requests_get_documented_answers_and_never_5xx(case):
    # Default checks: no 5xx, documented status codes and content types, responses match their schemas,
    # schema-valid bodies accepted and schema-invalid ones rejected.
    case.call_and_validate(timeout=120)


def _check_answer(text: str, out: dict) -> None:
    for e in out["ner"]:
        assert text[e["start"] : e["end"]] == e["word"]
    assert out["sentiment"]["label"] in {"positive", "neutral", "negative"}
    summary = out["summary"]
    assert summary["summary_text"] == " ".join(text[s["start"] : s["end"]] for s in summary["sentences"])


ANSWERED = {
    "control characters": "Apple\x00 Inc. opened\x01 an office\x7f in Paris.\x1b[31m",
    "emoji, CJK and RTL": "I love 😀 Paris! 东京是日本的首都。 مرحبا بالعالم שלום עולם 👩‍👩‍👧",
    "punctuation only": "!!! ??? ... ,,, ;;; --- ***",
    "zero-width characters only": "\u200b\u200c\u200d\ufeff",
    "one 50k-character token": "a" * 50_000,
    "combining marks": "e\u0301" * 2000,
    "thousands of one-word lines": "\n".join(["Paris."] * 2000),
}


@pytest.mark.parametrize("text", ANSWERED.values(), ids=ANSWERED.keys())
def test_strange_text_gets_a_correct_answer(url, text):
    r = post(url, "/analyze", {"text": text})
    assert r.status_code == 200, r.text
    out = r.json()
    assert not [t for t in ("ner", "sentiment", "summary") if "error" in out[t]], out
    _check_answer(text, out)


def test_emoji_cjk_rtl_entities_keep_character_offsets(url):
    text = "😀😀 Tim Cook met 東京 officials in Paris, then flew to תל אביב with Apple Inc."
    out = post(url, "/analyze", {"text": text, "tasks": ["ner"]}).json()
    found = {(e["word"], e["entity_group"]) for e in out["ner"]}
    assert ("Tim Cook", "PERSON") in found and ("Paris", "GPE") in found
    _check_answer(text, {**out, "sentiment": {"label": "neutral"}, "summary": {"summary_text": "", "sentences": []}})


HOSTILE = [
    ("deeply nested JSON", b'{"text": ' + b"[" * 100_000 + b"]" * 100_000 + b"}", 400, "error parsing the body"),
    ("nested JSON in an extra field", b'{"text": "a", "x": ' + b'{"a":' * 5000 + b"1" + b"}" * 5001, 400, "parsing"),
    ("a 5000-digit number", b'{"text": "a", "tasks": 1' + b"0" * 5000 + b"}", 400, "error parsing the body"),
    ("unpaired surrogate", b'{"text": "abc \\ud800 def"}', 422, "unicode"),
    ("NaN as text", b'{"text": NaN}', 422, "valid string"),
    ("10k-item batch", json.dumps({"texts": ["hello"] * 10_000}).encode(), 413, "batch has 10000 texts"),
    ("10k tasks", json.dumps({"text": "hi", "tasks": ["ner"] * 10_000}).encode(), 200, None),
]


@pytest.mark.parametrize("case,body,status,message", HOSTILE, ids=[c[0] for c in HOSTILE])
def test_hostile_bodies_get_a_clear_answer(url, case, body, status, message):
    path = "/analyze/batch" if b'"texts"' in body else "/analyze"
    r = post(url, path, body, headers={"content-type": "application/json"})
    assert r.status_code == status, r.text
    if message:
        assert message in json.dumps(r.json()["detail"])


HEAVY_REFUSED = [
    ("99k commas", "/analyze", {"text": "," * 99_000}, "text is 99000 tokens; the limit is 16384 (max_text_tokens)"),
    ("33k one-word sentences", "/analyze", {"text": "A! " * 33_000}, "(max_text_tokens)"),
    ("64 long comma texts", "/analyze/batch", {"texts": ["a, " * 500] * 64}, "(max_request_tokens)"),
    # 5.8 MB, under max_body_bytes: refused on its characters before anything is tokenized (it took 9 s).
    ("64 texts of 90k characters", "/analyze/batch", {"texts": ["word " * 18_000] * 64}, "the limit is 200000"),
]


@pytest.mark.parametrize("case,path,body,message", HEAVY_REFUSED, ids=[c[0] for c in HEAVY_REFUSED])
def test_work_over_the_token_limits_is_refused_at_once(url, case, path, body, message):
    start = time.monotonic()
    r = post(url, path, body)
    assert r.status_code == 413, r.text[:300]
    assert message in r.json()["detail"]
    assert time.monotonic() - start < 2  # refused before its batch: counted only as far as a limit, no task ran


HEAVY_ANSWERED = {"16k tokens of commas": "a, " * 8_000, "8k one-word sentences": "A! " * 8_000}


@pytest.mark.parametrize("text", HEAVY_ANSWERED.values(), ids=HEAVY_ANSWERED.keys())
def test_the_heaviest_admitted_text_is_answered_while_small_requests_go_on(url, text):
    small: list[tuple[float, dict]] = []
    stop = threading.Event()

    def client() -> None:
        while not stop.is_set():
            start = time.monotonic()
            r = post(url, "/analyze", {"text": f"Tim Cook visited Paris on {uuid.uuid4().hex}. It rained."})
            small.append((time.monotonic() - start, r.json() if r.status_code == 200 else {"status": r.status_code}))

    thread = threading.Thread(target=client)
    thread.start()
    try:
        start = time.monotonic()
        r = post(url, "/analyze", {"text": text})
        heavy_s = time.monotonic() - start
    finally:
        stop.set()
        thread.join(60)
    assert r.status_code == 200, r.text[:300]
    assert not [t for t in ("ner", "sentiment", "summary") if "error" in r.json()[t]]
    assert heavy_s < 60
    assert small and all("error" not in out.get(t, {"error": 1}) for _, out in small for t in ("ner", "sentiment"))
    slowest = max(s for s, _ in small)
    print(f"\nheavy {heavy_s:.1f} s; {len(small)} small requests meanwhile, slowest {slowest:.1f} s")
    assert slowest < 5


def test_small_requests_and_healthz_answer_while_the_largest_texts_are_refused(url):
    """Four 100k-character texts (~33k tokens each, counted then refused) and the 5.8 MB batch of 64
    long texts (refused on its characters) at once: each 413 in < 2 s, and meanwhile small requests
    answer with all their tasks in < 2 s and /healthz in < 1 s, off the ingress's loop."""
    heavy_bodies = [("/analyze", {"text": "a, " * 33_333})] * 4 + [("/analyze/batch", HEAVY_REFUSED[-1][2])]
    with ThreadPoolExecutor(len(heavy_bodies)) as pool:
        start = time.monotonic()
        heavy = [pool.submit(lambda b: (post(url, *b), time.monotonic() - start), b) for b in heavy_bodies]
        waits, small = [], []
        while not small or not all(f.done() for f in heavy):
            t = time.monotonic()
            assert requests.get(url + "/healthz", timeout=10).status_code == 200
            waits.append(time.monotonic() - t)
            t = time.monotonic()
            out = post(url, "/analyze", {"text": f"Tim Cook visited Paris on {uuid.uuid4().hex}."}).json()
            small.append((time.monotonic() - t, out))
        refused = [f.result() for f in heavy]
    assert [r.status_code for r, _ in refused] == [413] * len(heavy_bodies)
    print(
        f"\n413s after {max(s for _, s in refused):.2f} s at most; meanwhile /healthz {len(waits)} times, slowest "
        f"{max(waits) * 1000:.0f} ms; {len(small)} small requests, slowest {max(s for s, _ in small):.2f} s"
    )
    assert max(s for _, s in refused) < 2
    assert max(waits) < 1
    assert all(not [t for t in ("ner", "sentiment", "summary") if "error" in out[t]] for _, out in small)
    assert max(s for s, _ in small) < 2


def _cancelled() -> dict[str, int]:
    from ray import serve

    names = ("Encoder", "NER", "Sentiment", "Summary")
    stats = {n: serve.get_deployment_handle(n, app_name="nlp").stats.remote().result() for n in names}
    return {n: s.get("cancelled", 0) for n, s in stats.items()}


def test_work_past_the_deadline_stops_and_does_not_hold_up_the_next_request(url):
    # 8 texts of ~2000 tokens: the encoder stops within a window, NER within a chunk of ~2k words.
    body = {"texts": [f"{uuid.uuid4().hex} " + "Paris " * 1_990 for _ in range(8)], "deadline_ms": 300}
    before = _cancelled()
    start = time.monotonic()
    r = post(url, "/analyze/batch", body)
    heavy_s = time.monotonic() - start
    assert r.status_code == 200, r.text[:300]
    codes = {t: res[t].get("code") for res in r.json()["results"] for t in ("ner", "sentiment", "summary")}
    assert codes == {"ner": "deadline_exceeded", "sentiment": "deadline_exceeded", "summary": "deadline_exceeded"}
    start = time.monotonic()
    small = post(url, "/analyze", {"text": f"Tim Cook visited Paris on {uuid.uuid4().hex}."})
    small_s = time.monotonic() - start
    assert all("error" not in small.json()[t] for t in ("ner", "sentiment", "summary")), small.text
    time.sleep(0.5)
    after = _cancelled()
    print(f"\nheavy answered in {heavy_s:.2f} s, the next small request in {small_s:.2f} s; cancelled {after}")
    assert heavy_s < 1.5
    assert after["Encoder"] > before["Encoder"] and after["NER"] > before["NER"]  # stopped, not left running
    assert small_s < 1.5  # ~12 s of work was given up, not waited for
