"""`nlpserve analyze`: send a JSONL file through the service, resumably.

    nlpserve analyze input.jsonl -o output.jsonl [--url http://127.0.0.1:8000] [--tasks ner sentiment]
    nlpserve analyze input.jsonl -o output.jsonl --url grpc://127.0.0.1:9000   # the same, over gRPC

Each input line is a JSON string (the text) or an object with "text" and optionally "id".
Each output line is {"line": n, "id": ..., <the /analyze answer>}, written as batches finish
(so not in input order); only answers with every task done are written there. Lines that cannot
be analyzed go to the errors file with their line number and the reason: bad lines (not UTF-8,
not JSON, blank, no text, a lone surrogate, refused by the service with a 413 or 422, or that
could not be sent) for good, and lines marked "retry" (a task answered with an error, the request
still failed after its retries, or the answer was not what the API describes) until the next run.
Re-running the same command skips every line in the output file and every final error, and sends
the "retry" lines again, so an interrupted run loses nothing and writes no line twice. Any other
refusal (400, 403, 404, 405, ...: a wrong --url, a Host the service does not allow) is about the
run, not a line: the run stops at once with exit status 1 and records nothing for the lines it was
sending. Without --url a temporary local graph is started from config/config.yaml.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import sys
from collections.abc import Callable
from pathlib import Path

import httpx
from tqdm import tqdm

from nlpserve.client import AsyncClient, ServiceError, UnexpectedAnswer
from nlpserve.jsonl import Line, done_lines, error_record, numbered, read
from nlpserve.schemas import TASKS

# Seconds per request, under the service's http_options.request_timeout_s (60 in config/*.yaml): the service
# answers by deadline_ms (49.5 s), or else this client gives up at 55 s and retries, before Serve's 408 at 60 s.
TIMEOUT_S = 55.0
# The refusals that are the service's verdict on the texts of a request: 413 (a text, or the batch, over a
# limit) and 422 (invalid). A batch refused so is sent again line by line to find the refused ones. Any
# other refusal (400 Host not allowed, 401, 403 cross-site, 404 wrong --url path, 405, ...) would be the
# same for every line: the run stops instead of recording lines as failed. (The service's 400s for bad
# JSON or UTF-8 cannot be about a line: the client encodes every body, and parse refused what it cannot.)
PER_LINE = (413, 422)


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
            elif missing := [t for t in self.tasks if r.get(t) is None]:  # an unexpected answer: try again later
                self.write_error(x.number, "not in the answer: " + ", ".join(missing), retry=True)
            else:
                done.append(json.dumps({"line": x.number, "id": x.id, **r}) + "\n")
        self.out.write("".join(done))
        self.out.flush()
        self.counts["ok"] += len(done)
        self.bar.update(len(lines))

    def write_error(self, number: int, reason: str, retry: bool = False, tasks: dict | None = None) -> None:
        """A final error, or with ``retry`` one whose line the next run sends again."""
        self.errors.write(error_record(number, reason, retry, tasks))
        self.errors.flush()
        self.counts["retry" if retry else "failed"] += 1

    def fail(self, lines: list[Line], error: Exception, retry: bool) -> None:
        for x in lines:
            self.write_error(x.number, _describe(error), retry)
        self.bar.update(len(lines))

    async def batch(self, lines: list[Line], limit: asyncio.Semaphore) -> None:
        """Sends ``lines`` (the client retries) and records the answers, or why there are none. Raises the
        ServiceError of a refusal that is not about the lines (see PER_LINE), recording nothing."""
        async with limit:
            try:
                results = await self.client.analyze_batch([x.text for x in lines], self.tasks, self.deadline_ms)
            except ServiceError as e:
                if not e.retryable and e.status not in PER_LINE:
                    raise
                if e.retryable or len(lines) == 1:
                    self.fail(lines, e, retry=e.retryable)
                    return
            except (httpx.TransportError, UnexpectedAnswer) as e:
                self.fail(lines, e, retry=True)
                return
            except Exception as e:  # e.g. a text no request can carry that parse let through: a line's fault
                if len(lines) == 1:
                    self.fail(lines, e, retry=False)
                    return
            else:
                self.write_results(lines, results)
                return
        for x in lines:  # the batch was refused or could not be sent: find the line(s) at fault, one by one
            await self.batch([x], limit)


def _describe(error: Exception) -> str:
    return str(error) if isinstance(error, ServiceError) else f"{type(error).__name__}: {error}"


def deadline_ms(timeout_s: float) -> int:
    """90 % of the client's timeout: the service answers (unfinished tasks as deadline_exceeded)
    before the client would give up and send the same work again. At most the API's 600,000."""
    return max(1, min(600_000, int(timeout_s * 900)))


async def analyze(args: argparse.Namespace, url: str) -> dict:
    """Raises the ServiceError of a refusal of the run (see PER_LINE), with the batches in flight cancelled."""
    done = done_lines(args.output) | done_lines(args.errors)
    todo, bad = read(numbered(args.input), done)
    with open(args.errors, "a") as errors, open(args.output, "a") as out:
        with tqdm(total=len(todo), unit="text", desc="analyze", disable=args.quiet) as bar:
            transport = "grpc" if url.startswith("grpc://") else "http"
            async with AsyncClient(url, timeout=args.timeout, retries=args.retries, transport=transport) as client:
                runner = Runner(client, args.tasks, out, errors, deadline_ms(args.timeout), bar)
                for number, reason in bad:
                    runner.write_error(number, reason)
                limit = asyncio.Semaphore(args.concurrency)
                chunks = [todo[i : i + args.batch_size] for i in range(0, len(todo), args.batch_size)]
                batches = [asyncio.ensure_future(runner.batch(c, limit)) for c in chunks]
                try:
                    await asyncio.gather(*batches)
                finally:  # after a refusal (or Ctrl-C) the other batches stop where they are, recording nothing
                    for b in batches:
                        b.cancel()
                    await asyncio.gather(*batches, return_exceptions=True)
    return {"skipped": len(done), **runner.counts}


