"""One benchmark run: in-process vs the Serve graph over HTTP vs separate services, same machine.

    pip install -e ".[bench]"
    python -m bench [--quick] [--out docs/bench]

Writes report.md (printed too), results.json and bench.png to --out.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import httpx
import numpy as np
import torch

from bench.load import load, percentiles
from bench.texts import PARAGRAPHS, make_texts
from nlpserve.on_ray import local
from nlpserve.on_ray.local import ROOT, free_port
from nlpserve.schemas import TASKS

CONCURRENCY = (1, 4, 16, 64)
BATCHES = (1, 8, 16, 32)


# ---------------------------------------------------------------- in-process


def in_process(reps: int, threads: int) -> dict:
    """The best monolith with the same kernels: tokenize once, encode once for both heads, NER, the
    heads, all called directly in this process with ``threads`` threads for the encoder."""
    from nlpserve.models.encoder import Encoder
    from nlpserve.models.ner import SpacyNER
    from nlpserve.models.sentiment import SentimentModel
    from nlpserve.models.summarize import ExtractiveSummarizer
    from nlpserve.tokens import Tokenizer

    torch.set_num_threads(threads)
    encoder = Encoder(threads=threads)
    tokenizer = Tokenizer()
    ner = SpacyNER()
    heads = {"sentiment": SentimentModel(), "summary": ExtractiveSummarizer()}

    def once(texts: list[str]) -> dict:
        t = {}
        start = time.perf_counter()
        batch = tokenizer(texts)
        rows = list(range(len(texts)))
        t["tokenize"] = time.perf_counter() - start
        s = time.perf_counter()
        (encoded,) = encoder.encode([(batch, rows)])
        vectors = [encoded.row(i) for i in rows]
        t["encode"] = time.perf_counter() - s
        s = time.perf_counter()
        ner(batch, rows)
        t["ner"] = time.perf_counter() - s
        for name, head in heads.items():
            s = time.perf_counter()
            head(batch, rows, vectors)
            t[name] = time.perf_counter() - s
        t["total"] = time.perf_counter() - start
        return {k: v * 1000 for k, v in t.items()}

    once(make_texts(8))  # warm-up
    single = [once(make_texts(1, i)) for i in range(reps)]
    stages = {k: statistics.median(s[k] for s in single) for k in single[0]}
    sweep = {}
    for bs in BATCHES:
        runs = [once(make_texts(bs, k * bs))["total"] for k in range(max(5, 2 * reps // bs))]
        per_text = statistics.median(runs) / bs
        sweep[bs] = {"per_text_ms": per_text, "texts_per_s": 1000 / per_text}
    return {
        "threads": threads,
        "c1": {**percentiles([s["total"] for s in single]), "req_per_s": 1000 / stages["total"]},
        "stages_ms": stages,
        "batch": sweep,
        "throughput_texts_per_s": max(v["texts_per_s"] for v in sweep.values()),
    }


# ---------------------------------------------------------------- over HTTP


def http_modes(url: str, scale: float, with_timings: bool) -> dict:
    """Every request carries texts never sent before, so the service's caches never answer."""
    counter = iter(range(10**9))
    out: dict = {"concurrency": {}, "batch": {}}
    for c in CONCURRENCY:
        n = max(60, int(c * 12 * scale))
        cpu, wall = time.process_time(), time.perf_counter()
        r = load(url + "/analyze", lambda i: {"text": make_texts(1, next(counter))[0]}, c, n)
        share = (time.process_time() - cpu) / (time.perf_counter() - wall) / (os.cpu_count() or 1)
        out["concurrency"][c] = {**r.summary(), "client_cpu_share": share}
        if c == 1 and with_timings:
            out["stages_ms"] = stage_split(r)
    for bs in BATCHES:
        requests = max(4, int(24 * scale / bs) + 2)
        r = load(url + "/analyze/batch", lambda i, bs=bs: {"texts": make_texts(bs, next(counter) * 64)}, 1, requests)
        s = r.summary()
        out["batch"][bs] = {"per_text_ms": s["p50_ms"] / bs, "texts_per_s": s["texts_per_s"]}
    return out


def stage_split(r) -> dict:
    """Median per-stage times of single requests at concurrency 1, from the responses' timings."""
    rows = []
    for latency, body in zip(r.latencies_ms, r.bodies):
        t = body["timings"]
        slowest = max(t["tasks"].values(), key=lambda x: x["call_ms"])
        rows.append(
            {
                "http_and_proxy": latency - t["ingress_ms"],
                "queue_and_batch_wait": t["queue_ms"],
                "tokenize": t["tokenize_ms"],
                "object_store_put": t["put_ms"],
                "object_store_get (slowest task)": slowest["get_ms"],
                "shared encoder pass (heads)": t["tasks"].get("sentiment", {}).get("encode_ms") or 0.0,
                "model compute (slowest task)": slowest["compute_ms"],
                "handle call overhead (slowest task)": slowest["call_ms"]
                - slowest["get_ms"]
                - (slowest.get("encode_ms") or 0.0)
                - slowest["compute_ms"],
                **{f"compute {k}": v["compute_ms"] for k, v in t["tasks"].items()},
                "total": latency,
            }
        )
    return {k: statistics.median(row[k] for row in rows) for k in rows[0]}


