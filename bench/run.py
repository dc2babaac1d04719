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
from collections.abc import Callable
from contextlib import contextmanager
from pathlib import Path

import httpx
import numpy as np
import torch

from bench.load import load, percentiles
from bench.path import HAPROXY, counted_sweep, ingress_stats, serve_session, texts_per_call
from bench.texts import PARAGRAPHS, make_texts
from nlpserve.on_ray.local import ROOT, free_port
from nlpserve.schemas import TASKS

CONCURRENCY = (1, 4, 16, 64)
BATCHES = (1, 8, 16, 32)
# Per separate service (bench/services.py): model calls at once, and its encoder's threads; the best is reported.
CALLS, THREADS = (1, 2), (1, 2)
LEVELS = {f"{c} call{'s' * (c > 1)}, {t} thread{'s' * (t > 1)}": (c, t) for c in CALLS for t in THREADS}
HEADLINE = [1, 16, 64]  # clients of the wrk cross-check
ROUNDS = 2  # of the wrk headline, graph and services alternating


# ---------------------------------------------------------------- in-process


def in_process(reps: int, threads: int) -> dict:
    """The best monolith with the same kernels: tokenize once, encode once for both heads, NER, the
    heads, all called directly in this process with ``threads`` threads for the encoder."""
    from nlpserve.models.encoder import MiniLMEncoder
    from nlpserve.models.ner import SpacyNER
    from nlpserve.models.sentiment import SentimentModel
    from nlpserve.models.summary import ExtractiveSummarizer
    from nlpserve.tokens import Tokenizer

    torch.set_num_threads(threads)
    encoder = MiniLMEncoder(threads=threads, window_threads=threads)  # a lone text's window on all of them
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


def http_modes(url: str, scale: float, stats: Callable[[], dict] | None = None) -> dict:
    """Every request carries texts never sent before, so the service's caches never answer. For the
    graph (``stats`` reads its ingress's counters), each deployment's texts per call at each load, and
    the hops at 1 client from the answers' timings."""
    counter = iter(range(10**9))
    out: dict = {"concurrency": {}, "batch": {}}
    for c in CONCURRENCY:
        n = max(60, int(c * 12 * scale))
        before = stats() if stats else {}
        cpu, wall = time.process_time(), time.perf_counter()
        r = load(url + "/analyze", lambda i: {"text": make_texts(1, next(counter))[0]}, c, n)
        share = (time.process_time() - cpu) / (time.perf_counter() - wall) / (os.cpu_count() or 1)
        out["concurrency"][c] = {**r.summary(), "client_cpu_share": share}
        if stats:
            out["concurrency"][c]["texts_per_call"] = texts_per_call(before, stats())
            if c == 1:
                out["hops_ms"] = hops(r)
    for bs in BATCHES:
        requests = max(4, int(24 * scale / bs) + 2)
        r = load(url + "/analyze/batch", lambda i, bs=bs: {"texts": make_texts(bs, next(counter) * 64)}, 1, requests)
        s = r.summary()
        out["batch"][bs] = {"per_text_ms": s["p50_ms"] / bs, "texts_per_s": s["texts_per_s"]}
    return out


def hops(r) -> dict:
    """Median ms of each step of a request at 1 client, from the client's latency and the answer's
    timings: the NER call and the encoder -> sentiment chain run side by side after the batch starts."""
    rows = []
    for latency, body in zip(r.latencies_ms, r.bodies):
        t = body["timings"]
        row = {
            "HTTP in and out (client, HAProxy or proxy, the ingress's server)": latency - t["ingress_ms"],
            "ingress: queue for the batch": t["queue_ms"],
            "ingress: tokenize": t["tokenize_ms"],
            "ingress: ray.put": t["put_ms"],
        }
        for task, name in (("ner", "NER"), ("sentiment", "Sentiment")):
            x = t["tasks"][task]
            if task == "sentiment":
                row["Sentiment: sent once the Encoder has the call (router)"] = x["wait_ms"]
            row[f"{name}: ingress -> replica (router, transport, replica queue)"] = x["to_replica_ms"]
            row[f"{name}: object-store get"] = x["get_ms"]
            if task == "sentiment":
                row["Sentiment: waits in its replica for the Encoder's pass"] = (
                    x["replica_ms"] - x["get_ms"] - x["compute_ms"]
                )
                row["Encoder: its pass"] = x["encode_ms"]
            row[f"{name}: model"] = x["compute_ms"]
            row[f"{name}: replica -> ingress"] = x["call_ms"] - x["wait_ms"] - x["to_replica_ms"] - x["replica_ms"]
        row["ingress: whole request"] = t["ingress_ms"]
        row["total, seen by the client"] = latency
        rows.append(row)
    return {k: statistics.median(row[k] for row in rows) for k in rows[0]}


