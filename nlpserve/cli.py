"""`nlpserve analyze`: send a JSONL file through the service, resumably.

    nlpserve analyze input.jsonl -o output.jsonl [--url http://127.0.0.1:8000] [--tasks ner sentiment]

Each input line is a JSON string (the text) or an object with "text" and optionally "id".
Each output line is {"line": n, "id": ..., <the /analyze answer>}, written as batches finish
(so not in input order). Lines that cannot be analyzed go to the errors file with their line
number and the reason. Re-running the same command skips every line already in the output
or errors file, so an interrupted run loses nothing and writes nothing twice. Without --url a
temporary local graph is started from config/config.yaml.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from tenacity import AsyncRetrying, retry_if_exception, stop_after_attempt, wait_exponential
from tqdm import tqdm

from nlpserve.schemas import TASKS

RETRY_STATUS = {429, 502, 503, 504}


@dataclass
class Line:
    number: int
    id: Any
    text: str


def parse(number: int, raw: str) -> Line | str:
    """The line, or why it is bad."""
    try:
        value = json.loads(raw)
    except json.JSONDecodeError as e:
        return f"not JSON: {e.msg}"
    if isinstance(value, str):
        value = {"text": value}
    if not isinstance(value, dict) or not isinstance(value.get("text"), str):
        return 'expected a JSON string or an object with a string "text"'
    if not value["text"].strip():
        return "text is empty"
    return Line(number, value.get("id", number), value["text"])


def done_lines(path: Path) -> set[int]:
    """Line numbers already recorded in ``path``; a torn last line (from a kill) is cut off."""
    if not path.exists():
        return set()
    data = path.read_bytes()
    keep = data[: data.rfind(b"\n") + 1]
    if len(keep) != len(data):
        path.write_bytes(keep)
    return {json.loads(x)["line"] for x in keep.decode().splitlines() if x.strip()}


def _retryable(error: BaseException) -> bool:
    if isinstance(error, httpx.HTTPStatusError):
        return error.response.status_code in RETRY_STATUS
    return isinstance(error, httpx.TransportError)


class Runner:
    def __init__(self, url: str, tasks: list[str], out, errors, retries: int, bar: tqdm) -> None:
        self.url, self.tasks, self.out, self.errors, self.bar = url, tasks, out, errors, bar
        self.retries = retries
        self.counts = {"ok": 0, "failed": 0}

    async def post(self, client: httpx.AsyncClient, path: str, body: dict) -> dict:
        retrying = AsyncRetrying(
            retry=retry_if_exception(_retryable),
            stop=stop_after_attempt(self.retries),
            wait=wait_exponential(multiplier=0.5, max=10),
            reraise=True,
        )
        async for attempt in retrying:
            with attempt:
                r = await client.post(self.url + path, json=body)
                r.raise_for_status()
                return r.json()
        raise AssertionError("unreachable")

    def write_results(self, lines: list[Line], results: list[dict]) -> None:
        self.out.write("".join(json.dumps({"line": x.number, "id": x.id, **r}) + "\n" for x, r in zip(lines, results)))
        self.out.flush()
        self.counts["ok"] += len(lines)
        self.bar.update(len(lines))

    def write_error(self, number: int, reason: str) -> None:
        self.errors.write(json.dumps({"line": number, "error": reason}) + "\n")
        self.errors.flush()
        self.counts["failed"] += 1

    async def batch(self, client: httpx.AsyncClient, lines: list[Line], limit: asyncio.Semaphore) -> None:
        async with limit:
            try:
                body = await self.post(
                    client, "/analyze/batch", {"texts": [x.text for x in lines], "tasks": self.tasks}
                )
                self.write_results(lines, body["results"])
                return
            except httpx.HTTPStatusError as e:
                if e.response.status_code in RETRY_STATUS or len(lines) == 1:
                    for x in lines:
                        self.write_error(x.number, _describe(e))
                        self.bar.update(1)
                    return
            except httpx.TransportError as e:
                for x in lines:
                    self.write_error(x.number, _describe(e))
                    self.bar.update(1)
                return
        for x in lines:  # the service refused the batch: find the line(s) it refuses, one by one
            await self.batch(client, [x], limit)


def _describe(error: Exception) -> str:
    if isinstance(error, httpx.HTTPStatusError):
        try:
            detail = error.response.json().get("detail")
        except ValueError:
            detail = error.response.text[:300]
        return f"HTTP {error.response.status_code}: {detail}"
    return f"{type(error).__name__}: {error}"


async def analyze(args: argparse.Namespace, url: str) -> dict:
    done = done_lines(args.output) | done_lines(args.errors)
    todo: list[Line] = []
    with open(args.errors, "a") as errors, open(args.output, "a") as out:
        bad = []
        with open(args.input, encoding="utf-8", errors="replace") as f:
            for number, raw in enumerate(f, start=1):
                if number in done:
                    continue
                parsed = parse(number, raw)
                if isinstance(parsed, str):
                    bad.append((number, parsed))
                else:
                    todo.append(parsed)
        with tqdm(total=len(todo), unit="text", desc="analyze", disable=args.quiet) as bar:
            runner = Runner(url, args.tasks, out, errors, args.retries, bar)
            for number, reason in bad:
                runner.write_error(number, reason)
            limit = asyncio.Semaphore(args.concurrency)
            chunks = [todo[i : i + args.batch_size] for i in range(0, len(todo), args.batch_size)]
            async with httpx.AsyncClient(timeout=args.timeout) as client:
                await asyncio.gather(*(runner.batch(client, c, limit) for c in chunks))
    return {"skipped": len(done), **runner.counts}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="nlpserve", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    a = sub.add_parser("analyze", help="analyze a JSONL file")
    a.add_argument("input", type=Path)
    a.add_argument("-o", "--output", type=Path, required=True)
    a.add_argument("--errors", type=Path, help="where bad lines go (default: OUTPUT with .errors.jsonl)")
    a.add_argument("--url", help="a running service; default: start a temporary local graph")
    a.add_argument("--tasks", nargs="+", choices=TASKS, default=list(TASKS))
    a.add_argument("--batch-size", type=int, default=16, help="texts per request")
    a.add_argument("--concurrency", type=int, default=4, help="requests in flight")
    a.add_argument("--retries", type=int, default=5, help="attempts per request on 429/5xx/connection errors")
    a.add_argument("--timeout", type=float, default=120.0)
    a.add_argument("--quiet", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)
    args.errors = args.errors or args.output.with_suffix(".errors.jsonl")

    if args.url:
        summary = asyncio.run(analyze(args, args.url.rstrip("/")))
    else:
        from nlpserve import local

        url = local.start()
        try:
            summary = asyncio.run(analyze(args, url))
        finally:
            local.stop()
    print(
        f"{summary['ok']} analyzed, {summary['failed']} failed (see {args.errors}), {summary['skipped']} already done",
        file=sys.stderr,
    )


if __name__ == "__main__":
    main()
