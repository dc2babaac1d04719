"""Multi-node scenario for tests/test_cluster.py, run in its own process.

A two-node Ray cluster on this machine started as docs/cluster.md says, with token
authentication on: ``ray start --head --block`` (4 CPUs) and ``ray start --address ... --block``
(2 CPUs), each in a session of its own and stopped by its id; the graph of config/cluster.yaml
deployed with ``serve deploy``; then the worker node stopped under light load. Prints progress to
stderr and one JSON object, the figures, as the last line of stdout. Run it from the project root:
``python tests/cluster_scenario.py [--sigkill]``.

Ray keeps its files (and the ``ray_current_cluster`` address file that ``ray.init()`` without an
address reads) under ``RAY_TMPDIR``; the scenario points that at a directory of its own, so Ray
instances started by other processes on this machine never see this cluster. Its token is a file
there too (``RAY_AUTH_TOKEN_PATH``), so the user's ``~/.ray/auth_token`` is left alone.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

# Ray's files, its address file and the token in a directory of our own (see the module docstring), set
# before Ray is imported: it reads RAY_AUTH_MODE once, then.
OWN_TMP = "RAY_TMPDIR" not in os.environ
if OWN_TMP:
    os.environ["RAY_TMPDIR"] = tempfile.mkdtemp(prefix="nlpserve-cluster-")
TOKEN = Path(os.environ["RAY_TMPDIR"], "auth_token")
TOKEN.write_text(secrets.token_hex(16))
os.environ.update(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN_PATH=str(TOKEN))

import psutil  # noqa: E402
import ray  # noqa: E402
import requests  # noqa: E402
import yaml  # noqa: E402
from ray import serve  # noqa: E402
from ray.serve.schema import ApplicationStatus, DeploymentStatus, ReplicaState, ServeDeploySchema  # noqa: E402
from ray.util.state import list_actors  # noqa: E402

if __name__ == "__main__":  # run as a script, only tests/ is on the path: add the project root
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from nlpserve.on_ray import local  # noqa: E402

CONFIG = local.ROOT / "config" / "cluster.yaml"
APP = "nlp"
TASKS = ("Encoder", "NER", "Sentiment", "Summary")  # every deployment behind the ingress
TEXT = (
    "Apple Inc. said on Monday that Tim Cook will visit Goldman Sachs in New York next week. "
    "The trip is a big deal and investors loved it."
)
LABELS = {"positive", "negative", "neutral"}
REQUEST_TIMEOUT_S = 60
START_TIMEOUT_S = 240  # two nodes, eight replicas loading torch and spaCy on two shared cores
RECOVERY_TIMEOUT_S = 180


def log(*args) -> None:
    print(f"[cluster {time.strftime('%H:%M:%S')}]", *args, file=sys.stderr, flush=True)


def single_machine_schema(port: int) -> tuple[ServeDeploySchema, dict[str, int]]:
    """config/cluster.yaml with the two settings a single machine cannot share between nodes:
    one proxy (on the head; two would fight over the port) on 127.0.0.1 and a free port.
    Everything else, the replica counts included, is the cluster config as shipped."""
    raw = yaml.safe_load(CONFIG.read_text())
    raw["proxy_location"] = "HeadOnly"
    raw["http_options"].update(host="127.0.0.1", port=port)
    schema = ServeDeploySchema.model_validate(raw)
    (app,) = schema.applications
    return schema, {d.name: d.num_replicas for d in app.deployments}


def replica_nodes() -> dict[str, list[str]]:
    """Node id of every live replica of the app, per deployment (actor names are
    ``SERVE_REPLICA::<app>#<deployment>#<id>``)."""
    nodes: dict[str, list[str]] = {}
    for actor in list_actors(filters=[("state", "=", "ALIVE")], limit=10_000, timeout=30):
        name = actor.name or ""
        if name.startswith(f"SERVE_REPLICA::{APP}#"):
            deployment = name.split("::", 1)[1].split("#")[1]
            nodes.setdefault(deployment, []).append(actor.node_id)
    return {d: sorted(n) for d, n in sorted(nodes.items())}


def serve_healthy(targets: dict[str, int]) -> bool:
    """The app RUNNING, and every deployment HEALTHY with exactly its target of RUNNING replicas."""
    app = serve.status().applications.get(APP)
    if app is None or app.status != ApplicationStatus.RUNNING:
        return False
    for name, target in targets.items():
        d = app.deployments.get(name)
        if d is None or d.status != DeploymentStatus.HEALTHY:
            return False
        if d.replica_states.get(ReplicaState.RUNNING, 0) != target or sum(d.replica_states.values()) != target:
            return False
    return True


def check(out: dict) -> dict[str, bool]:
    """The facts about one answer to TEXT (with a suffix) that must hold."""
    ner, sentiment, summary = out.get("ner"), out.get("sentiment"), out.get("summary")
    entities = {(e.get("entity_group"), e.get("word")) for e in ner} if isinstance(ner, list) else set()
    return {
        "ner_org_apple": bool(entities & {("ORG", "Apple Inc."), ("ORG", "Apple")}),
        "ner_person_tim_cook": ("PERSON", "Tim Cook") in entities,
        "sentiment_label": isinstance(sentiment, dict) and sentiment.get("label") in LABELS,
        "summary_text": isinstance(summary, dict) and bool(str(summary.get("summary_text", "")).strip()),
    }


def has_task_error(out: dict) -> bool:
    return any(isinstance(out.get(t), dict) and "error" in out[t] for t in ("ner", "sentiment", "summary"))


def analyze(url: str, text: str) -> dict:
    """One POST /analyze: its outcome (ok, degraded, failed), whether an ok answer is correct, latency."""
    start = time.monotonic()
    record = {"start": start}
    try:
        r = requests.post(url + "/analyze", data=json.dumps({"text": text}), timeout=REQUEST_TIMEOUT_S)
    except requests.RequestException as e:
        record.update(outcome="failed", error=f"{type(e).__name__}: {e}"[:300])
    else:
        if r.status_code != 200:
            record.update(outcome="failed", status=r.status_code, error=r.text[:300])
        else:
            out = r.json()
            if has_task_error(out):
                errors = {t: out[t]["error"] for t in ("ner", "sentiment", "summary") if "error" in out.get(t, {})}
                record.update(outcome="degraded", status=200, error=json.dumps(errors)[:300])
            else:
                facts = check(out)
                record.update(outcome="ok", status=200, correct=all(facts.values()), facts=facts)
    record["end"] = time.monotonic()
    record["latency_s"] = round(record["end"] - start, 3)
    return record


class Load(threading.Thread):
    """Light load: one request at a time, each with a text never sent before (the ingress has a
    result cache), until stopped."""

    def __init__(self, url: str) -> None:
        super().__init__(daemon=True)
        self.url = url
        self.records: list[dict] = []
        self.stop = threading.Event()

    def run(self) -> None:
        i = 0
        while not self.stop.is_set():
            i += 1
            self.records.append(analyze(self.url, f"{TEXT} Load request {i}."))


def summarize(records: list[dict], t0: float) -> dict:
    outcomes = [r["outcome"] for r in records]
    return {
        "sent": len(records),
        "ok": outcomes.count("ok"),
        "degraded": outcomes.count("degraded"),
        "failed": outcomes.count("failed"),
        "ok_but_wrong": sum(1 for r in records if r["outcome"] == "ok" and not r["correct"]),
        "max_latency_s": max((r["latency_s"] for r in records), default=0.0),
        "not_ok": [
            {k: v for k, v in r.items() if k in ("outcome", "status", "error", "latency_s")}
            | {"started_s": round(r["start"] - t0, 3)}
            for r in records
            if r["outcome"] != "ok"
        ],
    }


def alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def ray_start(*args: str) -> int:
    """``ray start --block`` in a session of its own, as docs/cluster.md runs it; returns the session id."""
    cmd = ["ray", "start", "--block", "--disable-usage-stats", "--node-ip-address", "127.0.0.1", *args]
    # Agents and metrics on ports of their own: the two nodes share this machine (and may share it
    # with another Ray).
    for flag in ("dashboard-agent-listen-port", "dashboard-agent-grpc-port", "metrics-export-port"):
        cmd += [f"--{flag}", str(local.free_port())]
    return subprocess.Popen(cmd, start_new_session=True, stdout=subprocess.DEVNULL).pid


def session(sid: int) -> list[psutil.Process]:
    out = []
    for p in psutil.process_iter():
        try:
            if os.getsid(p.pid) == sid:
                out.append(p)
        except (ProcessLookupError, PermissionError):
            pass
    return out


def stop_session(sid: int, sig: int = signal.SIGTERM, grace_s: float = 30) -> None:
    """Every process of the session gets ``sig`` (SIGTERM: as ``ray stop`` does); what is left after
    ``grace_s`` is killed."""
    procs = session(sid)
    for p in procs:
        try:
            p.send_signal(sig)
        except psutil.NoSuchProcess:
            pass
    _, left = psutil.wait_procs(procs, timeout=grace_s)
    for p in left:
        p.kill()


def serve_cli(*args: str, token: bool = True) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    if not token:  # as a shell without docs/cluster.md's `export RAY_AUTH_MODE=token`
        env.pop("RAY_AUTH_MODE")
    return subprocess.run(["serve", *args], env=env, capture_output=True, text=True, timeout=120)


def main(sigkill: bool = False) -> dict:
    tmp = os.environ["RAY_TMPDIR"]
    os.environ.update(local.serving_environment())  # HAProxy where installed, as the RayService runs it
    log("Ray files in", tmp)
    result: dict = {}
    began = time.monotonic()
    port, dashboard = local.free_port(), local.free_port()
    sessions = []
    load = None
    try:
        # The dashboard takes `serve deploy` and serves the state API (list_actors); on a port of its
        # own, 8265 may be taken.
        sessions.append(ray_start("--head", "--port", str(port), "--num-cpus", "4", "--dashboard-port", str(dashboard)))
        address = f"127.0.0.1:{port}"
        sessions.append(ray_start("--address", address, "--num-cpus", "2"))
        ray.init(address=address, log_to_driver=False)
        deadline = time.monotonic() + START_TIMEOUT_S
        while len(nodes := [n for n in ray.nodes() if n["Alive"]]) < 2:
            if time.monotonic() > deadline:
                raise TimeoutError(f"two nodes not up after {START_TIMEOUT_S} s: {nodes}")
            time.sleep(0.5)
        head_id = next(n["NodeID"] for n in nodes if "node:__internal_head__" in n["Resources"])
        worker_id = next(n["NodeID"] for n in nodes if n["NodeID"] != head_id)
        result["nodes"] = {"head": head_id, "worker": worker_id}
        log("cluster up:", address, "head", head_id[:8], "worker", worker_id[:8])

        schema, targets = single_machine_schema(local.free_port())
        url = f"http://127.0.0.1:{schema.http_options.port}"
        dashboard_url = f"http://127.0.0.1:{dashboard}"
        refused = serve_cli("status", "--address", dashboard_url, token=False)
        result["refused_without_token"] = refused.returncode != 0 and "token" in (refused.stderr + refused.stdout)
        config = Path(tmp, "cluster.yaml")
        config.write_text(yaml.safe_dump(schema.model_dump(mode="json", exclude_unset=True)))
        deployed = serve_cli("deploy", str(config), "--address", dashboard_url)
        if deployed.returncode != 0:
            raise RuntimeError(f"serve deploy failed: {deployed.stderr[-2000:]}")
        deadline = time.monotonic() + START_TIMEOUT_S
        while not serve_healthy(targets):
            app = serve.status().applications.get(APP)
            if app is not None and app.status == ApplicationStatus.DEPLOY_FAILED:
                raise RuntimeError(f"deploy failed: {app.message or app.deployments}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"graph not healthy after {START_TIMEOUT_S} s: {serve.status()}")
            time.sleep(1)
        result["started_s"] = round(time.monotonic() - began, 1)
        placement = replica_nodes()
        result["replica_nodes_before"] = placement
        result["spread_before"] = {d: set(n) == {head_id, worker_id} for d, n in placement.items()}
        log(
            f"graph healthy after {result['started_s']} s; replicas per node:",
            {d: [n[:8] for n in ns] for d, ns in placement.items()},
        )

        before = [analyze(url, f"{TEXT} Request {i}.") for i in range(3)]
        result["before"] = [{k: r.get(k) for k in ("outcome", "status", "error", "facts", "latency_s")} for r in before]
        result["correct_before"] = all(r["outcome"] == "ok" and r["correct"] for r in before)
        log("answers before removal correct:", result["correct_before"])

        load = Load(url)
        load.start()
        while len(load.records) < 3 and load.is_alive():  # the load is flowing before the node goes
            time.sleep(0.1)
        doomed = [a.pid for a in list_actors(filters=[("node_id", "=", worker_id)]) if a.state == "ALIVE"]
        removing = time.monotonic()
        # Graceful by default (SIGTERM to every process of the node, as `ray stop` does); --sigkill kills
        # them all at once, as a crash would.
        stop_session(sessions[1], signal.SIGKILL if sigkill else signal.SIGTERM)
        result["remove_node_s"] = round(time.monotonic() - removing, 3)
        while any(map(alive, doomed)) and time.monotonic() < removing + 60:
            time.sleep(0.01)
        gone = time.monotonic()
        result["node_gone"] = not any(map(alive, doomed))
        result["node_gone_s"] = round(gone - removing, 3)
        log(
            f"worker node stopped ({'SIGKILL' if sigkill else 'SIGTERM'}): its session took "
            f"{result['remove_node_s']} s, its {len(doomed)} actors' processes gone after {result['node_gone_s']} s"
        )

        healthy_at = recovered_at = None
        after: dict = {}
        deadline = removing + RECOVERY_TIMEOUT_S
        while time.monotonic() < deadline:
            if healthy_at is None:
                placement = replica_nodes()
                on_head = all(set(placement.get(d, [])) == {head_id} for d in targets)
                counts = all(len(placement.get(d, [])) == n for d, n in targets.items())
                if on_head and counts and serve_healthy(targets):
                    healthy_at = time.monotonic()
                    result["replica_nodes_after"] = placement
                    log(f"Serve healthy again {healthy_at - removing:.1f} s after the removal")
            if healthy_at is not None:
                after = analyze(url, f"{TEXT} After recovery {int(time.monotonic() * 1000)}.")
                if after["outcome"] == "ok" and after["correct"]:
                    recovered_at = after["end"]
                    break
            time.sleep(0.5)
        result["recovered"] = recovered_at is not None
        result["serve_healthy_s"] = round(healthy_at - removing, 1) if healthy_at else None
        result["recovery_s"] = round(recovered_at - removing, 1) if recovered_at else None
        result["correct_after"] = bool(after) and after["outcome"] == "ok" and after["correct"]
        if recovered_at is None:
            log("not recovered:", serve.status(), replica_nodes())

        load.stop.set()
        load.join(REQUEST_TIMEOUT_S + 5)
        records = list(load.records)
        end = recovered_at or time.monotonic()
        # Requests in flight at some moment of the removal: started before the node's processes
        # were all gone, ended after remove_node began. Those are the ones the removal can hit.
        result["in_flight_during_removal"] = sum(1 for r in records if r["start"] < gone and r["end"] > removing)
        result["load"] = summarize(records, removing)
        # Requests that started after the node was gone and ended before Serve was whole again:
        # served by the surviving replicas on the head while the lost ones were being replaced.
        window = [r for r in records if r["start"] >= gone and r["end"] <= (healthy_at or end)]
        result["during_recovery"] = {k: v for k, v in summarize(window, removing).items() if k != "not_ok"}
        log("load during the removal:", {k: v for k, v in result["load"].items() if k != "not_ok"})
    finally:
        if load is not None:
            load.stop.set()
        # The whole cluster goes, so no serve.shutdown(): it would wait out each ingress replica's drain
        # period behind HAProxy (30 s). A head node's `ray start --block` and GCS outlive SIGTERM for
        # over 30 s, so what is left after a few seconds is killed.
        ray.shutdown()
        for sid in reversed(sessions):
            stop_session(sid, grace_s=5)
        log("cluster stopped")
    if OWN_TMP:  # kept after an exception, for its logs (the first progress line names it)
        shutil.rmtree(tmp, ignore_errors=True)
    result["total_s"] = round(time.monotonic() - began, 1)
    return result


if __name__ == "__main__":
    print(json.dumps(main(sigkill="--sigkill" in sys.argv[1:])), flush=True)
