"""`nlpserve analyze`: send a JSONL file through the service, resumably.

    nlpserve analyze input.jsonl -o output.jsonl [--url http://127.0.0.1:8000] [--tasks ner sentiment]

Each input line is a JSON string (the text) or an object with "text" and optionally "id".
Each output line is {"line": n, "id": ..., <the /analyze answer>}, written as batches finish
(so not in input order); only answers with every task done are written there. Lines that cannot
be analyzed go to the errors file with their line number and the reason: bad lines (not UTF-8,
not JSON, no text, refused by the service with a 4xx) for good, and lines marked "retry" (a task
answered with an error, or the request still failed after its retries) until the next run.
Re-running the same command skips every line in the output file and every final error, and sends
the "retry" lines again, so an interrupted run loses nothing and writes no line twice. Without
--url a temporary local graph is started from config/config.yaml.
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
from tqdm import tqdm

from nlpserve.client import AsyncClient, ServiceError
from nlpserve.schemas import TASKS


@dataclass
class Line:
    number: int
    id: Any
    text: str


def parse(number: int, raw: bytes) -> Line | str:
    """The line, or why it is bad."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        return f"not UTF-8: {e.reason} at byte {e.start} of the line"
    try:
        value = json.loads(text)
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


def _task_errors(result: dict, tasks: list[str]) -> dict[str, dict]:
    """The asked tasks that answered {"error": ..., "code": ...} instead of a result."""
    return {t: result[t] for t in tasks if isinstance(result.get(t), dict) and "error" in result[t]}


class Runner:
    def __init__(self, client: AsyncClient, tasks: list[str], out, errors, deadline_ms: int, bar: tqdm) -> None:
        self.client, self.tasks, self.out, self.errors, self.bar = client, tasks, out, errors, bar
        self.deadline_ms = deadline_ms
        self.counts = {"ok": 0, "failed": 0, "retry": 0}

    def write_results(self, lines: list[Line], results: list[dict]) -> None:
        done = []
        for x, r in zip(lines, results):
            if failed := _task_errors(r, self.tasks):
                reason = "task errors: " + ", ".join(f"{t} ({e.get('code')})" for t, e in failed.items())
                self.write_error(x.number, reason, retry=True, tasks=failed)
            else:
                done.append(json.dumps({"line": x.number, "id": x.id, **r}) + "\n")
        self.out.write("".join(done))
        self.out.flush()
        self.counts["ok"] += len(done)
        self.bar.update(len(lines))

    def write_error(self, number: int, reason: str, retry: bool = False, tasks: dict | None = None) -> None:
        """A final error, or with ``retry`` one whose line the next run sends again."""
        record = {"line": number, "error": reason, "retry": retry} | ({"tasks": tasks} if tasks else {})
        self.errors.write(json.dumps(record) + "\n")
        self.errors.flush()
        self.counts["retry" if retry else "failed"] += 1

    def fail(self, lines: list[Line], error: Exception, retry: bool) -> None:
        for x in lines:
            self.write_error(x.number, _describe(error), retry)
        self.bar.update(len(lines))

    async def batch(self, lines: list[Line], limit: asyncio.Semaphore) -> None:
        """Sends ``lines`` (the client retries) and records the answers, or why there are none."""
        async with limit:
            try:
                results = await self.client.analyze_batch([x.text for x in lines], self.tasks, self.deadline_ms)
                self.write_results(lines, results)
                return
            except ServiceError as e:
                if e.retryable or len(lines) == 1:
                    self.fail(lines, e, retry=e.retryable)
                    return
            except httpx.TransportError as e:
                self.fail(lines, e, retry=True)
                return
        for x in lines:  # the service refused the batch: find the line(s) it refuses, one by one
            await self.batch([x], limit)


def _describe(error: Exception) -> str:
    return str(error) if isinstance(error, ServiceError) else f"{type(error).__name__}: {error}"


