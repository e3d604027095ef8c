"""Fixtures for the tests that need a real Kubernetes API server (tests/k8s).

Why this exists: the operator and the manifests are tested against a real control
plane (apiserver, controller-manager with its garbage collector, scheduler, and
kwok playing the kubelets), not against mocks. The session fixture
``kube_cluster`` starts that cluster with ``e2e/cluster.py`` (or reuses one that
is already running, e.g. from ``make cluster-up``, and then leaves it running),
and stops it at the end only if it started it.

Set ``SSO_E2E_KUBECONFIG`` to run the same tests against any other cluster
(kind, a dev cluster): then nothing is started or stopped here.

Every test under tests/k8s is marked ``k8s`` (``pytest -m "not k8s"`` skips them).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]
CLUSTER_PY = REPO / "e2e" / "cluster.py"
BUILD_SCRIPT = REPO / "e2e" / "build-k8s-binaries.sh"
K8S_TESTS = Path(__file__).resolve().parent

# Starting the local cluster takes ~20 s warm; the rest is slack for slow CI.
CLUSTER_UP_TIMEOUT_S = 300


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if K8S_TESTS in item.path.parents:
            item.add_marker(pytest.mark.k8s)


@dataclass(frozen=True)
class KubeCluster:
    """A cluster the tests may use: its kubeconfig and a kubectl helper."""

    kubeconfig: str
    kubectl_path: str
    started_here: bool = False

    def kubectl(
        self,
        *args: str,
        check: bool = True,
        input: str | None = None,
        timeout: float = 120,
    ) -> subprocess.CompletedProcess[str]:
        """Run kubectl against this cluster; with check, a failure shows its output."""
        proc = subprocess.run(
            [self.kubectl_path, *args],
            input=input,
            capture_output=True,
            text=True,
            timeout=timeout,
            env={**os.environ, "KUBECONFIG": self.kubeconfig},
        )
        if check and proc.returncode != 0:
            err = subprocess.CalledProcessError(
                proc.returncode, proc.args, proc.stdout, proc.stderr
            )
            err.add_note(f"kubectl stdout:\n{proc.stdout}\nkubectl stderr:\n{proc.stderr}")
            raise err
        return proc

    def get_json(self, *args: str) -> Any:
        """`kubectl get ARGS -o json`, parsed."""
        return json.loads(self.kubectl("get", *args, "-o", "json").stdout)

    def apply(self, manifest: str, namespace: str | None = None) -> None:
        """`kubectl apply -f -` of a YAML/JSON manifest string."""
        ns = ["--namespace", namespace] if namespace else []
        self.kubectl("apply", *ns, "-f", "-", input=manifest)


def _run_cluster_py(*args: str, timeout: float) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(CLUSTER_PY), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def _built_kubectl() -> str | None:
    try:
        out = subprocess.run(
            ["bash", str(BUILD_SCRIPT), "--print-bin-dir"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None
    path = Path(out) / "kubectl"
    return str(path) if os.access(path, os.X_OK) else None


def _kubeconfig_from_env_output(out: str) -> str:
    for line in out.splitlines():
        if line.startswith("export KUBECONFIG="):
            return line.removeprefix("export KUBECONFIG=").strip()
    raise RuntimeError(f"e2e/cluster.py env printed no KUBECONFIG:\n{out}")


@pytest.fixture(scope="session")
def kube_cluster() -> Iterator[KubeCluster]:
    """The cluster of this test session (see the module docstring)."""
    previous = os.environ.get("KUBECONFIG")
    external = os.environ.get("SSO_E2E_KUBECONFIG")
    if external:
        kubectl = _built_kubectl() or shutil.which("kubectl")
        if kubectl is None:
            pytest.fail("SSO_E2E_KUBECONFIG is set but no kubectl is built or on PATH")
        cluster = KubeCluster(kubeconfig=str(Path(external).resolve()), kubectl_path=kubectl)
    else:
        kubectl = _built_kubectl()
        if kubectl is None:
            pytest.fail(
                "the local Kubernetes binaries are not built: run `make k8s-binaries` "
                "(or set SSO_E2E_KUBECONFIG to use another cluster)"
            )
        running = _run_cluster_py("status", timeout=60).returncode == 0
        if not running:
            t0 = time.monotonic()
            up = _run_cluster_py("up", timeout=CLUSTER_UP_TIMEOUT_S)
            if up.returncode != 0:
                pytest.fail(f"e2e/cluster.py up failed:\n{up.stderr}\n{up.stdout}")
            sys.stderr.write(f"\n[kube_cluster] started in {time.monotonic() - t0:.1f} s\n")
        env = _run_cluster_py("env", timeout=60)
        cluster = KubeCluster(
            kubeconfig=_kubeconfig_from_env_output(env.stdout),
            kubectl_path=kubectl,
            started_here=not running,
        )
    os.environ["KUBECONFIG"] = cluster.kubeconfig
    try:
        yield cluster
    finally:
        if previous is None:
            os.environ.pop("KUBECONFIG", None)
        else:
            os.environ["KUBECONFIG"] = previous
        if cluster.started_here:
            down = _run_cluster_py("down", timeout=120)
            if down.returncode != 0:
                sys.stderr.write(f"e2e/cluster.py down failed:\n{down.stderr}\n")


def _namespace_name(test_name: str) -> str:
    slug = re.sub(r"[^a-z0-9]+", "-", test_name.lower()).strip("-")[:40].strip("-")
    return f"t-{slug}-{uuid.uuid4().hex[:6]}"


@pytest.fixture
def namespace(kube_cluster: KubeCluster, request: pytest.FixtureRequest) -> Iterator[str]:
    """A fresh namespace for one test, deleted afterwards (without waiting)."""
    name = _namespace_name(request.node.name)
    kube_cluster.kubectl("create", "namespace", name)
    # Pods are only admitted once the serviceaccount controller has made the
    # namespace's `default` ServiceAccount; it takes well under a second.
    deadline = time.monotonic() + 30
    while kube_cluster.kubectl(
        "get", "serviceaccount", "default", "-n", name, check=False
    ).returncode:
        if time.monotonic() > deadline:
            pytest.fail(f"no ServiceAccount default in namespace {name} after 30 s")
        time.sleep(0.2)
    try:
        yield name
    finally:
        kube_cluster.kubectl("delete", "namespace", name, "--wait=false", check=False)
