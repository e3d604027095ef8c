"""The sso-operator Helm chart: lint, server-side validation, RBAC that really suffices.

The last tests install the chart's ServiceAccount and RBAC for real, then run
the operator with that ServiceAccount's own token (a TokenRequest, as the pod
would get), so a missing rule shows up as a failing reconcile here rather
than in a cluster. (Kubeconfig impersonation cannot be used for this: kopf's
client sends no Impersonate-* headers.)
"""

from __future__ import annotations

import base64
import filecmp
import json
import re
import subprocess
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import kopf
import pytest
import yaml
from kopf._cogs.clients import errors as kopf_errors
from kopf.testing import KopfRunner
from kubernetes_asyncio.client.exceptions import ApiException
from operator_support import get_or_none, wait_for

from sso_operator import kube

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "charts" / "sso-operator"
MANIFESTS = REPO / "e2e" / "manifests"
KUBE_VERSION = "v1.36.3"


# An HTTP 403 as the operator and kopf report one: our kube.translate ("HTTP 403 ..."),
# kopf's APIForbiddenError and the API server's "... is forbidden", kopf's fallback
# warnings ("Not enough permissions"). Not a bare "403": --verbose output holds
# timestamps ("12:00:00,403"), key ids ("rs256-403c0ad7") and resourceVersions ("'403'"),
# each of which once failed this test.
HTTP_403 = re.compile(r"HTTP 403|forbidden|not enough permissions", re.IGNORECASE)


def helm_binary(kube_cluster: Any) -> str:
    """helm from the cluster's binary cache (next to kubectl), else any cached version."""
    beside_kubectl = Path(kube_cluster.kubectl_path).parent / "helm"
    candidates = [beside_kubectl, *sorted(Path.home().glob(".cache/sso-k8s/*/bin/helm"))]
    for candidate in candidates:
        if candidate.is_file():
            return str(candidate)
    pytest.fail(
        "helm is not built: run `make k8s-binaries` (it builds helm into "
        f"~/.cache/sso-k8s/<versions>/bin); looked at {[str(c) for c in candidates]}"
    )


def helm(kube_cluster: Any, *args: str) -> str:
    result = subprocess.run(
        [helm_binary(kube_cluster), *args],
        capture_output=True,
        text=True,
        timeout=120,
        env={"KUBECONFIG": kube_cluster.kubeconfig, "HOME": str(Path.home()), "PATH": "/usr/bin"},
    )
    assert result.returncode == 0, (
        f"helm {' '.join(args)} failed:\n{result.stderr}\n{result.stdout}"
    )
    return result.stdout


def render(kube_cluster: Any, release: str, namespace: str, *values: str) -> list[dict[str, Any]]:
    out = helm(
        kube_cluster,
        "template",
        release,
        str(CHART),
        "--namespace",
        namespace,
        "--kube-version",
        KUBE_VERSION,
        *values,
    )
    return [doc for doc in yaml.safe_load_all(out) if doc]


def test_the_403_check_matches_what_a_403_prints() -> None:
    """The pattern the RBAC test greps the operator's output with, on what a 403 prints."""
    error = ApiException(status=403, reason="Forbidden")
    error.body = json.dumps({"kind": "Status", "message": 'secrets is forbidden: User "x"'})
    printed = [
        str(kube.translate(error, "get Secret ns/s")),
        repr(
            kopf_errors.APIForbiddenError(
                {"code": 403, "message": "forbidden"}, status=403, headers={}
            )
        ),
        "Not enough permissions to list namespaces. Falling back to ...",
    ]
    assert [bool(HTTP_403.search(line)) for line in printed] == [True, True, True], printed
    harmless = "[12:00:00,403] 'resourceVersion': '403', active 20261128-rs256-403c0ad7"
    assert HTTP_403.search(harmless) is None


def test_chart_crds_are_identical_to_crds_dir() -> None:
    chart_crds = CHART / "crds"
    names = sorted(p.name for p in (REPO / "crds").glob("*.yaml"))
    assert names == sorted(p.name for p in chart_crds.glob("*.yaml"))
    _match, mismatch, errors = filecmp.cmpfiles(REPO / "crds", chart_crds, names, shallow=False)
    assert (mismatch, errors) == ([], []), "copy crds/*.yaml into charts/sso-operator/crds/"


def test_helm_lint(kube_cluster: Any) -> None:
    out = helm(kube_cluster, "lint", str(CHART), "--strict", "--kube-version", KUBE_VERSION)
    assert "0 chart(s) failed" in out


