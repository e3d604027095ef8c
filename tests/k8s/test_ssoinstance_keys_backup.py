"""Signing keys, backups and restore tests of an SSOInstance against a real apiserver.

Two kinds of tests. With the operator running (``kopf.testing.KopfRunner``):
the key-set Secret appears and loads with the service's own loader, the
backup objects are created as built, and a Job created from each CronJob's
template (``kubectl create job --from=cronjob/...``) completes under kwok and
is recorded in ``status.backup``. kwok runs no containers, so there is no
termination message; one test patches a finished pod's status to carry the
JSON line the script would have written: that is a simulation of the kubelet,
and says so.

Without the operator process, the key reconciler is driven directly with a
fixed clock against the real apiserver, to crash it right after the Secret
write and to run two rotations at once: afterwards exactly one key is active
and the set is consistent.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import random  # noqa: TID251 - reproducible kill times, nothing secret
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import kopf
import operator_support as support
import pytest
from operator_support import condition, get_or_none, kopf_operator

from sso.security.keyset import KeySet
from sso_operator import keys as operator_keys
from sso_operator import kube
from sso_operator.handlers import keys as key_handlers
from sso_operator.keys import KeyEntry
from sso_operator.spec import parse_instance_spec


def wait_for(get: Callable[[], Any], accept: Callable[[Any], bool], what: str) -> Any:
    """:func:`operator_support.wait_for` for a value that must exist first (None: not yet)."""
    return support.wait_for(get, lambda value: value is not None and accept(value), what)


def events(kube_cluster: Any, namespace: str) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = kube_cluster.get_json("events", "-n", namespace)["items"]
    return items


def mount_secret(secret: dict[str, Any], directory: Path) -> Path:
    """Lay the Secret out as the kubelet mounts it: one file per data key."""
    directory.mkdir(mode=0o700)
    for name, value in secret["data"].items():
        (directory / name).write_bytes(base64.b64decode(value))
    return directory


INSTANCE = """
apiVersion: sso.dev/v1alpha1
kind: SSOInstance
metadata:
  name: sso
spec:
  signing: {rotationInterval: 720h, overlap: 24h}
  backup: {schedule: "0 3 * * *", retention: {days: 3, weeks: 2}}
  restoreTest: {schedule: "0 5 * * 0", maxBackupAge: 26h}
