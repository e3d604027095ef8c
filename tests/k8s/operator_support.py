"""Helpers the operator tests under tests/k8s share: run the operator, wait, read objects.

Why this exists: every operator test needs the same few things — the real
operator watching the test's namespace (in-process with
``kopf.testing.KopfRunner``, or as a child process ``python -m sso_operator``
that a test can SIGKILL), a poll-until helper, a ``kubectl get`` that answers
None for a missing object, and the SSOInstance checks several test modules
make. They live here once, so test modules import from a support module
rather than from one another.
"""

from __future__ import annotations

import base64
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import kopf
import pytest
from kopf.testing import KopfRunner

REPO = Path(__file__).resolve().parents[2]
MANIFESTS = REPO / "e2e" / "manifests"
SSOINSTANCE_CRD = REPO / "crds" / "sso.dev_ssoinstances.yaml"
CLIENTAPP_CRD = REPO / "crds" / "sso.dev_clientapps.yaml"
#: How long a test waits for the operator to converge (the machine may be loaded).
WAIT_S = 90.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def wait_for(
    get: Callable[[], Any], accept: Callable[[Any], bool], what: str, timeout: float = WAIT_S
) -> Any:
    """Poll ``get`` until ``accept`` takes its value; fail with the last value seen."""
    deadline = time.monotonic() + timeout
    value = None
    while time.monotonic() < deadline:
        value = get()
        if accept(value):
            return value
        time.sleep(0.3)
    raise AssertionError(f"timed out waiting for {what}; last value: {json.dumps(value)[:3000]}")


def get_or_none(kube: Any, kind: str, name: str, namespace: str) -> Any:
    """``kubectl get KIND NAME -o json``, parsed; None when it does not exist."""
    result = kube.kubectl("get", kind, name, "-n", namespace, "-o", "json", check=False)
    return json.loads(result.stdout) if result.returncode == 0 else None


def condition(obj: Mapping[str, Any] | None, type_: str) -> dict[str, Any]:
    """The condition of that type in ``obj``'s status, or {} when there is none."""
    for item in ((obj or {}).get("status") or {}).get("conditions") or []:
        if item["type"] == type_:
            found: dict[str, Any] = item
            return found
    return {}


def apply_crd(kube: Any, path: Path, crd: str) -> None:
    """A reused cluster may hold an older CRD: apply this checkout's and wait until served."""
    kube.kubectl(
        "apply",
        "--server-side",
        "--force-conflicts",
        "--field-manager=sso-e2e-cluster",
        "-f",
        str(path),
    )
    kube.kubectl("wait", "--for=condition=Established", f"crd/{crd}", "--timeout=60s")


@contextmanager
def kopf_operator(
    namespace: str,
    monkeypatch: pytest.MonkeyPatch,
    *args: str,
    env: Mapping[str, str] | None = None,
    check_exit_code: bool = True,
) -> Iterator[KopfRunner]:
    """sso-operator in-process for one namespace; fail the test if it does not exit cleanly.

    ``args`` are extra ``kopf run`` options (``--liveness=…``); ``env`` extra
    ``SSO_OPERATOR_*`` settings.
    """
    settings_env = {
        "SSO_OPERATOR_BACKOFF": "1",
        "SSO_OPERATOR_WATCH_TIMEOUT": "10",
        "SSO_OPERATOR_LOG_FORMAT": "plain",
        **(env or {}),
    }
    for key, value in settings_env.items():
        monkeypatch.setenv(key, value)
    settings = kopf.OperatorSettings()
    settings.execution.default_backoff = 1
    settings.watching.server_timeout = 10
    run = ["run", "--standalone", "--namespace", namespace, "--verbose"]
    with KopfRunner(
        [*run, *args, "-m", "sso_operator.handlers"], timeout=60, settings=settings
    ) as runner:
        yield runner
    if check_exit_code:
        assert runner.exit_code == 0, runner.output[-5000:]
    assert runner.exception is None, runner.output[-5000:]