@pytest.mark.parametrize(
    "values",
    [[], ["--set", "watch.namespaces={a,b}", "--set", "operator.logLevel=debug"]],
    ids=["cluster-wide", "namespaced"],
)
def test_rendered_chart_passes_server_side_dry_run(
    kube_cluster: Any, namespace: str, values: list[str]
) -> None:
    out = helm(
        kube_cluster,
        "template",
        "sso-op",
        str(CHART),
        "--namespace",
        namespace,
        "--kube-version",
        KUBE_VERSION,
        "--include-crds",
        *values,
    )
    if values:
        # RoleBindings go into the watched namespaces: they must exist for the dry run.
        out = out.replace("namespace: a\n", f"namespace: {namespace}\n")
        out = out.replace("namespace: b\n", f"namespace: {namespace}\n")
    result = kube_cluster.kubectl(
        "apply", "--dry-run=server", "--server-side", "-n", namespace, "-f", "-", input=out
    )
    applied = result.stdout
    for kind in ("customresourcedefinition", "serviceaccount", "clusterrole", "deployment"):
        assert kind in applied, applied


def test_values_schema_rejects_unknown_and_bad_values(kube_cluster: Any) -> None:
    binary = helm_binary(kube_cluster)
    for bad in (["--set", "unknownKey=1"], ["--set", "operator.logLevel=loud"]):
        result = subprocess.run(
            [binary, "template", "x", str(CHART), "--kube-version", KUBE_VERSION, *bad],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert result.returncode != 0 and "values don't meet the specifications" in result.stderr


def test_deployment_is_hardened(kube_cluster: Any) -> None:
    docs = render(kube_cluster, "sso-op", "sso-system")
    (deployment,) = [d for d in docs if d["kind"] == "Deployment"]
    spec = deployment["spec"]
    assert spec["replicas"] == 1 and spec["strategy"] == {"type": "Recreate"}
    pod = spec["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    (container,) = pod["containers"]
    security = container["securityContext"]
    assert security["readOnlyRootFilesystem"] is True
    assert security["allowPrivilegeEscalation"] is False
    assert security["capabilities"] == {"drop": ["ALL"]}
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "health"}
    assert container["ports"][0]["containerPort"] == 8081
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["SSO_OPERATOR_LIVENESS"] == "http://0.0.0.0:8081/healthz"
    assert env["SSO_OPERATOR_NAMESPACES"] == ""
    assert container["resources"]["requests"] and container["resources"]["limits"]
    assert container["image"] == "sso-operator:0.1.0"


def test_rbac_has_no_wildcards_and_covers_the_operator(kube_cluster: Any) -> None:
    docs = render(kube_cluster, "sso-op", "sso-system")
    rules = [rule for d in docs if d["kind"] == "ClusterRole" for rule in d["rules"]]
    for rule in rules:
        for key in ("apiGroups", "resources", "verbs"):
            assert "*" not in rule[key], rule
    granted = {
        (group, resource, verb)
        for rule in rules
        for group in rule["apiGroups"]
        for resource in rule["resources"]
        for verb in rule["verbs"]
    }
    needed = {
        ("sso.dev", "ssoinstances", "watch"),
        ("sso.dev", "ssoinstances", "patch"),
        ("sso.dev", "ssoinstances/status", "patch"),
        ("sso.dev", "ssoinstances/finalizers", "update"),
        ("sso.dev", "clientapps/finalizers", "update"),
        ("", "events", "create"),
        ("apiextensions.k8s.io", "customresourcedefinitions", "watch"),
        ("", "namespaces", "list"),
        ("apps", "statefulsets", "create"),
        ("batch", "cronjobs", "patch"),
        ("", "secrets", "delete"),
        ("", "persistentvolumeclaims", "get"),
        ("policy", "poddisruptionbudgets", "create"),
        ("autoscaling", "horizontalpodautoscalers", "update"),
        ("networking.k8s.io", "networkpolicies", "create"),
    }
    assert needed <= granted, needed - granted
    # Nothing that would let the operator escalate or read what it does not own.
    assert not {g for g in granted if g[1] in ("pods/exec", "roles", "clusterroles", "nodes")}


# ------------------------------------------------ the operator as the chart's SA


@contextmanager
def installed_rbac(kube_cluster: Any, namespace: str, release: str, *values: str) -> Iterator[str]:
    """Apply the chart's ServiceAccount and RBAC for real; yield the SA name; clean up."""
    docs = render(
        kube_cluster,
        release,
        namespace,
        "--show-only",
        "templates/serviceaccount.yaml",
        "--show-only",
        "templates/rbac.yaml",
        *values,
    )
    manifest = yaml.safe_dump_all(docs)
    kube_cluster.kubectl("apply", "-f", "-", input=manifest)
    (sa,) = [d["metadata"]["name"] for d in docs if d["kind"] == "ServiceAccount"]
    try:
        yield sa
    finally:
        kube_cluster.kubectl(
            "delete", "--ignore-not-found", "--wait=false", "-f", "-", input=manifest
        )


def service_account_kubeconfig(kube_cluster: Any, namespace: str, sa: str, path: Path) -> Path:
    """A kubeconfig that authenticates as the ServiceAccount with a fresh bound token."""
    token = kube_cluster.kubectl(
        "create", "token", sa, "-n", namespace, "--duration=30m"
    ).stdout.strip()
    admin = yaml.safe_load(Path(kube_cluster.kubeconfig).read_text())
    current = next(c for c in admin["contexts"] if c["name"] == admin["current-context"])
    cluster = next(c for c in admin["clusters"] if c["name"] == current["context"]["cluster"])
    server_cluster = dict(cluster["cluster"])
    if "certificate-authority" in server_cluster:  # keep it self-contained
        ca = Path(server_cluster.pop("certificate-authority"))
        if not ca.is_absolute():
            ca = Path(kube_cluster.kubeconfig).parent / ca
        server_cluster["certificate-authority-data"] = base64.b64encode(ca.read_bytes()).decode()
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "current-context": "sa",
        "clusters": [{"name": "c", "cluster": server_cluster}],
        "users": [{"name": sa, "user": {"token": token}}],
        "contexts": [{"name": "sa", "context": {"cluster": "c", "user": sa}}],
    }
    path.write_text(yaml.safe_dump(config))
    return path


