"""Replicas killed under load, overload, and what the logs keep (slow: skip with -m "not slow")."""

import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import ray
import requests
from ray import serve
from samples import NEWS, post

from nlpserve.schemas import TASKS

pytestmark = [pytest.mark.serve, pytest.mark.slow]

CLIENTS = 3
TIMEOUT_S = 35  # config.yaml's task_timeout_s (30) plus the ingress's own work
RECOVERY_S = 60


@dataclass
class Record:
    sent: float
    done: float
    status: int | None  # None: no HTTP answer at all
    errors: dict = field(default_factory=dict)  # task -> error of a 200 answer
    correct: bool = False


class Load:
    """CLIENTS threads sending texts no cache has seen, one request at a time each, until stopped."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.records: list[Record] = []
        self.stopped = threading.Event()
        self.run_id = uuid.uuid4().hex[:8]
        self.threads = [threading.Thread(target=self._client, args=(k,)) for k in range(CLIENTS)]

    def __enter__(self) -> "Load":
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stopped.set()
        for t in self.threads:
            t.join(TIMEOUT_S + 30)

    def _client(self, k: int) -> None:
        i = 0
        while not self.stopped.is_set():
            i += 1
            sent = time.monotonic()
            try:
                r = post(self.url, "/analyze", {"text": f"{NEWS} Request {self.run_id}-{k}-{i}."})
            except requests.RequestException:
                self.records.append(Record(sent, time.monotonic(), None))
                continue
            record = Record(sent, time.monotonic(), r.status_code)
            if r.status_code == 200:
                out = r.json()
                record.errors = {t: out[t]["error"] for t in TASKS if isinstance(out[t], dict) and "error" in out[t]}
                record.correct = not record.errors and _correct(out)
            self.records.append(record)


def _correct(out: dict) -> bool:
    found = {(e["word"], e["entity_group"]) for e in out["ner"]}
    return (
        {("Apple Inc.", "ORG"), ("Tim Cook", "PERSON")} <= found
        and out["sentiment"]["label"] in {"positive", "neutral", "negative"}
        and bool(out["summary"]["summary_text"])
    )


def _replicas(app: str, deployment: str) -> list[str]:
    prefix = f"SERVE_REPLICA::{app}#{deployment}#"
    return [a["name"] for a in ray.util.list_named_actors(all_namespaces=True) if a["name"].startswith(prefix)]


def test_killed_replicas_degrade_only_their_task_and_the_graph_recovers(url):
    rows = []
    with Load(url) as load:
        time.sleep(3)
        for deployment, task in [
            ("NER", "ner"),
            ("Sentiment", "sentiment"),
            ("Summary", "summary"),
            ("Ingress", None),
        ]:
            (name,) = _replicas("nlp", deployment)
            killed = time.monotonic()
            ray.kill(ray.get_actor(name, namespace="serve"), no_restart=True)
            while name in _replicas("nlp", deployment):  # ray.kill returns before the actor is gone
                time.sleep(0.05)
            dead = time.monotonic()
            recovered = None
            while recovered is None and time.monotonic() - killed < RECOVERY_S:
                time.sleep(0.2)
                # Nothing sent after the replica died can be answered in full until a new one runs.
                recovered = min((r.done for r in load.records if r.correct and r.sent > dead), default=None)
            assert recovered, f"{deployment} did not recover within {RECOVERY_S} s"
            window = [r for r in load.records if r.done >= killed and r.sent <= recovered]
            failed = [r for r in window if r.status != 200]
            degraded = [r for r in window if r.status == 200 and r.errors]
            rows.append(
                (
                    deployment,
                    len(window),
                    len(window) - len(failed) - len(degraded),
                    len(degraded),
                    len(failed),
                    round(recovered - killed, 1),
                    round(max(r.done - r.sent for r in window), 1),
                )
            )
            if task:
                # A dead task replica costs that task's answer only, never the whole request.
                assert not failed, [(r.status, r.errors) for r in failed]
                assert all(set(r.errors) == {task} for r in degraded), [r.errors for r in degraded]
            else:
                # Only requests the dead ingress held (at most one per client) fail; later ones wait in
                # the proxy for the new replica. It could take requests until its process was gone (dead),
                # a few ms after ray.kill returned (killed).
                in_flight = [r for r in failed if r.sent <= dead]
                assert len(failed) - len(in_flight) == 0 and len(in_flight) <= CLIENTS, rows[-1]
            time.sleep(2)
    print("\nkilled  requests  ok  degraded  failed  recovered_s  slowest_s")
    for row in rows:
        print("  ".join(str(x) for x in row))
    assert all(r.done - r.sent < TIMEOUT_S for r in load.records)  # nothing hung
    assert sum(r.correct for r in load.records) > len(rows)
    deployments = serve.status().applications["nlp"].deployments
    assert {name: d.status for name, d in deployments.items()} == dict.fromkeys(deployments, "HEALTHY")


def test_burst_beyond_capacity_gets_fast_503s_with_retry_after(url):
    # The small app takes 2 requests and queues 2 in the proxy; each takes 2 s (its summary times out).
    burst = threading.Barrier(20)

    def call(i: int) -> tuple[int, float, float, str | None]:
        burst.wait()
        sent = time.monotonic()
        r = post(url, "/small/analyze", {"text": f"Burst {uuid.uuid4().hex} {i}.", "tasks": ["summary"]})
        return r.status_code, sent, time.monotonic() - sent, r.headers.get("retry-after")

    with ThreadPoolExecutor(20) as pool:
        results = list(pool.map(call, range(20)))
    first = min(sent for _, sent, _, _ in results)
    accepted = [r for r in results if r[0] == 200]
    rejected = [r for r in results if r[0] == 503]
    assert len(accepted) + len(rejected) == 20, results
    # Capacity is 2 in the replica + 2 in the proxy's queue. Serve counts its queue per proxy and
    # approximately under a simultaneous burst (arrivals race the counter: see wrap_request_assignment
    # in ray/serve/_private/router.py); 5 and 6 of 20 got in here. So: at most twice the capacity, and
    # everyone else is told no at once instead of waiting.
    capacity = 2 + 2
    assert 1 <= len([r for r in accepted if r[1] - first < 1.5]) <= 2 * capacity, results
    assert len(rejected) >= 20 - 2 * capacity, results
    assert all(seconds < 1.5 for _, _, seconds, _ in rejected), results  # said at once, not after a wait
    assert all(retry == "1" for *_, retry in rejected), results
    assert all(seconds < 4 * 2 + 5 for _, _, seconds, _ in accepted), results  # at most 4 waves of 2, 2 s each


def test_logs_never_echo_request_texts(url):
    marker = f"Secret{uuid.uuid4().hex}"
    text = f"{marker} wrote to Apple Inc. in Paris about a terrible mistake."
    assert post(url, "/analyze", {"text": text}).status_code == 200
    assert post(url, "/faulty/analyze", {"text": text}).status_code == 200  # NER raises, summary times out
    assert post(url, "/analyze", {"text": text, "tasks": ["nope"]}).status_code == 422
    assert post(url, "/analyze", {"text": text, "extra": marker}).status_code == 422
    assert post(url, "/analyze", text.encode() + b"\xff").status_code == 400
    time.sleep(2)
    logs = ray._private.worker._global_node.get_logs_dir_path()  # this Ray's own session logs
    files = [p for p in Path(logs).rglob("*") if p.is_file()]
    assert files
    assert [p.name for p in files if marker.encode() in p.read_bytes()] == []


def _object_store() -> tuple[float, int]:
    """(MiB, objects) in this node's object store, from the raylet (no dashboard needed)."""
    import re

    from ray._private.internal_api import memory_summary

    summary = memory_summary(address=ray.get_runtime_context().gcs_address, stats_only=True)
    found = re.search(r"Plasma memory usage (\d+) MiB, (\d+) objects", summary)
    assert found, summary
    return float(found[1]), int(found[2])