@contextmanager
def separate_services(max_concurrency: int | None = None, encoder_threads: int | None = None):
    """The three services and their gateway; each service runs at most ``max_concurrency`` model calls
    at once (None: its default, one per core), its encoder on ``encoder_threads`` (None: the graph's)."""
    ports = {role: free_port() for role in (*TASKS, "gateway")}
    urls = {role: f"http://127.0.0.1:{p}" for role, p in ports.items()}
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    cmd = [sys.executable, "-m", "bench.services"]
    bound = ["--max-concurrency", str(max_concurrency)] if max_concurrency else []
    bound += ["--encoder-threads", str(encoder_threads)] if encoder_threads else []
    procs = [subprocess.Popen([*cmd, t, "--port", str(ports[t]), *bound], cwd=ROOT, env=env) for t in TASKS]
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
        for p in reversed(procs):  # the gateway first, and gone: it would log the services' going as errors
            p.terminate()
            p.wait(timeout=30)


def pick(runs: dict[int, dict], clients: int, rate: str) -> dict:
    """Of the separate services' levels, the best at ``clients``: the lowest p50 at 1 client, the most
    ``rate`` above it; with its level."""
    if clients == 1:
        level = min(runs, key=lambda lv: runs[lv]["p50_ms"])
    else:
        level = max(runs, key=lambda lv: runs[lv][rate])
    return {**runs[level], "level": level}


def best(levels: dict[int, dict]) -> dict:
    """Per number of clients, the separate services' best level in the Python driver's sweep."""
    return {c: pick({lv: r["concurrency"][c] for lv, r in levels.items()}, c, "texts_per_s") for c in CONCURRENCY}


def locust_run(url: str, out: Path, seconds: int) -> dict | None:
    if shutil.which("locust") is None:
        return None
    prefix = out / "locust"
    cmd = ["locust", "-f", str(ROOT / "load_tests/locustfile.py"), "--headless", "-u", "8", "-r", "4"]
    cmd += ["-t", f"{seconds}s", "--host", url, "--csv", str(prefix), "--html", str(prefix) + ".html", "--only-summary"]
    subprocess.run(cmd, check=False, capture_output=True, timeout=seconds + 60)
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


def sizes(calls: dict | None) -> str:
    if not calls:
        return "-"
    return " / ".join(f"{calls.get(d, 0):.1f}" for d in ("Encoder", "NER", "Sentiment", "Summary"))


