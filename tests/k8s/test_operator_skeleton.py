"""sso-operator against a real apiserver: it validates specs and records status.

The operator runs in-process with ``kopf.testing.KopfRunner``, watching only the
test's namespace. Custom resources are deleted while it still runs, so nothing
is left behind with a finalizer.
"""

from __future__ import annotations

import urllib.request
from typing import Any

import pytest
import yaml
from operator_support import (
    MANIFESTS,
    condition,
    free_port,
    get_or_none,
    kopf_operator,
    wait_for,
)


def wait_for_phase(
    kube_cluster: Any,
    kind: str,
    name: str,
    namespace: str,
    phase: str | tuple[str, ...],
    generation: int = 1,
) -> dict[str, Any]:
    phases = (phase,) if isinstance(phase, str) else phase
    obj: dict[str, Any] = wait_for(
        lambda: get_or_none(kube_cluster, kind, name, namespace),
        lambda obj: (
            obj is not None
            and obj.get("status", {}).get("phase") in phases
            and obj["status"].get("observedGeneration") == generation
        ),
        f"{kind} {namespace}/{name} phase {phase} at generation {generation}",
    )
    return obj


def delete_and_wait(kube_cluster: Any, kind: str, name: str, namespace: str) -> None:
    kube_cluster.kubectl("delete", kind, name, "-n", namespace, "--wait=false")
    wait_for(
        lambda: get_or_none(kube_cluster, kind, name, namespace),
        lambda obj: obj is None,
        f"{kind} {namespace}/{name} to be deleted",
    )


def events_for(kube_cluster: Any, namespace: str, name: str) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = kube_cluster.get_json(
        "events", "-n", namespace, "--field-selector", f"involvedObject.name={name}"
    )["items"]
    return items


#: A valid instance is provisioned (tests/k8s/test_ssoinstance_*.py check how); these
#: tests only need it past validation.
PROVISIONED = ("Provisioning", "Ready")


def test_minimal_instance_is_validated_and_provisioned(
    kube_cluster: Any, namespace: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    port = free_port()
    with kopf_operator(namespace, monkeypatch, f"--liveness=http://127.0.0.1:{port}/healthz"):
        kube_cluster.kubectl(
            "apply",
            "--server-side",
            "-n",
            namespace,
            "-f",
            str(MANIFESTS / "ssoinstance-minimal.yaml"),
        )
        obj = wait_for_phase(kube_cluster, "ssoinstance", "sso", namespace, PROVISIONED)
        status = obj["status"]
        assert status["observedGeneration"] == obj["metadata"]["generation"] == 1
        assert [c["type"] for c in status["conditions"]][:5] == [
            "Ready",
            "DatabaseReady",
            "CacheReady",
            "ServiceReady",
            "MigrationsReady",
        ]
        ready = condition(obj, "Ready")
        assert ready["reason"] in PROVISIONED
        assert ready["observedGeneration"] == 1 and ready["lastTransitionTime"]
        assert status["endpoint"] == f"sso.{namespace}.svc:50051"
        assert status["issuer"] == f"http://sso.{namespace}.svc:8080"
        assert status["jwksUri"] == f"http://sso.{namespace}.svc:8080/.well-known/jwks.json"
        assert status["replicas"]["desired"] == 2
        # kopf's bookkeeping uses our prefix (the diff base once every handler finished).
        obj = wait_for(
            lambda: get_or_none(kube_cluster, "ssoinstance", "sso", namespace),
            lambda o: "sso.dev/last-handled-configuration" in o["metadata"].get("annotations", {}),
            "the last-handled configuration",
        )
        annotations = obj["metadata"].get("annotations", {})
        assert "sso.dev/last-handled-configuration" in annotations
        assert not any(key.startswith("kopf.zalando.org") for key in annotations)

        table = kube_cluster.kubectl("get", "ssoi", "-n", namespace).stdout.splitlines()
        assert table[0].split() == ["NAME", "PHASE", "READY", "ENDPOINT", "INSTANCES", "AGE"]
        row = table[1].split()
        assert row[0] == "sso" and row[1] in PROVISIONED and row[3] == status["endpoint"]

        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5) as response:
            assert response.status == 200

        # An update is reconciled too: a new generation, and the new replica count.
        kube_cluster.kubectl(
            "patch", "ssoi", "sso", "-n", namespace, "--type=merge", "-p", '{"spec":{"replicas":3}}'
        )
        obj = wait_for_phase(kube_cluster, "ssoinstance", "sso", namespace, PROVISIONED, 2)
        assert obj["status"]["replicas"]["desired"] == 3
        assert any(
            e["reason"] == "SecretGenerated" for e in events_for(kube_cluster, namespace, "sso")
        )

        delete_and_wait(kube_cluster, "ssoinstance", "sso", namespace)