def _mixed(url: str, k: int) -> int:
    """Request ``k`` of a mix: every task, one task, the two heads, past its deadline, a batch, a failing task."""
    text = f"{NEWS} Soak {uuid.uuid4().hex}."
    bodies = [
        ("/analyze", {"text": text}),
        ("/analyze", {"text": text, "tasks": ["ner"]}),
        ("/analyze", {"text": text, "tasks": ["sentiment", "summary"]}),
        ("/analyze", {"text": text, "deadline_ms": 5}),
        ("/analyze/batch", {"texts": [f"{text} {i}" for i in range(4)]}),
        ("/faulty/analyze", {"text": text, "tasks": ["ner", "sentiment"]}),  # NER raises there
    ]
    path, body = bodies[k % len(bodies)]
    return post(url, path, body).status_code


def test_the_object_store_does_not_grow_over_a_thousand_mixed_requests(url):
    with ThreadPoolExecutor(8) as pool:
        assert set(pool.map(lambda k: _mixed(url, k), range(120))) == {200}  # warm: what stays after use
    time.sleep(3)
    base_mib, base_objects = _object_store()
    with ThreadPoolExecutor(8) as pool:
        codes = list(pool.map(lambda k: _mixed(url, k), range(1200)))
    time.sleep(3)
    mib, objects = _object_store()
    print(
        f"\nobject store: {base_mib:.0f} MiB / {base_objects} objects after 120 requests, "
        f"{mib:.0f} MiB / {objects} objects after 1,200 more"
    )
    assert codes == [200] * 1200
    # A leak of one object per request (or per task call) would add thousands; what stays is bounded.
    assert objects - base_objects < 100 and mib - base_mib < 16