"""


def test_keys_and_backups_through_the_operator(
    kube_cluster: Any, namespace: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    with kopf_operator(
        namespace, monkeypatch, env={"SSO_OPERATOR_LIVENESS": "off"}, check_exit_code=False
    ):
        kube_cluster.apply(INSTANCE, namespace)

        # ---- signing keys
        obj = wait_for(
            lambda: get_or_none(kube_cluster, "ssoi", "sso", namespace),
            lambda o: condition(o, "KeysReady").get("status") == "True",
            "KeysReady",
        )
        keys_status = obj["status"]["keys"]
        assert keys_status["secretName"] == "sso-signing-keys"
        assert keys_status["algorithm"] == "RS256"
        secret = get_or_none(kube_cluster, "secret", "sso-signing-keys", namespace)
        assert secret["metadata"]["ownerReferences"][0]["uid"] == obj["metadata"]["uid"]
        keyset = KeySet.load(mount_secret(secret, tmp_path / "keys"))  # the service's loader
        assert keyset.active.kid == keys_status["activeKeyId"]
        assert keyset.next is not None and keyset.next.kid == keys_status["nextKeyId"]
        next_rotation = datetime.fromisoformat(keys_status["nextRotationTime"])
        last_rotation = datetime.fromisoformat(keys_status["lastRotationTime"])
        assert next_rotation - last_rotation == timedelta(hours=720)
        assert "next rotation at" in condition(obj, "KeysReady")["message"]
        key_events = [e["reason"] for e in events(kube_cluster, namespace)]
        assert "KeyCreated" in key_events

        # ---- backup objects, as built
        cronjob = get_or_none(kube_cluster, "cronjob", "sso-backup", namespace)
        assert cronjob["spec"]["concurrencyPolicy"] == "Forbid"
        assert cronjob["spec"]["schedule"] == "0 3 * * *"
        assert get_or_none(kube_cluster, "cronjob", "sso-restore-test", namespace) is not None
        claim = get_or_none(kube_cluster, "pvc", "sso-backups", namespace)
        assert "ownerReferences" not in claim["metadata"]  # backups outlive the instance
        scripts = get_or_none(kube_cluster, "configmap", "sso-backup-scripts", namespace)
        assert sorted(scripts["data"]) == ["backup.sh", "restore_test.sh"]
        obj = wait_for(
            lambda: get_or_none(kube_cluster, "ssoi", "sso", namespace),
            lambda o: condition(o, "BackupReady").get("reason") == "Scheduled",
            "BackupReady Scheduled",
        )
        assert condition(obj, "BackupReady")["status"] == "True"

        # ---- a backup run, as `kubectl create job --from=cronjob/...` starts one
        kube_cluster.kubectl(
            "create", "job", "manual-1", "--from=cronjob/sso-backup", "-n", namespace
        )
        obj = wait_for(
            lambda: get_or_none(kube_cluster, "ssoi", "sso", namespace),
            lambda o: (o["status"].get("backup") or {}).get("lastBackupJob") == "manual-1",
            "the backup Job recorded",
        )
        backup = obj["status"]["backup"]
        assert backup["lastBackupResult"] == "Succeeded"
        assert backup["lastBackupSize"] == "unknown"  # kwok: no termination message
        assert "no kubelet" in backup["lastBackupMessage"]
        assert backup["lastSuccessfulBackupTime"]
        wait_for(
            lambda: get_or_none(kube_cluster, "ssoi", "sso", namespace),
            lambda o: condition(o, "BackupReady").get("reason") == "BackupSucceeded",
            "BackupReady BackupSucceeded",
        )
        assert any(
            e["reason"] == "BackupSucceeded" and "manual-1" in e["message"]
            for e in events(kube_cluster, namespace)
        )

        # ---- a run with a result: SIMULATED KUBELET. kwok completes the pod without
        # running it; we write the termination message the script would have left.
        kube_cluster.kubectl(
            "create", "job", "manual-2", "--from=cronjob/sso-backup", "-n", namespace
        )
        pod = wait_for(
            lambda: next(
                iter(
                    kube_cluster.get_json(
                        "pods", "-n", namespace, "-l", "batch.kubernetes.io/job-name=manual-2"
                    )["items"]
                ),
                None,
            ),
            lambda p: p["status"].get("phase") == "Succeeded",
            "the manual-2 pod to complete",
        )
        report = {
            "kind": "backup",
            "result": "Succeeded",
            "file": "sso-20261127T030000Z.dump",
            "sizeBytes": 1572864,
            "finishedAt": "2026-11-27T03:00:09Z",
        }
        statuses = pod["status"]["containerStatuses"]
        statuses[0]["state"]["terminated"]["message"] = json.dumps(report)
        kube_cluster.kubectl(
            "patch",
            "pod",
            pod["metadata"]["name"],
            "-n",
            namespace,
            "--subresource=status",
            "--type=merge",
            "-p",
            json.dumps({"status": {"containerStatuses": statuses}}),
        )
        obj = wait_for(
            lambda: get_or_none(kube_cluster, "ssoi", "sso", namespace),
            lambda o: (o["status"].get("backup") or {}).get("lastBackupFile") == report["file"],
            "the reported backup recorded",
        )
        backup = obj["status"]["backup"]
        assert backup["lastBackupSize"] == "1.5MiB" and backup["lastBackupSizeBytes"] == 1572864
        assert backup["lastBackupJob"] == "manual-2"

        # ---- a restore test run (kwok: completes, no report)
        kube_cluster.kubectl(
            "create", "job", "restore-1", "--from=cronjob/sso-restore-test", "-n", namespace
        )
        obj = wait_for(
            lambda: get_or_none(kube_cluster, "ssoi", "sso", namespace),
            lambda o: (
                ((o["status"].get("backup") or {}).get("lastRestoreTest") or {}).get("job")
                == "restore-1"
            ),
            "the restore test recorded",
        )
        test = obj["status"]["backup"]["lastRestoreTest"]
        assert test["result"] == "Succeeded" and "no kubelet" in test["message"]
        assert obj["status"]["backup"]["lastRestoreTestResult"] == "Succeeded"

        # ---- switching backups off removes the CronJobs, keeps the volume
        kube_cluster.kubectl(
            "patch",
            "ssoi",
            "sso",
            "-n",
            namespace,
            "--type=merge",
            "-p",
            '{"spec":{"backup":{"enabled":false},"restoreTest":{"enabled":false}}}',
        )
        wait_for(
            lambda: get_or_none(kube_cluster, "ssoi", "sso", namespace),
            lambda o: condition(o, "BackupReady").get("reason") == "Disabled",
            "BackupReady Disabled",
        )
        assert get_or_none(kube_cluster, "cronjob", "sso-backup", namespace) is None
        assert get_or_none(kube_cluster, "cronjob", "sso-restore-test", namespace) is None
        assert get_or_none(kube_cluster, "pvc", "sso-backups", namespace) is not None

        kube_cluster.kubectl("delete", "ssoi", "sso", "-n", namespace, "--wait=false")
        wait_for(
            lambda: {"gone": get_or_none(kube_cluster, "ssoi", "sso", namespace) is None},
            lambda v: v["gone"],
            "the instance deleted",
        )


# ------------------------------------------------------- crash-safe rotation


class Crash(Exception):
    """Stands for the operator process dying at this point."""


def crash() -> None:
    raise Crash


def active_count(secret: dict[str, Any]) -> tuple[int, list[dict[str, Any]]]:
    document = json.loads(base64.b64decode(secret["data"]["keyset.json"]))
    keys: list[dict[str, Any]] = document["keys"]
    return sum(k["state"] == "active" for k in keys), keys


def test_rotation_survives_a_crash_after_the_secret_write_and_concurrent_runs(
    kube_cluster: Any, namespace: str, tmp_path: Path
) -> None:
    kube_cluster.apply(INSTANCE, namespace)
    body = get_or_none(kube_cluster, "ssoi", "sso", namespace)
    spec = parse_instance_spec(body["spec"])
    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    due = t0 + timedelta(days=31)

    async def scenario() -> list[Any]:
        kube._state.pop("session", None)  # a session of another test's event loop
        try:
            first = await key_handlers.reconcile_keys(body, spec, now=t0)
            with pytest.raises(Crash):
                await key_handlers.reconcile_keys(body, spec, now=due, after_write=crash)
            restarted = await key_handlers.reconcile_keys(body, spec, now=due)
            # Two runs at once (a change handler and the timer), a month later.
            later = due + timedelta(days=31)
            both = await asyncio.gather(
                key_handlers.reconcile_keys(body, spec, now=later),
                key_handlers.reconcile_keys(body, spec, now=later),
                return_exceptions=True,
            )
            again = await key_handlers.reconcile_keys(body, spec, now=later)
            return [first, restarted, both, again]
        finally:
            session = kube._state.pop("session", None)
            if session is not None:
                await session.close()

    first, restarted, both, again = asyncio.run(scenario())
    assert first.wrote and first.plan.activated
    # After the crash the rotation is already in the Secret: the restart only observes it.
    assert not restarted.wrote
    assert restarted.plan.active.kid == first.plan.next.kid
    assert [k.kid for k in restarted.plan.keys if k.state == "retired"] == [first.plan.active.kid]
    # Of the two concurrent runs at most one wrote; the other lost the race (409) or saw
    # the result; a run after that has nothing left to do.
    wrote = [r for r in both if not isinstance(r, BaseException) and r.wrote]
    lost = [r for r in both if isinstance(r, BaseException)]
    assert len(wrote) == 1, both
    assert all(isinstance(e, kopf.TemporaryError) and "409" in str(e) for e in lost), lost
    assert not again.wrote and again.plan.active.kid == restarted.plan.next.kid

    secret = get_or_none(kube_cluster, "secret", "sso-signing-keys", namespace)
    actives, entries = active_count(secret)
    assert actives == 1
    assert sorted(secret["data"]) == sorted(["keyset.json", *(f"{e['kid']}.pem" for e in entries)])
    keyset = KeySet.load(mount_secret(secret, tmp_path / "keys"))
    assert keyset.active.kid == again.plan.active.kid
    # The key retired at `due` is gone (its retention ended); the one retired now is not.
    assert first.plan.active.kid not in {e["kid"] for e in entries}
    assert restarted.plan.active.kid in {e["kid"] for e in entries}  # retired, published


def test_a_rotation_request_is_carried_out_once(kube_cluster: Any, namespace: str) -> None:
    kube_cluster.apply(INSTANCE, namespace)
    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    body = get_or_none(kube_cluster, "ssoi", "sso", namespace)
    spec = parse_instance_spec(body["spec"])

    async def scenario() -> list[Any]:
        kube._state.pop("session", None)
        try:
            first = await key_handlers.reconcile_keys(body, spec, now=t0)
            kube_cluster.kubectl(
                "annotate", "ssoi", "sso", "-n", namespace, "sso.dev/rotate-signing-key=incident-7"
            )
            requested = get_or_none(kube_cluster, "ssoi", "sso", namespace)
            soon = t0 + timedelta(minutes=5)
            forced = await key_handlers.reconcile_keys(requested, spec, now=soon, after_write=crash)
            return [first, forced]
        except Crash:
            pass
        finally:
            session = kube._state.pop("session", None)
            if session is not None:
                await session.close()
        return []

    # The crash right after the write must not make the request run twice.
    assert asyncio.run(scenario()) == []
    requested = get_or_none(kube_cluster, "ssoi", "sso", namespace)

    async def rerun() -> Any:
        kube._state.pop("session", None)
        try:
            return await key_handlers.reconcile_keys(requested, spec, now=t0 + timedelta(minutes=6))
        finally:
            session = kube._state.pop("session", None)
            if session is not None:
                await session.close()

    result = asyncio.run(rerun())
    assert not result.wrote
    secret = get_or_none(kube_cluster, "secret", "sso-signing-keys", namespace)
    assert secret["metadata"]["annotations"]["sso.dev/handled-rotation-request"] == "incident-7"
    actives, entries = active_count(secret)
    assert actives == 1
    assert sorted(e["state"] for e in entries) == ["active", "next", "retired"]


# ----------------------------------------------- chaos: SIGKILL the real operator


def due_secret(namespace: str, now: datetime, tag: str) -> tuple[dict[str, Any], str, str]:
    """A key set whose rotation is overdue: the operator's first run must rotate it."""
    long_ago = now - timedelta(days=40)
    old = KeyEntry(f"old-{tag}", "RS256", "active", long_ago, long_ago)
    upcoming = KeyEntry(f"next-{tag}", "RS256", "next", now - timedelta(days=39))
    entries = (old, upcoming)
    pems = {e.kid: operator_keys.generate_private_key_pem(e.alg) for e in entries}
    manifest = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": "sso-signing-keys", "namespace": namespace},
        "type": "Opaque",
        "data": operator_keys.secret_data(entries, pems),
    }
    return manifest, old.kid, upcoming.kid