def _at_least(minimum: int) -> Callable[[str], int]:
    """An argparse type: a whole number, ``minimum`` or more."""

    def whole(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be {minimum} or more, not {value}")
        return value

    return whole


def _seconds(text: str) -> float:
    """An argparse type: a finite number of seconds over 0."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not 0 < value < math.inf:
        raise argparse.ArgumentTypeError(f"must be more than 0 seconds, not {text}")
    return value


def _url(text: str) -> str:
    """An argparse type: an http://, https:// or grpc:// URL with a host (anything else would fail every
    request)."""
    try:
        url = httpx.URL(text)
    except httpx.InvalidURL as e:
        raise argparse.ArgumentTypeError(f"{text!r} is not a URL: {e}") from None
    if url.scheme not in ("http", "https", "grpc") or not url.host:
        raise argparse.ArgumentTypeError(f"{text!r} is not an http://, https:// or grpc:// URL with a host")
    return text


def _http(args: argparse.Namespace) -> dict:
    """The http engine's run: against --url, or a temporary local graph."""
    if args.url:
        return asyncio.run(analyze(args, args.url))
    from nlpserve.on_ray import local

    url = local.start()
    try:
        return asyncio.run(analyze(args, url))
    finally:
        local.stop()


def parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="nlpserve", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    _analyze_arguments(sub.add_parser("analyze", help="analyze a JSONL file"))
    return parser


def _analyze_arguments(a: argparse.ArgumentParser) -> None:
    """What to analyze, where the answers go, and which engine runs it."""
    a.add_argument("input", type=Path)
    a.add_argument("-o", "--output", type=Path, required=True)
    a.add_argument(
        "--errors",
        type=Path,
        help="where bad lines go (default: OUTPUT with .errors.jsonl); lines whose tasks answered an error, whose "
        "request failed after its retries, or whose answer was unexpected go there too, marked "
        '"retry": re-running sends them again',
    )
    a.add_argument(
        "--engine",
        choices=("http", "ray-data"),
        default="http",
        help="http: requests to a service (--url, or a temporary local graph); ray-data: the whole file "
        "through the models on Ray Data, no service (for big files; JSONL or Parquet in and out)",
    )
    a.add_argument(
        "--url",
        type=_url,
        help="a running service (http://host:8000, or grpc://host:9000 for gRPC); default: a temporary local graph",
    )
    a.add_argument(
        "--address",
        help="ray-data: the Ray cluster to run on, as ray.init's address; default: RAY_ADDRESS, or a cluster "
        "started with `ray start` on this machine, else a new local Ray",
    )
    a.add_argument("--tasks", nargs="+", choices=TASKS, default=list(TASKS))
    _request_arguments(a)


def _request_arguments(a: argparse.ArgumentParser) -> None:
    """How the http engine sends: batches, concurrency, retries, timeouts."""
    a.add_argument("--batch-size", type=_at_least(1), default=16, help="texts per request")
    a.add_argument("--concurrency", type=_at_least(1), default=4, help="requests in flight")
    a.add_argument(
        "--retries",
        type=_at_least(0),
        default=5,
        help="retries per request after 408, 429, 5xx, a connection error or a timeout, waiting the service's "
        "Retry-After or else 0.5, 1, 2, ... up to 10 s",
    )
    a.add_argument(
        "--timeout",
        type=_seconds,
        default=TIMEOUT_S,
        help="seconds per request (default: %(default)s); the service is asked (deadline_ms) to answer within 90%% "
        "of it, tasks not done by then come back as errors and their lines are retried on the next run. Keep it "
        "under the service's http_options.request_timeout_s (60 s in config/*.yaml): past that Serve answers 408 "
        "for the whole request, which is retried from the start",
    )
    a.add_argument("--quiet", action="store_true", help="no progress bar")


def main(argv: list[str] | None = None) -> None:
    cli = parser()
    args = cli.parse_args(argv)
    args.errors = args.errors or args.output.with_suffix(".errors.jsonl")

    if args.engine == "ray-data":
        if args.url:
            cli.error("--url is for --engine http")
        from nlpserve.on_ray import bulk  # Ray Data is imported only for this engine

        summary = bulk.run(args)
    else:
        try:
            summary = _http(args)
        except ServiceError as e:  # a refusal of the run, not of a line (see PER_LINE)
            raise SystemExit(
                f"nlpserve analyze: stopped, the service refuses the run: {e}\n"
                "Check --url (and the service's allowed_hosts); nothing was recorded for the lines not done, "
                "so the next run sends them."
            ) from None
    print(
        f"{summary['ok']} analyzed, {summary['failed']} failed, {summary['retry']} to retry by re-running "
        f"(see {args.errors}), {summary['skipped']} already done",
        file=sys.stderr,
    )


if __name__ == "__main__":
    main()
