"""deploy/k8s: every manifest valid against its schema, offline, and wired together.

Kubernetes kinds are checked against the schemas shipped in kubernetes-validate (strict:
unknown fields fail); KEDA's ScaledObject and the Prometheus Operator's ServiceMonitor
against the models cloudcoil generates from their CRDs. `kubectl kustomize` (Kustomize
built into kubectl) renders the whole; no cluster is needed or used.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import kubernetes_validate
import pydantic
import pytest
import yaml
from cloudcoil.models.keda.v1alpha1 import ScaledObject
from cloudcoil.models.prometheus_operator.v1 import ServiceMonitor

from bionic_worker.app import QUEUE
from tests.deploy.contract import (
    FOREIGN,
    ROOT,
    expected_services,
    settings_variables,
)

K8S = ROOT / "deploy/k8s"
KUBERNETES_VERSION = "1.30"  # gRPC probes are GA since 1.27
CUSTOM_KINDS: dict[str, type[pydantic.BaseModel]] = {
    "ScaledObject": ScaledObject,
    "ServiceMonitor": ServiceMonitor,
}
IMAGE = "bionicmemory"


def resource_files() -> list[Path]:
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    return [K8S / name for name in kustomization["resources"]]


def load_documents(paths: list[Path]) -> list[dict[str, Any]]:
    return [doc for path in paths for doc in yaml.safe_load_all(path.read_text()) if doc]


def validate(doc: dict[str, Any]) -> None:
    model = CUSTOM_KINDS.get(doc["kind"])
    if model is None:
        kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)
        return
    parsed = model.model_validate(doc)
    # the models ignore unknown fields: a field that does not survive the round trip is one
    assert parsed.model_dump(by_alias=True, exclude_unset=True, mode="json") == doc


def kustomize(folder: Path) -> subprocess.CompletedProcess[str]:
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl (with its built-in Kustomize) is not installed")
    return subprocess.run(
        [kubectl, "kustomize", str(folder)], capture_output=True, text=True, check=False
    )


@pytest.fixture(scope="module")
def documents() -> list[dict[str, Any]]:
    return load_documents(resource_files())


@pytest.fixture(scope="module")
def rendered(tmp_path_factory: pytest.TempPathFactory) -> list[dict[str, Any]]:
    folder = tmp_path_factory.mktemp("k8s") / "k8s"
    shutil.copytree(K8S, folder)
    without_secrets = kustomize(folder)
    assert without_secrets.returncode != 0, "kustomize must refuse to build without secrets"
    assert "secrets.env" in without_secrets.stderr
    shutil.copy(folder / "secrets.env.example", folder / "secrets.env")
    result = kustomize(folder)
    assert result.returncode == 0, result.stderr
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


def by_kind(docs: list[dict[str, Any]], kind: str) -> dict[str, dict[str, Any]]:
    return {d["metadata"]["name"]: d for d in docs if d["kind"] == kind}


def containers(docs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Workload name -> its first container, for Deployments and StatefulSets."""
    return {
        d["metadata"]["name"]: d["spec"]["template"]["spec"]["containers"][0]
        for d in docs
        if d["kind"] in ("Deployment", "StatefulSet")
    }


def test_every_manifest_follows_its_schema(documents: list[dict[str, Any]]) -> None:
    kinds = {d["kind"] for d in documents}
    assert {"Deployment", "StatefulSet", "HorizontalPodAutoscaler", "Service"} <= kinds
    assert set(CUSTOM_KINDS) <= kinds
    for doc in documents:
        validate(doc)


def test_an_unknown_field_fails_validation(documents: list[dict[str, Any]]) -> None:
    for kind in ("Deployment", *CUSTOM_KINDS):
        doc = next(d for d in documents if d["kind"] == kind)
        broken = {**doc, "spec": {**doc["spec"], "replicaz": 3}}
        with pytest.raises((kubernetes_validate.ValidationError, AssertionError)):
            validate(broken)


def test_kustomize_renders_valid_wired_manifests(rendered: list[dict[str, Any]]) -> None:
    for doc in rendered:
        validate(doc)
        assert doc["metadata"].get("namespace", "bionicmemory") == "bionicmemory"
    config = by_kind(rendered, "ConfigMap")
    secrets = by_kind(rendered, "Secret")
    for name, container in containers(rendered).items():
        for var in container.get("env", []):
            ref = var.get("valueFrom", {})
            if "configMapKeyRef" in ref:
                found = config[ref["configMapKeyRef"]["name"]]["data"]
                assert ref["configMapKeyRef"]["key"] in found, (name, var["name"])
            if "secretKeyRef" in ref:
                found = secrets[ref["secretKeyRef"]["name"]]["data"]
                assert ref["secretKeyRef"]["key"] in found, (name, var["name"])