@contextmanager
def serve_graph(config: Path):
    url = local.start(config)
    try:
        yield url
    finally:
        local.stop()


@contextmanager
def separate_services():
    ports = {role: free_port() for role in (*TASKS, "gateway")}
    urls = {role: f"http://127.0.0.1:{p}" for role, p in ports.items()}
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    cmd = [sys.executable, "-m", "bench.services"]
    procs = [subprocess.Popen([*cmd, t, "--port", str(ports[t])], cwd=ROOT, env=env) for t in TASKS]
    links = [a for t in TASKS for a in (f"--{t}", urls[t])]
    procs.append(subprocess.Popen([*cmd, "gateway", "--port", str(ports["gateway"]), *links], cwd=ROOT, env=env))
    try:
        deadline = time.monotonic() + 120
        for url in urls.values():
            while True:
                try:
                    if httpx.get(url + "/healthz", timeout=2).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                if time.monotonic() > deadline:
                    raise TimeoutError(f"{url} did not start")
                time.sleep(0.5)
        yield urls["gateway"]
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            p.wait(timeout=30)


def locust_run(url: str, out: Path, seconds: int) -> dict | None:
    if shutil.which("locust") is None:
        return None
    prefix = out / "locust"
    cmd = ["locust", "-f", str(ROOT / "load_tests/locustfile.py"), "--headless", "-u", "8", "-r", "4"]
    cmd += ["-t", f"{seconds}s", "--host", url, "--csv", str(prefix), "--html", str(prefix) + ".html", "--only-summary"]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}  # the locustfile imports bench.texts
    subprocess.run(cmd, check=False, capture_output=True, timeout=seconds + 60, env=env)
    import csv

    with open(str(prefix) + "_stats.csv") as f:
        rows = {r["Name"]: r for r in csv.DictReader(f)}
    agg = rows["Aggregated"]
    return {
        "users": 8,
        "seconds": seconds,
        "requests": int(agg["Request Count"]),
        "failures": int(agg["Failure Count"]),
        "p50_ms": float(agg["50%"]),
        "p95_ms": float(agg["95%"]),
        "req_per_s": float(agg["Requests/s"]),
    }


# ---------------------------------------------------------------- kernels


def kernels_effect() -> dict:
    """Speed of each encoder kernel as served and its effect on the answers, against torch float32."""
    from bench.kernels import served

    return served(make_texts(len(PARAGRAPHS)))


# ---------------------------------------------------------------- report


def report(res: dict) -> str:
    ip, sg, ss = res["in_process"], res["serve"], res["separate"]
    lines = [
        f"Machine: {os.cpu_count()} CPUs, {platform.machine()}, Python {platform.python_version()}, "
        f"torch {torch.__version__}. Texts: news paragraphs of {res['words']} words ({res['tokens']} tokens) "
        "on average, never sent before; all three tasks per text. Warm-up requests excluded. The load "
        "generator shares the cores: its CPU share (of all cores) is printed beside each HTTP figure.",
        "",
        "### Concurrency sweep (`POST /analyze`, one text per request)",
        "",
        "| mode | clients | requests | p50 ms | p95 ms | p99 ms | texts/s | client CPU |",
        "|---|---|---|---|---|---|---|---|",
        f"| in-process ({ip['threads']} threads) | 1 | {res['reps']} | {ip['c1']['p50_ms']:.1f} | "
        f"{ip['c1']['p95_ms']:.1f} | {ip['c1']['p99_ms']:.1f} | {ip['c1']['req_per_s']:.1f} | - |",
    ]
    for name, mode in (("Serve graph", sg), ("separate services", ss)):
        for c, r in mode["concurrency"].items():
            lines.append(
                f"| {name} | {c} | {r['requests']} | {r['p50_ms']:.1f} | {r['p95_ms']:.1f} | {r['p99_ms']:.1f} | "
                f"{r['texts_per_s']:.1f} | {r['client_cpu_share']:.1%} |"
            )
    lines += [
        "",
        "### Batch-size sweep (one request of N texts; `/analyze/batch` over HTTP)",
        "",
        "| batch | in-process ms/text | Serve graph ms/text | separate services ms/text |",
        "|---|---|---|---|",
    ]
    for bs in BATCHES:
        lines.append(
            f"| {bs} | {ip['batch'][bs]['per_text_ms']:.1f} | {sg['batch'][bs]['per_text_ms']:.1f} | "
            f"{ss['batch'][bs]['per_text_ms']:.1f} |"
        )
    best_serve = max(r["texts_per_s"] for r in sg["concurrency"].values())
    best_sep = max(r["texts_per_s"] for r in ss["concurrency"].values())
    p50, p50_sep = sg["concurrency"][1]["p50_ms"], ss["concurrency"][1]["p50_ms"]
    lines += [
        "",
        "### Against the targets (same run)",
        "",
        "| measure | target | here |",
        "|---|---|---|",
        f"| saturated throughput, Serve graph / separate services | ≥ 1.5× (stretch 2×) | "
        f"{best_serve / best_sep:.2f}× ({best_serve:.1f} vs {best_sep:.1f} texts/s) |",
        f"| saturated throughput, Serve graph | ≥ 30 texts/s | {best_serve:.1f} texts/s |",
        f"| p50 at 1 client, Serve graph vs separate services | ≤ theirs and < 50 ms | {p50:.1f} vs {p50_sep:.1f} ms |",
        f"| Serve saturated throughput / in-process batched throughput | ≥ 85 % | "
        f"{100 * best_serve / ip['throughput_texts_per_s']:.0f} % ({best_serve:.1f} vs "
        f"{ip['throughput_texts_per_s']:.1f} texts/s) |",
        "",
        "### Where the time goes (Serve graph, 1 client, medians in ms)",
        "",
        "| stage | ms |",
        "|---|---|",
        *[f"| {k} | {v:.2f} |" for k, v in sg["stages_ms"].items()],
        "",
        f"In-process stages (median ms, one text, {ip['threads']} threads): "
        + ", ".join(f"{k} {v:.1f}" for k, v in ip["stages_ms"].items()),
    ]
    if res.get("kernels"):
        lines += [
            "",
            f"### Encoder kernels as served (one window per call, 1 thread; {len(PARAGRAPHS)} news paragraphs)",
            "",
            "| kernel | ms/text | same summary sentences as torch fp32 | same sentiment label |",
            "|---|---|---|---|",
            *[
                f"| {k} | {r['ms_per_text']:.1f} | {r['same_summary']:.0%} | {r['same_label']:.0%} |"
                for k, r in res["kernels"].items()
            ],
        ]
    if res.get("locust"):
        lo = res["locust"]
        lines += [
            "",
            f"### Locust, mixed traffic against the Serve graph ({lo['users']} users, {lo['seconds']} s)",
            "",
            f"{lo['requests']} requests, {lo['failures']} failures, p50 {lo['p50_ms']:.0f} ms, "
            f"p95 {lo['p95_ms']:.0f} ms, {lo['req_per_s']:.1f} requests/s (load generator on the same 2 cores).",
        ]
    return "\n".join(lines) + "\n"


