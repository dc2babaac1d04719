"""The graph of config/cluster.yaml on a two-node Ray cluster: replicas spread over both nodes,
correct answers, and recovery when the worker node is removed under light load.

The test session already owns a single-node Ray in this process (the ``url`` fixture) and a
process can join only one Ray instance, so the scenario (tests/cluster_scenario.py) runs in a
subprocess and reports its figures as JSON.
"""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from ray.serve.schema import ServeDeploySchema
from served import replica_options

from nlpserve.schemas import IngressSettings

ROOT = Path(__file__).resolve().parents[1]
SCENARIO = ROOT / "tests" / "cluster_scenario.py"
# The RayService's Service (deploy/rayservice.yaml) by each of its DNS names in the namespace "default".
SERVICE_NAMES = [
    "nlpserve-serve-svc",
    "nlpserve-serve-svc.default",
    "nlpserve-serve-svc.default.svc",
    "nlpserve-serve-svc.default.svc.cluster.local",
]
TASKS = ("Encoder", "NER", "Sentiment", "Summary")  # every deployment behind the ingress
RECOVERY_BOUND_S = 180  # the scenario's own bound (RECOVERY_TIMEOUT_S)
LATENCY_BOUND_S = 65  # client timeout 60 s, proxy request_timeout_s 60 s, task_timeout_s 30 s


def _load(name: str) -> ServeDeploySchema:
    return ServeDeploySchema.model_validate(yaml.safe_load((ROOT / "config" / name).read_text()))


def test_cluster_config_is_the_single_node_graph_with_two_replicas_each():
    """No Ray: config/cluster.yaml is config/config.yaml but for the host, the replica counts, allowed_hosts
    and JSON logs."""
    single, cluster = _load("config.yaml"), _load("cluster.yaml")
    assert cluster.proxy_location.value == "EveryNode" and cluster.http_options.host == "0.0.0.0"
    expected = single.model_dump(exclude_unset=True)
    expected["http_options"]["host"] = "0.0.0.0"
    expected["logging_config"]["encoding"] = "JSON"  # for a log collector; TEXT to read on one machine
    for app in expected["applications"]:
        for d in app["deployments"]:
            d["num_replicas"] = 2
            if d["name"] == "Ingress":
                d["user_config"]["allowed_hosts"] = [*IngressSettings().allowed_hosts, *SERVICE_NAMES]
    assert cluster.model_dump(exclude_unset=True) == expected
    (app,) = cluster.applications
    assert {d.name for d in app.deployments} == {"Ingress", *TASKS}
    served = replica_options(yaml.safe_load((ROOT / "config" / "cluster.yaml").read_text()))
    assert all(0 < o["num_cpus"] < 1 and o["replicas"] == 2 for o in served.values())


@pytest.mark.serve
@pytest.mark.slow
@pytest.mark.own_ray
def test_replicas_spread_over_two_nodes_and_the_graph_recovers_when_one_is_removed():
    proc = subprocess.run([sys.executable, str(SCENARIO)], cwd=ROOT, capture_output=True, text=True, timeout=900)
    progress = [line for line in proc.stderr.splitlines() if line.startswith("[cluster")]
    print("\n" + "\n".join(progress))
    assert proc.returncode == 0, proc.stderr[-5000:]
    r = json.loads(proc.stdout.strip().splitlines()[-1])
    short = {k: {d: [n[:8] for n in ns] for d, ns in v.items()} for k, v in r.items() if k.startswith("replica_nodes")}
    for key, value in ({k: v for k, v in r.items() if k not in ("before", "nodes", "spread_before")} | short).items():
        print(f"{key}: {json.dumps(value)}")

    # Started as docs/cluster.md says, with token authentication kept on: a CLI without the token is refused.
    assert r["refused_without_token"]
    head, worker = r["nodes"]["head"], r["nodes"]["worker"]
    for name in TASKS:  # two replicas each, one per node: Serve's default SPREAD scheduling
        assert sorted(r["replica_nodes_before"][name]) == sorted([head, worker]), r["replica_nodes_before"]
    assert r["correct_before"], r["before"]

    assert r["recovered"] and r["recovery_s"] <= RECOVERY_BOUND_S, r
    assert r["correct_after"]
    assert set(r["replica_nodes_after"]) == {"Ingress", *TASKS}
    for name, nodes in r["replica_nodes_after"].items():  # all replaced on the head, target count again
        assert nodes == [head, head], (name, nodes)

    load = r["load"]
    assert r["node_gone"] and r["in_flight_during_removal"] >= 1  # the node really went, under load
    assert load["max_latency_s"] <= LATENCY_BOUND_S, load
    assert load["ok_but_wrong"] == 0, load
    # The bound on lost requests. The load sends one request at a time. A request can only fail or
    # degrade if a replica on the worker node accepted it (the ingress hop or one of its task
    # calls) before that replica's process was gone. Once the node's processes are gone, a
    # router that picks one of its replicas fails to reserve a slot there (Serve reserves before
    # it sends) and retries on another replica, so a request started after that point is served
    # by the head alone. So every failed or degraded request started before the node was gone
    # (node_gone_s) and was in flight during the removal: at most in_flight_during_removal of them.
    for bad in load["not_ok"]:
        assert bad["started_s"] < r["node_gone_s"], bad
    assert load["failed"] + load["degraded"] <= r["in_flight_during_removal"], load
    # While the lost replicas were being replaced, the surviving ones kept answering, correctly.
    recovering = r["during_recovery"]
    assert recovering["sent"] >= 1 and recovering["ok"] == recovering["sent"], recovering
