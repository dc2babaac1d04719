"""The input lines of `nlpserve analyze` and its records, shared by both engines (nlpserve.cli over HTTP,
nlpserve.on_ray.bulk on Ray Data), so a bad line gets the same reason and the same errors-file record from
either. Imports no Ray: the HTTP engine stays light.
"""

from __future__ import annotations

import codecs
import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass
class Line:
    number: int
    id: Any
    text: str


def numbered(path: Path) -> Iterator[tuple[int, bytes]]:
    """(number, bytes) of each line of a JSONL file, from 1. A UTF-8 BOM at the start of the file (Windows
    editors write one) is left out of line 1."""
    with open(path, "rb") as f:  # decoded line by line, so a bad byte fails only its line
        for number, raw in enumerate(f, start=1):
            yield number, raw.removeprefix(codecs.BOM_UTF8) if number == 1 else raw


def _lone_surrogate(value: str) -> int | None:
    """Where ``value`` has a lone surrogate (from a JSON escape like \\ud800), or None. It is the one kind of
    character UTF-8 cannot encode, so neither a request body nor an Arrow string can carry it."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as e:
        return e.start
    return None


def parse(number: int, raw: bytes) -> Line | str:
    """The line, or why it is bad."""
    try:
        decoded = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        return f"not UTF-8: {e.reason} at byte {e.start} of the line"
    if not decoded.strip():
        return "blank line"
    try:
        value = json.loads(decoded)
    except json.JSONDecodeError as e:
        return f"not JSON: {e.msg}"
    if isinstance(value, str):
        value = {"text": value}
    if not isinstance(value, dict) or not isinstance(value.get("text"), str):
        return 'expected a JSON string or an object with a string "text"'
    text, ident = value["text"], value.get("id", number)
    if not text.strip():
        return "text is empty"
    if (at := _lone_surrogate(text)) is not None:
        return f"text has a lone surrogate \\u{ord(text[at]):04x} at character {at}, which UTF-8 cannot encode"
    written = json.dumps(ident, ensure_ascii=False)  # as the output holds it (and Parquet, a string id as it is)
    if (at := _lone_surrogate(written)) is not None:
        return f"id has a lone surrogate \\u{ord(written[at]):04x}, which UTF-8 cannot encode"
    return Line(number, ident, text)


def read(lines: Iterable[tuple[int, bytes]], done: set[int]) -> tuple[list[Line], list[tuple[int, str]]]:
    """The lines to analyze, and the bad ones as (number, why); lines in ``done`` are left out."""
    good, bad = [], []
    for number, raw in lines:
        if number in done:
            continue
        parsed = parse(number, raw)
        if isinstance(parsed, str):
            bad.append((number, parsed))
        else:
            good.append(parsed)
    return good, bad


def error_record(number: int, reason: str, retry: bool = False, tasks: dict | None = None) -> str:
    """A line of the errors file: a final error, or with ``retry`` one whose line the next run sends again;
    ``tasks``: the answers of the tasks that failed."""
    record = {"line": number, "error": reason, "retry": retry} | ({"tasks": tasks} if tasks else {})
    return json.dumps(record) + "\n"


def done_lines(path: Path) -> set[int]:
    """Line numbers finished in ``path``. Records marked "retry" are taken out, so their lines are
    sent again and recorded once; so is a torn last line (from a kill)."""
    if not path.exists():
        return set()
    data = path.read_bytes()
    records = [(x, json.loads(x)) for x in data[: data.rfind(b"\n") + 1].splitlines(keepends=True) if x.strip()]
    keep = [(x, r) for x, r in records if not r.get("retry")]
    if sum(len(x) for x, _ in keep) != len(data):
        new = path.with_name(path.name + ".tmp")  # replaced in one step: a kill now cannot lose the file
        new.write_bytes(b"".join(x for x, _ in keep))
        new.replace(path)
    return {r["line"] for _, r in keep}