def test_workloads_run_the_launchers_commands_and_variables(
    documents: list[dict[str, Any]],
) -> None:
    expected = expected_services()
    ours = {n: c for n, c in containers(documents).items() if c["image"] == IMAGE}
    assert set(ours) == set(expected) - {"llm"}, "k8s runs other services than the launcher"
    readable = settings_variables()
    for name, container in ours.items():
        want = expected[name]
        assert container["command"] == want.command, name
        env = {v["name"]: v.get("value") for v in container["env"]}
        assert set(want.environment) <= set(env), (name, set(want.environment) - set(env))
        prefixes = {p for p, names in readable.items() if names & set(want.environment)}
        known = FOREIGN | {v for p in prefixes for v in readable[p]}
        assert set(env) - set(want.environment) <= known, name
        for key, value in want.environment.items():
            if key.endswith("PORT"):
                assert env[key] == value, f"{name}: {key}={env[key]}, launcher: {value}"


def test_probes_and_services_reach_the_ports_containers_serve(
    documents: list[dict[str, Any]],
) -> None:
    pods = containers(documents)
    services = by_kind(documents, "Service")
    labels = {
        d["metadata"]["name"]: d["spec"]["template"]["metadata"]["labels"]
        for d in documents
        if d["kind"] in ("Deployment", "StatefulSet")
    }
    for name, container in pods.items():
        ports = {p["name"]: p["containerPort"] for p in container.get("ports", [])}
        env = {v["name"]: v.get("value") for v in container.get("env", [])}
        if name != "decay-beat":
            assert "readinessProbe" in container and "livenessProbe" in container, name
        for kind in ("startupProbe", "readinessProbe", "livenessProbe"):
            probe = container.get(kind, {})
            for how in ("grpc", "httpGet", "tcpSocket"):
                if how in probe:
                    port = probe[how]["port"]
                    assert port in ports or port in ports.values(), (name, kind)
                    if how == "grpc" and container["image"] == IMAGE:
                        assert str(port) in env.values(), f"{name} probes {port}, serves {env}"
    for svc_name, svc in services.items():
        selected = [
            w for w, lab in labels.items() if svc["spec"]["selector"].items() <= lab.items()
        ]
        assert selected, f"service {svc_name} selects no workload"
        for port in svc["spec"]["ports"]:
            target = port.get("targetPort", port["port"])
            for workload in selected:
                served = {p["name"]: p["containerPort"] for p in pods[workload]["ports"]}
                assert target in served or target in served.values(), (svc_name, target)
    for monitor in by_kind(documents, "ServiceMonitor").values():
        matched = [
            s for s in services.values()
            if monitor["spec"]["selector"]["matchLabels"].items() <= s["metadata"]["labels"].items()
        ]  # fmt: skip
        assert matched, monitor["metadata"]["name"]
        for endpoint in monitor["spec"]["endpoints"]:
            assert any(endpoint["port"] in {p["name"] for p in s["spec"]["ports"]} for s in matched)


def test_scaling_targets_exist(documents: list[dict[str, Any]]) -> None:
    deployments = by_kind(documents, "Deployment")
    for hpa in by_kind(documents, "HorizontalPodAutoscaler").values():
        assert hpa["spec"]["scaleTargetRef"]["name"] in deployments
    assert {"gateway", "embedder"} <= set(by_kind(documents, "HorizontalPodAutoscaler"))
    worker = by_kind(documents, "ScaledObject")["decay-worker"]
    assert worker["spec"]["scaleTargetRef"]["name"] in deployments
    (trigger,) = worker["spec"]["triggers"]
    assert trigger["type"] == "redis" and trigger["metadata"]["listName"] == QUEUE
    assert deployments["decay-beat"]["spec"]["replicas"] == 1
    assert deployments["decay-beat"]["spec"]["strategy"]["type"] == "Recreate"
    qdrant = by_kind(documents, "StatefulSet")["qdrant"]
    assert qdrant["spec"]["replicas"] >= 3
    env = {
        v["name"]: v.get("value")
        for v in qdrant["spec"]["template"]["spec"]["containers"][0]["env"]
    }
    assert env["QDRANT__CLUSTER__ENABLED"] == "true"