def can_i(kube_cluster: Any, identity: str, *args: str) -> bool:
    result = kube_cluster.kubectl("auth", "can-i", *args, "--as", identity, check=False)
    answer: str = result.stdout.strip()
    return answer == "yes"


@pytest.mark.parametrize("scope", ["cluster-wide", "namespaced"])
def test_operator_reconciles_with_the_charts_service_account(
    kube_cluster: Any,
    namespace: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    scope: str,
) -> None:
    release = f"sso-op-{uuid.uuid4().hex[:6]}"
    values = ["--set", f"watch.namespaces={{{namespace}}}"] if scope == "namespaced" else []
    with installed_rbac(kube_cluster, namespace, release, *values) as sa:
        identity = f"system:serviceaccount:{namespace}:{sa}"
        assert can_i(
            kube_cluster, identity, "patch", "ssoinstances.sso.dev/status", "-n", namespace
        )
        assert not can_i(kube_cluster, identity, "create", "pods", "-n", namespace)
        assert not can_i(kube_cluster, identity, "create", "clusterroles")
        assert can_i(kube_cluster, identity, "get", "secrets", "-n", "kube-system") == (
            scope == "cluster-wide"
        )

        kubeconfig = service_account_kubeconfig(kube_cluster, namespace, sa, tmp_path / "sa.yaml")
        whoami = kube_cluster.kubectl(
            "auth", "whoami", "--kubeconfig", str(kubeconfig), "-o", "json"
        )
        assert json.loads(whoami.stdout)["status"]["userInfo"]["username"] == identity

        monkeypatch.setenv("KUBECONFIG", str(kubeconfig))  # read by the operator's login
        monkeypatch.setenv("SSO_OPERATOR_BACKOFF", "1")
        monkeypatch.setenv("SSO_OPERATOR_WATCH_TIMEOUT", "10")
        settings = kopf.OperatorSettings()
        args = ["run", "--standalone", "--namespace", namespace, "--verbose"]
        with KopfRunner(
            [*args, "-m", "sso_operator.handlers"], timeout=60, settings=settings
        ) as runner:
            kube_cluster.kubectl(
                "apply",
                "--server-side",
                "-n",
                namespace,
                "-f",
                str(MANIFESTS / "ssoinstance-minimal.yaml"),
            )
            obj = wait_for(
                lambda: get_or_none(kube_cluster, "ssoinstance", "sso", namespace),
                lambda o: (
                    o is not None
                    and o.get("status", {}).get("phase") in ("Provisioning", "Ready")
                    and all(
                        c["status"] == "True"
                        for c in o["status"]["conditions"]
                        if c["type"] in ("DatabaseReady", "CacheReady", "ServiceReady")
                    )
                ),
                "SSOInstance sso to be provisioned",
            )
            assert obj["status"]["observedGeneration"] == 1
            events = kube_cluster.get_json(
                "events", "-n", namespace, "--field-selector", "involvedObject.name=sso"
            )["items"]
            assert any(e["reason"] == "DeploymentCreated" for e in events)
            kube_cluster.kubectl("delete", "ssoinstance", "sso", "-n", namespace)
        assert runner.exit_code == 0 and runner.exception is None
        # No HTTP 403 anywhere in the operator's output.
        assert not HTTP_403.search(runner.output), runner.output
        assert "Forbidden" not in runner.output, runner.output
