"""The CRDs on a real apiserver: schema, defaults, CEL rules, status, printer columns.

Every manifest in e2e/manifests/ is applied server-side; each one under
e2e/manifests/invalid/ must be rejected with the message its ``# expect:`` line
records, and must not be stored.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from operator_support import patch_instance_status

REPO = Path(__file__).resolve().parents[2]
MANIFESTS = REPO / "e2e" / "manifests"
VALID = sorted(MANIFESTS.glob("*.yaml"))
INVALID = sorted((MANIFESTS / "invalid").glob("*.yaml"))


def expectation(path: Path) -> str:
    for line in path.read_text().splitlines():
        if line.startswith("# expect:"):
            return line.removeprefix("# expect:").strip()
    raise AssertionError(f"{path} has no '# expect:' line")


def crd(kube_cluster: Any, name: str) -> dict[str, Any]:
    doc: dict[str, Any] = kube_cluster.get_json("crd", name)
    return doc


@pytest.mark.parametrize(
    ("name", "kind", "short", "columns"),
    [
        (
            "ssoinstances.sso.dev",
            "SSOInstance",
            "ssoi",
            ["Phase", "Ready", "Endpoint", "Instances", "Age"],
        ),
        (
            "clientapps.sso.dev",
            "ClientApp",
            "capp",
            ["Instance", "App ID", "Secret", "Phase", "Age"],
        ),
    ],
)
def test_crd_is_established_with_names_and_columns(
    kube_cluster: Any, name: str, kind: str, short: str, columns: list[str]
) -> None:
    doc = crd(kube_cluster, name)
    established = [c for c in doc["status"]["conditions"] if c["type"] == "Established"]
    assert established and established[0]["status"] == "True"
    assert doc["spec"]["names"]["kind"] == kind
    assert doc["spec"]["names"]["shortNames"] == [short]
    assert doc["spec"]["names"]["categories"] == ["sso"]
    (version,) = doc["spec"]["versions"]
    assert version["name"] == "v1alpha1" and version["served"] and version["storage"]
    assert version["subresources"] == {"status": {}}
    assert [c["name"] for c in version["additionalPrinterColumns"]] == columns


@pytest.mark.parametrize("path", VALID, ids=lambda p: p.name)
def test_valid_manifest_is_accepted(kube_cluster: Any, namespace: str, path: Path) -> None:
    kube_cluster.kubectl("apply", "--server-side", "-n", namespace, "-f", str(path))
    doc = yaml.safe_load(path.read_text())
    stored = kube_cluster.get_json(doc["kind"].lower(), doc["metadata"]["name"], "-n", namespace)
    assert stored["metadata"]["generation"] == 1


def test_defaults_are_applied(kube_cluster: Any, namespace: str) -> None:
    kube_cluster.kubectl(
        "apply", "--server-side", "-n", namespace, "-f", str(MANIFESTS / "ssoinstance-minimal.yaml")
    )
    spec = kube_cluster.get_json("ssoinstance", "sso", "-n", namespace)["spec"]
    assert spec["replicas"] == 2
    assert spec["tokens"] == {
        "accessTokenTTL": "5m",
        "refreshIdleTTL": "336h",
        "refreshAbsoluteTTL": "720h",
    }
    assert spec["signing"] == {"algorithm": "RS256", "rotationInterval": "720h", "overlap": "24h"}
    assert spec["database"]["managed"]["instances"] == 1
    assert spec["redis"] == {"managed": {"image": "redis:7"}}
    assert spec["backup"]["schedule"] == "0 3 * * *"
    assert spec["security"]["lockout"] == {"enabled": True, "maxFailures": 5, "duration": "15m"}


@pytest.mark.parametrize("path", INVALID, ids=lambda p: p.name)
def test_invalid_manifest_is_rejected(kube_cluster: Any, namespace: str, path: Path) -> None:
    result = kube_cluster.kubectl(
        "apply", "--server-side", "-n", namespace, "-f", str(path), check=False
    )
    assert result.returncode != 0, f"{path.name} was accepted"
    assert expectation(path) in result.stderr
    doc = yaml.safe_load(path.read_text())
    missing = kube_cluster.kubectl(
        "get", doc["kind"].lower(), doc["metadata"]["name"], "-n", namespace, check=False
    )
    assert missing.returncode != 0 and "NotFound" in missing.stderr


def test_category_lists_both_kinds(kube_cluster: Any, namespace: str) -> None:
    for name in ("ssoinstance-minimal.yaml", "clientapp.yaml"):
        kube_cluster.kubectl("apply", "--server-side", "-n", namespace, "-f", str(MANIFESTS / name))
    out = kube_cluster.kubectl("get", "sso", "-n", namespace, "-o", "name").stdout.split()
    assert sorted(out) == ["clientapp.sso.dev/billing", "ssoinstance.sso.dev/sso"]


def test_instance_ref_is_immutable(kube_cluster: Any, namespace: str) -> None:
    kube_cluster.kubectl(
        "apply", "--server-side", "-n", namespace, "-f", str(MANIFESTS / "clientapp.yaml")
    )
    result = kube_cluster.kubectl(
        "patch",
        "clientapp",
        "billing",
        "-n",
        namespace,
        "--type=merge",
        "-p",
        json.dumps({"spec": {"instanceRef": {"name": "other"}}}),
        check=False,
    )
    assert result.returncode != 0
    assert "instanceRef is immutable" in result.stderr
    # Other fields stay mutable.
    kube_cluster.kubectl(
        "patch",
        "clientapp",
        "billing",
        "-n",
        namespace,
        "--type=merge",
        "-p",
        json.dumps({"spec": {"displayName": "Billing"}}),
    )


def test_status_keeps_declared_fields_and_kopf_progress(kube_cluster: Any, namespace: str) -> None:
    kube_cluster.kubectl(
        "apply", "--server-side", "-n", namespace, "-f", str(MANIFESTS / "ssoinstance-minimal.yaml")
    )
    status = {
        "observedGeneration": 1,
        "phase": "Pending",
        "conditions": [
            {
                "type": "Ready",
                "status": "False",
                "reason": "Provisioning",
                "message": "m",
                "lastTransitionTime": "2026-01-01T00:00:00Z",
                "observedGeneration": 1,
            }
        ],
        "endpoint": f"sso.{namespace}.svc:50051",
        "replicas": {"desired": 2, "ready": 0, "summary": "0/2"},
        "kopf": {"progress": {"apply": {"retries": 1, "anything": {"nested": True}}}},
        "undeclared": "is pruned",
    }
    patch_instance_status(kube_cluster, "sso", namespace, status)
    stored = kube_cluster.get_json("ssoinstance", "sso", "-n", namespace)["status"]
    expected = {key: value for key, value in status.items() if key != "undeclared"}
    assert stored == expected
    table = kube_cluster.kubectl("get", "ssoi", "sso", "-n", namespace).stdout.splitlines()
    assert table[0].split() == ["NAME", "PHASE", "READY", "ENDPOINT", "INSTANCES", "AGE"]
    assert table[1].split()[:5] == ["sso", "Pending", "False", f"sso.{namespace}.svc:50051", "0/2"]


def test_bad_status_is_rejected(kube_cluster: Any, namespace: str) -> None:
    kube_cluster.kubectl(
        "apply", "--server-side", "-n", namespace, "-f", str(MANIFESTS / "ssoinstance-minimal.yaml")
    )
    result = kube_cluster.kubectl(
        "patch",
        "ssoinstance",
        "sso",
        "-n",
        namespace,
        "--subresource=status",
        "--type=merge",
        "-p",
        json.dumps({"status": {"phase": "Sleeping"}}),
        check=False,
    )
    assert result.returncode != 0 and 'Unsupported value: "Sleeping"' in result.stderr
