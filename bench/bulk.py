"""Bulk runs: one JSONL file through `nlpserve analyze --engine ray-data`, through the HTTP CLI against a
local graph (config/config.yaml), and the in-process batched rate (bench/run.py), on the same machine.

    python -m bench.bulk [--lines 3000] [--out DIR]

Both CLIs run in this process, so its CPU time is the client's (for ray-data, the driver: reading,
Ray Data's executor, writing). Per CLI: the wall time of the whole command, the time to its first
written answer (ray-data: starting Ray and loading the models; HTTP: the first requests), and the rate
after that. The HTTP figures leave out starting the graph (printed on its own), as for a running service.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import threading
import time
from pathlib import Path

from bench.run import in_process
from bench.texts import make_texts
from nlpserve import cli
from nlpserve.on_ray import local
from nlpserve.on_ray.local import ROOT


class FirstAnswer:
    """Watches ``path`` from a thread for its first written line: when, and how many lines it had then."""

    def __init__(self, path: Path) -> None:
        self.path, self.at, self.lines = path, None, 0
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._watch, daemon=True)
        self.thread.start()

    def _watch(self) -> None:
        while not self.done.wait(0.05):
            if self.path.exists() and self.path.stat().st_size:
                self.at, self.lines = time.perf_counter(), self.path.read_bytes().count(b"\n")
                return

    def stop(self) -> None:
        self.done.set()
        self.thread.join()


def timed(argv: list[str], out: Path) -> dict:
    """Runs the CLI with ``argv`` and measures it (see the module docstring)."""
    first = FirstAnswer(out)
    cpu, start = time.process_time(), time.perf_counter()
    cli.main(argv)
    end, cpu = time.perf_counter(), time.process_time() - cpu
    first.stop()
    texts = out.read_bytes().count(b"\n")
    return {
        "texts": texts,
        "wall_s": end - start,
        "texts_per_s": texts / (end - start),
        "first_answer_s": first.at - start,
        "after_first_texts_per_s": (texts - first.lines) / (end - first.at),
        "client_cpu_share": cpu / (end - start) / (os.cpu_count() or 1),
    }


def agreement(a: Path, b: Path) -> int:
    """Lines with the same entities (spans and labels), sentiment label and summary in both outputs."""

    def key(r: dict) -> tuple:
        spans = [(e["entity_group"], e["start"], e["end"]) for e in r["ner"]]
        return spans, r["sentiment"]["label"], r["summary"]

    first = {r["line"]: key(r) for r in map(json.loads, a.read_text().splitlines())}
    return sum(first.get(r["line"]) == key(r) for r in map(json.loads, b.read_text().splitlines()))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lines", type=int, default=3000)
    parser.add_argument("--out", type=Path, help="keep the input and outputs here (default: a temporary directory)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        where = args.out or Path(tmp)
        where.mkdir(parents=True, exist_ok=True)
        src = where / "bulk.jsonl"
        texts = make_texts(args.lines)
        src.write_text("".join(json.dumps({"id": i, "text": t}) + "\n" for i, t in enumerate(texts)))
        outs = {"ray-data": where / "ray-data.jsonl", "http": where / "http.jsonl"}
        for path in outs.values():
            path.unlink(missing_ok=True)
            path.with_suffix(".errors.jsonl").unlink(missing_ok=True)

        print("in-process ...", flush=True)
        batched = in_process(15, threads=os.cpu_count() or 1)["throughput_texts_per_s"]
        print("ray-data ...", flush=True)
        # A new local Ray with every CPU, as the graph gets.
        argv = ["analyze", str(src), "-o", str(outs["ray-data"]), "--quiet"]
        ray_data = timed([*argv, "--engine", "ray-data", "--address", "local"], outs["ray-data"])
        print("HTTP CLI ...", flush=True)
        start = time.perf_counter()
        url = local.start(ROOT / "config" / "config.yaml")
        try:
            graph_s = time.perf_counter() - start
            http = timed(["analyze", str(src), "-o", str(outs["http"]), "--url", url, "--quiet"], outs["http"])
        finally:
            local.stop()
        same = agreement(outs["ray-data"], outs["http"])

    print(f"\n{args.lines} texts of bench.texts (news paragraphs of ~107 tokens), {os.cpu_count()} CPUs\n")
    print("| mode | texts | wall s | texts/s | first answer s | texts/s after it | client CPU |")
    print("|---|---|---|---|---|---|---|")
    print(f"| in-process batched (bench/run.py) | - | - | {batched:.1f} | - | - | - |")
    for name, r in (("ray-data", ray_data), ("HTTP CLI", http)):
        print(
            f"| {name} | {r['texts']} | {r['wall_s']:.1f} | {r['texts_per_s']:.1f} | {r['first_answer_s']:.1f} | "
            f"{r['after_first_texts_per_s']:.1f} | {100 * r['client_cpu_share']:.1f}% |"
        )
    print(f"\nstarting the local graph for the HTTP CLI: {graph_s:.1f} s (not in its figures)")
    print(f"answers the same in both (entities, sentiment label, summary): {same} of {args.lines}")
    for label, key in (("whole command", "texts_per_s"), ("after the first answer", "after_first_texts_per_s")):
        rd, h = ray_data[key], http[key]
        print(
            f"{label}: ray-data / HTTP {rd / h:.2f}x (goal >= 1.5x), ray-data / in-process batched "
            f"{rd / batched:.2f}x (goal >= 1x)"
        )


if __name__ == "__main__":
    main()