class SecretWatcher(threading.Thread):
    """Reads the Secret continuously; records every version it saw."""

    def __init__(self, kube_cluster: Any, namespace: str) -> None:
        super().__init__(daemon=True)
        self.kube_cluster, self.namespace = kube_cluster, namespace
        self.seen: dict[str, list[dict[str, Any]]] = {}
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            secret = get_or_none(self.kube_cluster, "secret", "sso-signing-keys", self.namespace)
            if secret is not None:
                self.seen.setdefault(secret["metadata"]["resourceVersion"], active_count(secret)[1])


def start_operator(kube_cluster: Any, namespace: str, log: Path) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "KUBECONFIG": kube_cluster.kubeconfig,
        "SSO_OPERATOR_BACKOFF": "1",
        "SSO_OPERATOR_WATCH_TIMEOUT": "10",
        "SSO_OPERATOR_LOG_FORMAT": "plain",
    }
    with log.open("ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "sso_operator", "-n", namespace, "--liveness", "off"],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )


def test_sigkill_during_rotation_leaves_one_active_key_and_no_gap(
    kube_cluster: Any, namespace: str, tmp_path: Path
) -> None:
    """N1/N5: kill -9 the operator at random moments around a rotation, restart it.

    Every version of the Secret that ever existed has exactly one active key and
    still publishes the key that was signing before (a retired key is kept for
    its retention); after the restart the rotation is done exactly once.
    """
    kube_cluster.apply(INSTANCE, namespace)
    rng = random.Random(7)
    log = tmp_path / "operator.log"
    outcomes = []
    for round_ in range(6):
        manifest, old_kid, next_kid = due_secret(namespace, datetime.now(UTC), str(round_))
        kube_cluster.kubectl(
            "delete", "secret", "sso-signing-keys", "-n", namespace, "--ignore-not-found"
        )
        kube_cluster.kubectl("create", "-f", "-", input=json.dumps(manifest))
        watcher = SecretWatcher(kube_cluster, namespace)
        watcher.start()
        process = start_operator(kube_cluster, namespace, log)
        time.sleep(rng.uniform(1.5, 5.5))
        process.kill()  # SIGKILL: no cleanup, no status write
        process.wait(timeout=10)
        secret = get_or_none(kube_cluster, "secret", "sso-signing-keys", namespace)
        at_kill = active_count(secret)[1]
        outcomes.append(next(k["kid"] for k in at_kill if k["state"] == "active"))
        process = start_operator(kube_cluster, namespace, log)
        try:
            wait_for(
                lambda: get_or_none(kube_cluster, "ssoi", "sso", namespace),
                lambda o, kid=next_kid: (
                    (o.get("status") or {}).get("keys", {}).get("activeKeyId") == kid
                ),
                f"round {round_}: status shows {next_kid} active",
            )
        finally:
            process.terminate()
            process.wait(timeout=30)
            watcher.stop.set()
            watcher.join()
        final = active_count(get_or_none(kube_cluster, "secret", "sso-signing-keys", namespace))[1]
        states = {k["kid"]: k["state"] for k in final}
        assert states[next_kid] == "active" and states[old_kid] == "retired", states
        assert sorted(states.values()) == ["active", "next", "retired"], states  # rotated once
        for version, entries in watcher.seen.items():
            assert sum(k["state"] == "active" for k in entries) == 1, (version, entries)
            assert old_kid in {k["kid"] for k in entries}, (version, entries)
    sys.stderr.write(f"\n[chaos] active key at the moment of the kill: {outcomes}\n")
    # Clean up with an operator running: the instance carries its finalizer.
    process = start_operator(kube_cluster, namespace, log)
    try:
        kube_cluster.kubectl("delete", "ssoi", "sso", "-n", namespace, "--timeout=60s")
    finally:
        process.terminate()
        process.wait(timeout=30)