def test_spec_invalid_beyond_the_schema_fails_then_recovers(
    kube_cluster: Any, namespace: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = MANIFESTS / "rejected-by-operator" / "backup-schedule-out-of-range.yaml"
    expect = next(
        line.removeprefix("# expect:").strip()
        for line in path.read_text().splitlines()
        if line.startswith("# expect:")
    )
    name = yaml.safe_load(path.read_text())["metadata"]["name"]
    with kopf_operator(namespace, monkeypatch) as runner:
        kube_cluster.kubectl("apply", "--server-side", "-n", namespace, "-f", str(path))
        obj = wait_for_phase(kube_cluster, "ssoinstance", name, namespace, "Failed")
        ready = condition(obj, "Ready")
        assert (ready["status"], ready["reason"]) == ("False", "InvalidSpec")
        assert expect in ready["message"]
        warnings = [e for e in events_for(kube_cluster, namespace, name) if e["type"] == "Warning"]
        assert any(e["reason"] == "InvalidSpec" and expect in e["message"] for e in warnings)

        # Fixing the spec gets it provisioned (a permanent failure is per generation).
        kube_cluster.kubectl(
            "patch",
            "ssoi",
            name,
            "-n",
            namespace,
            "--type=merge",
            "-p",
            '{"spec":{"backup":{"schedule":"15 3 * * *"}}}',
        )
        obj = wait_for_phase(kube_cluster, "ssoinstance", name, namespace, PROVISIONED, 2)
        assert condition(obj, "Ready")["reason"] in PROVISIONED
        delete_and_wait(kube_cluster, "ssoinstance", name, namespace)
    assert expect in runner.output


def test_existing_resources_are_resumed(
    kube_cluster: Any, namespace: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    for manifest in ("ssoinstance-full.yaml", "ssoinstance-external.yaml", "clientapp.yaml"):
        kube_cluster.kubectl(
            "apply", "--server-side", "-n", namespace, "-f", str(MANIFESTS / manifest)
        )
    with kopf_operator(namespace, monkeypatch):
        full = wait_for_phase(kube_cluster, "ssoinstance", "sso-full", namespace, PROVISIONED)
        assert full["status"]["issuer"] == "https://sso.example.com"
        assert full["status"]["jwksUri"] == "https://sso.example.com/.well-known/jwks.json"
        assert full["status"]["replicas"]["desired"] == 3
        assert full["status"]["database"]["instances"] == 3
        external = wait_for_phase(kube_cluster, "ssoinstance", "sso-external", namespace, "Pending")
        assert external["status"]["database"] == {"mode": "external"}  # its Secrets are missing
        app = wait_for_phase(kube_cluster, "clientapp", "billing", namespace, "Pending")
        assert app["status"]["secretName"] == "billing-sso-credentials"
        assert app["status"]["instance"] == f"{namespace}/sso"
        assert condition(app, "Ready")["reason"] == "WaitingForInstance"
        table = kube_cluster.kubectl("get", "capp", "-n", namespace).stdout.splitlines()
        assert table[0].split() == ["NAME", "INSTANCE", "APP", "ID", "SECRET", "PHASE", "AGE"]
        assert table[1].split()[:4] == ["billing", "sso", "billing-sso-credentials", "Pending"]
        for kind, name in (
            ("clientapp", "billing"),
            ("ssoinstance", "sso-full"),
            ("ssoinstance", "sso-external"),
        ):
            delete_and_wait(kube_cluster, kind, name, namespace)