def plot(res: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 4.2))
    for name, key, color in (("Serve graph", "serve", "C0"), ("separate services", "separate", "C1")):
        conc = res[key]["concurrency"]
        xs = list(conc)
        a.plot(xs, [conc[c]["p50_ms"] for c in xs], "o-", color=color, label=f"{name} p50")
        a.plot(xs, [conc[c]["p95_ms"] for c in xs], "o--", color=color, alpha=0.6, label=f"{name} p95")
    a.axhline(res["in_process"]["c1"]["p50_ms"], color="gray", ls=":", label="in-process p50, 1 client")
    a.set(xscale="log", yscale="log", xlabel="concurrent clients", ylabel="latency (ms)")
    a.set_title("Latency vs concurrency")
    a.set_xticks(list(CONCURRENCY), [str(c) for c in CONCURRENCY])
    a.legend(fontsize=8)
    for name, key in (("in-process", "in_process"), ("Serve graph", "serve"), ("separate services", "separate")):
        sweep = res[key]["batch"]
        b.plot(list(sweep), [sweep[k]["per_text_ms"] for k in sweep], "o-", label=name)
    b.set(xlabel="texts per request", ylabel="ms per text", title="Per-text cost vs batch size")
    b.set_xticks(list(BATCHES))
    b.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path, default=ROOT / "config/config.yaml")
    parser.add_argument("--out", type=Path, default=ROOT / "docs/bench")
    parser.add_argument("--quick", action="store_true", help="fewer requests (a smoke run)")
    parser.add_argument("--locust-seconds", type=int, default=20)
    parser.add_argument("--no-kernels", action="store_true", help="skip the encoder kernel comparison")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    scale = 0.3 if args.quick else 1.0
    reps = 15 if args.quick else 50

    from nlpserve.tokens import Tokenizer

    texts = make_texts(8)
    batch = Tokenizer()(texts)
    res: dict = {
        "reps": reps,
        "words": round(statistics.mean(len(t.split()) for t in texts)),
        "tokens": round(float(np.diff(batch.splits).mean())),
    }
    print("in-process ...", flush=True)
    res["in_process"] = in_process(reps, threads=os.cpu_count() or 1)
    print("Serve graph ...", flush=True)
    with serve_graph(args.config) as url:
        res["serve"] = http_modes(url, scale, with_timings=True)
        res["locust"] = locust_run(url, args.out, args.locust_seconds) if args.locust_seconds else None
    print("separate services ...", flush=True)
    with separate_services() as url:
        res["separate"] = http_modes(url, scale, with_timings=False)
    if not args.no_kernels:
        print("kernels ...", flush=True)
        res["kernels"] = kernels_effect()
    (args.out / "results.json").write_text(json.dumps(res, indent=2) + "\n")
    text = report(res)
    (args.out / "report.md").write_text(text)
    plot(res, args.out / "bench.png")
    print(text)


if __name__ == "__main__":
    main()
