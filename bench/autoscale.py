"""Independent scaling, shown: most traffic asks for sentiment only, so what carries it (the shared
Encoder and the Sentiment head) scales up while NER stays at its minimum; then summaries are
saturated too; then load stops and everything scales back down. Replica counts come from Serve's status API.

    python -m bench.autoscale            # -> docs/autoscale/{report.md, results.json, autoscale.png}
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import time
from collections import Counter
from pathlib import Path

import httpx
import numpy as np
from ray import serve

from bench.load import percentiles
from bench.texts import PARAGRAPHS, make_texts
from nlpserve.on_ray import local

OUT = local.ROOT / "docs" / "autoscale"
DEPLOYMENTS = ("Ingress", "Encoder", "NER", "Sentiment", "Summary")
errors: Counter[str] = Counter()  # answers that were not a full success, by body
WINDOW_S = 5.0


def replica_counts(app: str = "nlp") -> dict[str, int]:
    deployments = serve.status().applications[app].deployments
    return {name: deployments[name].replica_states.get("RUNNING", 0) for name in DEPLOYMENTS}


# One numbering for every request of a run: each text is new, so no cache answers any of them (clients
# that shared one sequence were served from the result cache whenever a phase replayed it).
NUMBERS = itertools.count()


async def client(http: httpx.AsyncClient, url: str, kind: str, stop: asyncio.Event, log: list, t0: float) -> None:
    long_text = " ".join(PARAGRAPHS[:3])
    while not stop.is_set():
        n = next(NUMBERS)
        body = (
            {"text": make_texts(1, n)[0], "tasks": ["sentiment"]}
            if kind == "sentiment"
            else {"text": f"{long_text} (Note {n}.)", "tasks": ["summary"]}
        )
        start = time.perf_counter()
        try:
            r = await http.post(url + "/analyze", json=body)
            task = body["tasks"][0]
            ok = r.status_code == 200 and "error" not in r.json()[task]  # a task error is a failure too
            if not ok:
                errors[r.text[:200]] += 1
        except httpx.HTTPError:
            ok = False
            errors["no HTTP answer"] += 1
        log.append((start - t0, kind, (time.perf_counter() - start) * 1000, ok))


async def run(url: str, phases: list[tuple[str, float, int, int]]) -> tuple[list, list]:
    """phases: (name, seconds, sentiment clients, summary clients). Returns the request log and the
    replica samples (one per second)."""
    log: list = []
    samples: list = []
    t0 = time.perf_counter()
    limits = httpx.Limits(max_connections=64, max_keepalive_connections=64)
    async with httpx.AsyncClient(timeout=120, limits=limits) as http:
        running: list[tuple[asyncio.Event, asyncio.Task]] = []
        for name, seconds, sentiment, summary in phases:
            samples.append({"t": time.perf_counter() - t0, "phase": name, "start": True, **replica_counts()})
            for stop, _ in running:
                stop.set()
            running = []
            for kind, n in (("sentiment", sentiment), ("summary", summary)):
                for _ in range(n):
                    stop = asyncio.Event()
                    running.append((stop, asyncio.create_task(client(http, url, kind, stop, log, t0))))
            end = time.perf_counter() + seconds
            while time.perf_counter() < end:
                counts = await asyncio.to_thread(replica_counts)
                samples.append({"t": time.perf_counter() - t0, "phase": name, **counts})
                await asyncio.sleep(1.0)
        for stop, _ in running:
            stop.set()
        await asyncio.gather(*(task for _, task in running))
    return log, samples


def windows(log: list, samples: list) -> list[dict]:
    """Per 5-s window: sentiment requests/s and p95, summary p95."""
    end = samples[-1]["t"]
    out = []
    for a in np.arange(0, end, WINDOW_S):
        row = {"t": float(a + WINDOW_S / 2)}
        for kind in ("sentiment", "summary"):
            done = [ms for t, k, ms, ok in log if k == kind and ok and a <= t + ms / 1000 < a + WINDOW_S]
            row[f"{kind}_per_s"] = len(done) / WINDOW_S
            row[f"{kind}_p95_ms"] = float(np.percentile(done, 95)) if done else None
        out.append(row)
    return out


def plot(samples: list, rows: list, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(3, 1, figsize=(9, 9), sharex=True)
    t = [s["t"] for s in samples]
    for name in DEPLOYMENTS:
        axes[0].step(t, [s[name] for s in samples], where="post", label=name)
    axes[0].set_ylabel("running replicas")
    axes[0].legend(loc="upper right")
    x = [r["t"] for r in rows]
    axes[1].plot(x, [r["sentiment_per_s"] for r in rows], label="sentiment-only requests/s")
    axes[1].plot(x, [r["summary_per_s"] for r in rows], label="summary-only requests/s")
    axes[1].set_ylabel("throughput")
    axes[1].legend(loc="upper right")
    for kind in ("sentiment", "summary"):
        axes[2].plot(x, [r[f"{kind}_p95_ms"] or np.nan for r in rows], label=f"{kind}-only p95 ms")
    axes[2].set_ylabel("p95 latency (ms)")
    axes[2].set_xlabel("seconds")
    axes[2].legend(loc="upper right")
    starts = {}
    for s in samples:
        starts.setdefault(s["phase"], s["t"])
    for ax in axes:
        for start in starts.values():
            ax.axvline(start, color="grey", lw=0.5)
    for phase, start in starts.items():
        axes[0].text(start + 1, axes[0].get_ylim()[1] * 0.9, phase, fontsize=8)
    fig.suptitle("config/autoscale.yaml: replicas follow each task's own load")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def report(log: list, samples: list, rows: list, phases: list) -> str:
    lines = [
        "Replicas per deployment (Serve status, RUNNING), sampled every second; latencies of requests that",
        "finished in each phase. Load generator on the same machine.",
        "",
        "| phase | seconds | clients (sentiment / summary) "
        "| max replicas Ingress / Encoder / NER / Sentiment / Summary | replicas at the end "
        "| sentiment-only p50 / p95 ms | summary-only p95 ms | sentiment req/s |",
        "|---|---|---|---|---|---|---|---|",
    ]
    starts = [s["t"] for s in samples if s.get("start")] + [samples[-1]["t"]]
    for (name, seconds, sentiment, summary), t, end in zip(phases, starts, starts[1:]):
        ss = [s for s in samples if s["phase"] == name]
        top = " / ".join(str(max(s[d] for s in ss)) for d in DEPLOYMENTS)
        last = " / ".join(str(ss[-1][d]) for d in DEPLOYMENTS)
        sent = [ms for st, k, ms, ok in log if k == "sentiment" and ok and t <= st < end]
        summ = [ms for st, k, ms, ok in log if k == "summary" and ok and t <= st < end]
        sp = percentiles(sent) if sent else {}
        lines.append(
            f"| {name} | {seconds:g} | {sentiment} / {summary} | {top} | {last} | "
            f"{sp.get('p50_ms', float('nan')):.0f} / {sp.get('p95_ms', float('nan')):.0f} | "
            f"{percentiles(summ)['p95_ms'] if summ else float('nan'):.0f} | {len(sent) / (end - t):.1f} |"
        )
    failed = sum(not ok for *_, ok in log)
    lines += ["", f"{len(log)} requests, {failed} failed (HTTP error or a task error)."]
    lines += [f"- {n} x {text}" for text, n in errors.most_common(5)]
    lines += ["", "![replicas, throughput and p95](autoscale.png)"]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default=str(local.ROOT / "config" / "autoscale.yaml"))
    parser.add_argument("--clients", type=int, default=16, help="sentiment-only clients")
    parser.add_argument("--summary-clients", type=int, default=4)
    parser.add_argument("--seconds", type=float, default=90, help="length of each loaded phase")
    parser.add_argument("--out", default=str(OUT))
    args = parser.parse_args()
    phases = [
        ("idle", 10, 0, 0),
        ("sentiment only", args.seconds, args.clients, 0),
        ("+ summaries", args.seconds, args.clients, args.summary_clients),
        ("load stopped", 60, 0, 0),
    ]
    url = local.start(args.config, num_cpus=2)
    try:
        log, samples = asyncio.run(run(url, phases))
    finally:
        local.stop()
    rows = windows(log, samples)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps({"phases": phases, "samples": samples, "windows": rows}, indent=1))
    plot(samples, rows, out / "autoscale.png")
    (out / "report.md").write_text(report(log, samples, rows, phases))
    print((out / "report.md").read_text())


if __name__ == "__main__":
    main()