def deadline_ms(timeout_s: float) -> int:
    """90 % of the client's timeout: the service answers (unfinished tasks as deadline_exceeded)
    before the client would give up and send the same work again. At most the API's 600,000."""
    return max(1, min(600_000, int(timeout_s * 900)))


async def analyze(args: argparse.Namespace, url: str) -> dict:
    done = done_lines(args.output) | done_lines(args.errors)
    todo: list[Line] = []
    with open(args.errors, "a") as errors, open(args.output, "a") as out:
        bad = []
        with open(args.input, "rb") as f:  # decoded line by line, so a bad byte fails only its line
            for number, raw in enumerate(f, start=1):
                if number in done:
                    continue
                parsed = parse(number, raw)
                if isinstance(parsed, str):
                    bad.append((number, parsed))
                else:
                    todo.append(parsed)
        with tqdm(total=len(todo), unit="text", desc="analyze", disable=args.quiet) as bar:
            async with AsyncClient(url, timeout=args.timeout, retries=args.retries) as client:
                runner = Runner(client, args.tasks, out, errors, deadline_ms(args.timeout), bar)
                for number, reason in bad:
                    runner.write_error(number, reason)
                limit = asyncio.Semaphore(args.concurrency)
                chunks = [todo[i : i + args.batch_size] for i in range(0, len(todo), args.batch_size)]
                await asyncio.gather(*(runner.batch(c, limit) for c in chunks))
    return {"skipped": len(done), **runner.counts}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="nlpserve", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    a = sub.add_parser("analyze", help="analyze a JSONL file")
    a.add_argument("input", type=Path)
    a.add_argument("-o", "--output", type=Path, required=True)
    a.add_argument(
        "--errors",
        type=Path,
        help="where bad lines go (default: OUTPUT with .errors.jsonl); lines whose tasks answered an error, "
        'or whose request failed after its retries, go there too, marked "retry": re-running sends them again',
    )
    a.add_argument(
        "--engine",
        choices=("http", "ray-data"),
        default="http",
        help="http: requests to a service (--url, or a temporary local graph); ray-data: the whole file "
        "through the models on Ray Data, no service (for big files; JSONL or Parquet in and out)",
    )
    a.add_argument("--url", help="a running service; default: start a temporary local graph")
    a.add_argument(
        "--address",
        help="ray-data: the Ray cluster to run on, as ray.init's address; default: RAY_ADDRESS, or a cluster "
        "started with `ray start` on this machine, else a new local Ray",
    )
    a.add_argument("--tasks", nargs="+", choices=TASKS, default=list(TASKS))
    a.add_argument("--batch-size", type=int, default=16, help="texts per request")
    a.add_argument("--concurrency", type=int, default=4, help="requests in flight")
    a.add_argument(
        "--retries",
        type=int,
        default=5,
        help="retries per request after 429, 5xx, a connection error or a timeout, waiting the service's "
        "Retry-After or else 0.5, 1, 2, ... up to 10 s",
    )
    a.add_argument(
        "--timeout",
        type=float,
        default=120.0,
        help="seconds per request; the service is asked (deadline_ms) to answer within 90%% of it, tasks "
        "not done by then come back as errors and their lines are retried on the next run",
    )
    a.add_argument("--quiet", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)
    args.errors = args.errors or args.output.with_suffix(".errors.jsonl")

    if args.engine == "ray-data":
        if args.url:
            parser.error("--url is for --engine http")
        from nlpserve.on_ray import bulk  # Ray Data is imported only for this engine

        summary = bulk.run(args)
    elif args.url:
        summary = asyncio.run(analyze(args, args.url))
    else:
        from nlpserve.on_ray import local

        url = local.start()
        try:
            summary = asyncio.run(analyze(args, url))
        finally:
            local.stop()
    print(
        f"{summary['ok']} analyzed, {summary['failed']} failed, {summary['retry']} to retry by re-running "
        f"(see {args.errors}), {summary['skipped']} already done",
        file=sys.stderr,
    )


if __name__ == "__main__":
    main()