def test_a_request_that_gives_up_never_fails_the_rows_it_shared_a_call_with(url):
    """NER takes 1 s a call. While it runs a first request's call, A (deadline 1.5 s) and then B arrive,
    in batches of their own, and go in the next call together; A's deadline passes while that call
    runs. The call is not cancelled for B, who waits for it: B gets its answer, A its deadline."""
    from faults import BrokenNER, SlowNER, StuckSummary

    from deployments.ingress import Ingress

    none = {"ray_actor_options": {"num_cpus": 0}}
    ingress = Ingress.options(name="ShareIngress", user_config={"result_cache_bytes": 0}, **none)
    sentiment, summary = BrokenNER.options(name="ShareSentiment"), StuckSummary.options(name="ShareSummary")
    serve.run(ingress.bind(SlowNER.bind(), sentiment.bind(), summary.bind()), name="share", route_prefix="/share")
    ner = {"tasks": ["ner"]}
    try:
        # Ready as a load balancer would see it: the ingress has asked its tasks what they read, which the
        # first request would otherwise do (up to ~1 s on busy cores) before its call, as A's deadline runs.
        assert requests.get(url + "/share/readyz", timeout=30).status_code == 200
        with ThreadPoolExecutor(3) as pool:
            first = pool.submit(post, url, "/share/analyze", {"text": "Paris, first.", **ner})
            time.sleep(0.3)
            a = pool.submit(post, url, "/share/analyze", {"text": "Paris, A.", "deadline_ms": 1500, **ner})
            time.sleep(0.3)  # in another ingress batch than A's
            b = pool.submit(post, url, "/share/analyze", {"text": "Paris, B.", **ner})
            answers = [f.result().json() for f in (first, a, b)]
        calls = serve.get_deployment_handle("SlowNER", app_name="share").calls.remote().result()
    finally:
        serve.delete("share", _blocking=False)  # its replicas go in the background
    assert calls == [1, 2]  # A and B in one call
    assert answers[1]["ner"]["code"] == "deadline_exceeded", answers[1]
    assert answers[0]["ner"] == [] and answers[2]["ner"] == [], answers