def report(res: dict) -> str:
    ip, sg, levels = res["in_process"], res["serve"], res["separate"]
    lines = [
        f"Machine: {os.cpu_count()} CPUs, {platform.machine()}, Python {platform.python_version()}, "
        f"torch {torch.__version__}. Texts: news paragraphs of {res['words']} words ({res['tokens']} tokens) "
        "on average, never sent before; all three tasks per text. The Serve graph runs as the README says "
        f"(`{' '.join(f'{k}={v}' for k, v in HAPROXY.items())} serve run config/config.yaml`); the separate "
        f"services run at most {' or '.join(map(str, CALLS))} model calls at once each, their encoders on "
        f"{' or '.join(map(str, THREADS))} threads, and their best level is reported. The load generator "
        "shares the cores: its CPU share (of all cores) is printed beside each figure.",
        "",
        "### Headline, measured with wrk (a C client), every request a new text",
        "",
        "Graph and services alternate: round 1 is the graph then the services, round 2 the same again.",
        "",
        "| round | clients | Serve graph | separate services (best level) | graph / services | wrk CPU | "
        "graph's texts per call: Encoder / NER / Sentiment / Summary |",
        "|---|---|---|---|---|---|---|",
    ]
    for n, (serve_round, separate_round) in enumerate(zip(res["wrk"]["serve"], res["wrk"]["separate"]), 1):
        for c in HEADLINE:
            g, s = serve_round[str(c)], separate_round[str(c)]
            if c == 1:
                ratio = g["p50_ms"] / s["p50_ms"]
                figures = f"p50 {g['p50_ms']:.1f} ms | p50 {s['p50_ms']:.1f} ms ({s['level']}) | {ratio:.2f}× p50"
            else:
                figures = (
                    f"{g['req_per_s']:.1f} req/s | {s['req_per_s']:.1f} req/s ({s['level']}) | "
                    f"{g['req_per_s'] / s['req_per_s']:.2f}×"
                )
            cpu = max(g["client_cpu_share"], s["client_cpu_share"])
            lines.append(f"| {n} | {c} | {figures} | {cpu:.1%} | {sizes(g.get('texts_per_call'))} |")
    lines += [
        "",
        "### Concurrency sweep (`POST /analyze`, one text per request, Python driver)",
        "",
        "| mode | clients | requests | p50 ms | p95 ms | p99 ms | texts/s | client CPU | texts per call: "
        "Encoder / NER / Sentiment / Summary |",
        "|---|---|---|---|---|---|---|---|---|",
        f"| in-process ({ip['threads']} threads) | 1 | {res['reps']} | {ip['c1']['p50_ms']:.1f} | "
        f"{ip['c1']['p95_ms']:.1f} | {ip['c1']['p99_ms']:.1f} | {ip['c1']['req_per_s']:.1f} | - | - |",
    ]
    named = [("Serve graph", sg["concurrency"])] + [
        (f"separate services, {level}", r["concurrency"]) for level, r in levels.items()
    ]
    for name, sweep in named:
        for c, r in sweep.items():
            calls = r.get("texts_per_call")
            lines.append(
                f"| {name} | {c} | {r['requests']} | {r['p50_ms']:.1f} | {r['p95_ms']:.1f} | {r['p99_ms']:.1f} | "
                f"{r['texts_per_s']:.1f} | {r['client_cpu_share']:.1%} | {sizes(calls)} |"
            )
    lines += [
        "",
        "### Batch-size sweep (one request of N texts; `/analyze/batch` over HTTP)",
        "",
        "| batch | in-process ms/text | Serve graph ms/text | separate services ms/text (best level) |",
        "|---|---|---|---|",
    ]
    for bs in BATCHES:
        sep = min(r["batch"][bs]["per_text_ms"] for r in levels.values())
        lines.append(
            f"| {bs} | {ip['batch'][bs]['per_text_ms']:.1f} | {sg['batch'][bs]['per_text_ms']:.1f} | {sep:.1f} |"
        )
    rounds = list(zip(res["wrk"]["serve"], res["wrk"]["separate"]))

    def each(figure: Callable[[dict, dict], str]) -> str:
        return " / ".join(figure(g, s) for g, s in rounds)

    def throughput(k: str) -> str:
        return each(lambda g, s: f"{g[k]['req_per_s'] / s[k]['req_per_s']:.2f}×")

    lines += [
        "",
        "### Against the targets (same run, wrk figures; round 1 / round 2)",
        "",
        "| measure | target | here |",
        "|---|---|---|",
        f"| throughput at 16 clients, graph / separate services' best | ≥ 1.5× | {throughput('16')} |",
        f"| throughput at 64 clients, graph / separate services' best | ≥ 1.5× | {throughput('64')} |",
        "| p50 at 1 client, graph / separate services | ≤ 1.3× | "
        + each(
            lambda g, s: (
                f"{g['1']['p50_ms'] / s['1']['p50_ms']:.2f}× ({g['1']['p50_ms']:.1f} vs {s['1']['p50_ms']:.1f} ms)"
            )
        )
        + " |",
        "| texts per Encoder call / per NER call at 16 clients (mean) | ≥ 6 | "
        + each(lambda g, s: f"{g['16']['texts_per_call']['Encoder']:.1f} and {g['16']['texts_per_call']['NER']:.1f}")
        + " |",
        "| texts/s at 64 clients | moonshot ≥ 60 | " + each(lambda g, s: f"{g['64']['req_per_s']:.1f}") + " |",
        "",
        "### Where the time goes (Serve graph, 1 client, medians in ms)",
        "",
        "| step | ms |",
        "|---|---|",
        *[f"| {k} | {v:.2f} |" for k, v in sg["hops_ms"].items()],
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

    fig, (a, b, c) = plt.subplots(1, 3, figsize=(15, 4.2))
    separate = best(res["separate"])
    for name, conc, color in (("Serve graph", res["serve"]["concurrency"], "C0"), ("separate", separate, "C1")):
        xs = list(conc)
        a.plot(xs, [conc[x]["texts_per_s"] for x in xs], "o-", color=color, label=name)
    a.set(xscale="log", xlabel="concurrent clients", ylabel="texts/s", title="Throughput vs clients")
    a.set_xticks(list(CONCURRENCY), [str(x) for x in CONCURRENCY])
    a.legend(fontsize=8)
    conc = res["serve"]["concurrency"]
    for deployment in ("Encoder", "NER", "Sentiment", "Summary"):
        b.plot(list(conc), [conc[x]["texts_per_call"].get(deployment, 0) for x in conc], "o-", label=deployment)
    b.set(xscale="log", xlabel="concurrent clients", ylabel="texts per call", title="Batches follow the load")
    b.set_xticks(list(CONCURRENCY), [str(x) for x in CONCURRENCY])
    b.legend(fontsize=8)
    for name, key in (("in-process", "in_process"), ("Serve graph", "serve")):
        sweep = res[key]["batch"]
        c.plot(list(sweep), [sweep[k]["per_text_ms"] for k in sweep], "o-", label=name)
    sep = {bs: min(r["batch"][bs]["per_text_ms"] for r in res["separate"].values()) for bs in BATCHES}
    c.plot(list(sep), list(sep.values()), "o-", label="separate services")
    c.set(xlabel="texts per request", ylabel="ms per text", title="Per-text cost vs batch size")
    c.set_xticks(list(BATCHES))
    c.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path, default=ROOT / "config/config.yaml")
    parser.add_argument("--out", type=Path, default=ROOT / "docs/bench")
    parser.add_argument("--quick", action="store_true", help="fewer requests (a smoke run)")
    parser.add_argument("--seconds", type=float, default=20, help="of each wrk run")
    parser.add_argument("--locust-seconds", type=int, default=20)
    parser.add_argument("--no-kernels", action="store_true", help="skip the encoder kernel comparison")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    scale = 0.3 if args.quick else 1.0
    reps = 15 if args.quick else 50
    seconds = 8 if args.quick else args.seconds

    from nlpserve.tokens import Tokenizer

    texts = make_texts(8)
    batch = Tokenizer()(texts)
    res: dict = {
        "reps": reps,
        "words": round(statistics.mean(len(t.split()) for t in texts)),
        "tokens": round(float(np.diff(batch.splits).mean())),
        "wrk": {"serve": [], "separate": [], "separate_levels": []},
        "separate": {},
        "locust": None,
    }
    print("in-process ...", flush=True)
    res["in_process"] = in_process(reps, threads=os.cpu_count() or 1)
    for round_ in range(ROUNDS):
        # The headline again in a second round, graph and services alternating: this machine's speed
        # drifts within a run, and a ratio holds only if both rounds show it.
        first = round_ == 0
        print(f"round {round_ + 1}: Serve graph ...", flush=True)
        with serve_session(args.config, HAPROXY) as url, ingress_stats() as stats:
            if first:
                res["serve"] = http_modes(url, scale, stats)
            res["wrk"]["serve"].append(counted_sweep(url, HEADLINE, seconds, stats))
            if first and args.locust_seconds:
                res["locust"] = locust_run(url, args.out, args.locust_seconds)
        by_level = {}
        for level, (calls, threads) in LEVELS.items():
            print(f"round {round_ + 1}: separate services, {level} ...", flush=True)
            with separate_services(calls, threads) as url:
                if first:
                    res["separate"][level] = http_modes(url, scale)
                by_level[level] = counted_sweep(url, HEADLINE, seconds)
        best_level = {str(c): pick({lv: by_level[lv][str(c)] for lv in LEVELS}, c, "req_per_s") for c in HEADLINE}
        res["wrk"]["separate"].append(best_level)
        res["wrk"]["separate_levels"].append(by_level)
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