class Operator:
    """``python -m sso_operator`` for one namespace, as a child process (so it can be killed)."""

    def __init__(self, kube_cluster: Any, namespace: str, log: Path) -> None:
        self.kube_cluster = kube_cluster
        self.namespace = namespace
        self.log = log
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0

    def start(self) -> None:
        env = {
            **os.environ,
            "KUBECONFIG": self.kube_cluster.kubeconfig,
            "SSO_OPERATOR_RESYNC": "2",
            "SSO_OPERATOR_BACKOFF": "1",
            "SSO_OPERATOR_WATCH_TIMEOUT": "10",
            "SSO_OPERATOR_LOG_FORMAT": "plain",
        }
        handle = self.log.open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "sso_operator", "-n", self.namespace, "--liveness", "off"],
            stdout=handle,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=REPO,
        )
        handle.close()
        self.starts += 1

    def kill(self) -> None:
        """SIGKILL: no cleanup, as a crashed pod."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(30)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)

    def output(self) -> str:
        return self.log.read_text(errors="replace")


@contextmanager
def running_operator(kube_cluster: Any, namespace: str, tmp_path: Path) -> Iterator[Operator]:
    """Start the operator; at the end delete every SSOInstance while it still runs."""
    operator = Operator(kube_cluster, namespace, tmp_path / "operator.log")
    operator.start()
    try:
        yield operator
        if operator.proc is None or operator.proc.poll() is not None:
            operator.start()
        kube_cluster.kubectl("delete", "ssoinstances", "--all", "-n", namespace, timeout=120)
    finally:
        operator.stop()
    assert "Traceback" not in operator.output(), operator.output()[-5000:]


# ------------------------------------------------------------ SSOInstance checks

OWN_CONDITIONS = ("DatabaseReady", "CacheReady", "ServiceReady", "MigrationsReady")
#: Components of the children that the backup and key handlers create (not checked here).
FOREIGN_COMPONENTS = ("backup", "restore-test", "signing-keys")
CHILD_KINDS = (
    "deployments",
    "statefulsets",
    "services",
    "secrets",
    "configmaps",
    "jobs",
    "poddisruptionbudgets",
    "horizontalpodautoscalers",
    "networkpolicies",
)
#: The children of ``e2e/manifests/ssoinstance-minimal.yaml`` (without the foreign ones).
EXPECTED_MINIMAL = {
    "ConfigMap": ["sso-config", "sso-db-init"],
    "Deployment": ["sso", "sso-redis"],
    "Job": ["sso-migrate-d0e2064910"],
    "NetworkPolicy": ["sso-cache", "sso-database", "sso-server"],
    "PodDisruptionBudget": ["sso"],
    "Secret": [
        "sso-admin-token",
        "sso-data-key",
        "sso-db-credentials",
        "sso-db-replication",
        "sso-redis",
    ],
    "Service": ["sso", "sso-admin", "sso-db-primary", "sso-db-ro", "sso-db-rw", "sso-redis"],
    "StatefulSet": ["sso-db-primary"],
}


@pytest.fixture(scope="module", autouse=True)
def current_crd(kube_cluster: Any) -> None:
    """The cluster may have been started with an older CRD: apply this checkout's.

    Autouse in every test module that imports it (``from operator_support import current_crd``).
    """
    apply_crd(kube_cluster, SSOINSTANCE_CRD, "ssoinstances.sso.dev")


def own_conditions_true(obj: Any, generation: int | None = None) -> bool:
    if obj is None:
        return False
    status = obj.get("status") or {}
    if generation is not None and status.get("observedGeneration") != generation:
        return False
    return all(condition(obj, t).get("status") == "True" for t in OWN_CONDITIONS)


def mark_foreign_conditions_ready(kube_cluster: Any, name: str, namespace: str) -> None:
    """Write KeysReady/BackupReady as the key and backup handlers would (if they did not)."""
    obj = get_or_none(kube_cluster, "ssoinstance", name, namespace)
    conditions = list(obj["status"].get("conditions") or [])
    types = {c["type"] for c in conditions}
    for type_ in ("KeysReady", "BackupReady"):
        if type_ not in types:
            conditions.append(
                {
                    "type": type_,
                    "status": "True",
                    "reason": "SetByTest",
                    "message": "written by the test in place of its handler",
                    "lastTransitionTime": "2026-01-01T00:00:00Z",
                }
            )
    patch_instance_status(kube_cluster, name, namespace, {"conditions": conditions})


def patch_instance_status(kube: Any, name: str, namespace: str, status: dict[str, Any]) -> None:
    """Merge `status` into an SSOInstance's status subresource (a test writing what a
    handler would)."""
    kube.kubectl(
        "patch",
        "ssoinstance",
        name,
        "-n",
        namespace,
        "--subresource=status",
        "--type=merge",
        "-p",
        json.dumps({"status": status}),
    )


def children(kube_cluster: Any, namespace: str, instance: str) -> dict[str, list[str]]:
    """Names of the instance's children, by kind (selected by the instance label)."""
    found = kube_cluster.get_json(
        ",".join(CHILD_KINDS), "-n", namespace, "-l", f"app.kubernetes.io/instance={instance}"
    )
    result: dict[str, list[str]] = {}
    for item in found["items"]:
        component = item["metadata"]["labels"].get("app.kubernetes.io/component")
        if (
            component in FOREIGN_COMPONENTS
            or item["metadata"]["name"] == f"{instance}-signing-keys"
        ):
            continue  # the key and backup handlers' children
        result.setdefault(item["kind"], []).append(item["metadata"]["name"])
    return {kind: sorted(names) for kind, names in result.items()}


def secret_value(kube_cluster: Any, namespace: str, name: str, key: str) -> str:
    secret = kube_cluster.get_json("secret", name, "-n", namespace)
    return base64.b64decode(secret["data"][key]).decode()


def events(kube_cluster: Any, namespace: str, name: str) -> list[str]:
    items = kube_cluster.get_json(
        "events", "-n", namespace, "--field-selector", f"involvedObject.name={name}"
    )["items"]
    return [item["reason"] for item in items]


def apply_instance(kube_cluster: Any, namespace: str, manifest: str) -> None:
    kube_cluster.kubectl("apply", "--server-side", "-n", namespace, "-f", "-", input=manifest)
