"""The batch CLI's input parsing and resume bookkeeping, without a service."""

import json

from nlpserve.cli import Line, done_lines, parse


def test_parse_accepts_strings_and_objects_and_says_why_a_line_is_bad():
    assert parse(3, '"hello"\n') == Line(3, 3, "hello")
    assert parse(4, '{"id": "a", "text": "hi"}') == Line(4, "a", "hi")
    assert parse(5, "{broken").startswith("not JSON")
    assert "string" in parse(6, '{"id": 1}')
    assert "string" in parse(7, "[1, 2]")
    assert parse(8, '"   "') == "text is empty"


def test_done_lines_reads_finished_lines_and_cuts_a_torn_last_line(tmp_path):
    out = tmp_path / "out.jsonl"
    assert done_lines(out) == set()
    out.write_text(json.dumps({"line": 1}) + "\n" + json.dumps({"line": 4}) + '\n{"line": 7, "ner"')
    assert done_lines(out) == {1, 4}
    assert out.read_text().endswith("}\n")  # the torn line is gone, so a re-run appends cleanly
