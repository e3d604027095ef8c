"""Backups without a cluster: the pure builders as golden files, and how results are read.

The second half tests the pure functions of ``sso_operator.handlers.backup``
that turn finished Jobs and their pods' termination messages into
``status.backup`` and ``BackupReady``.

Each case turns a spec into the PVC, the scripts ConfigMap and the two
CronJobs and compares them with ``tests/unit/golden/backup/<case>.yaml``
(the scripts' text is replaced by a placeholder there and compared with the
shipped files separately). Regenerate after an intended change with
``SSO_UPDATE_GOLDEN=1 .venv/bin/python -m pytest tests/unit/test_operator_backup_resources.py``
and review the diff. The properties that make backups safe are also asserted
directly, so a careless golden update cannot drop them.
"""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml

from sso_operator import names
from sso_operator.handlers import backup as handlers
from sso_operator.handlers.timer_status import status_change
from sso_operator.resources import backup
from sso_operator.resources.common import Owner
from sso_operator.spec import parse_instance_spec

GOLDEN = Path(__file__).parent / "golden" / "backup"
SCRIPTS = Path(backup.__file__).resolve().parents[1] / "scripts"
OWNER = Owner(name="sso", namespace="team-a", uid="0b6c2a4e-1111-2222-3333-444455556666")

CASES: dict[str, dict[str, Any]] = {
    "defaults": {},
    "replicas": {
        "imagePullSecrets": [{"name": "registry"}],
        "imagePullPolicy": "Always",
        "database": {"managed": {"instances": 3, "version": "16"}},
        "backup": {
            "schedule": "30 1 * * *",
            "retention": {"days": 14, "weeks": 8},
            "storage": {"size": "100Gi", "storageClassName": "fast"},
        },
        "restoreTest": {"schedule": "@daily", "maxBackupAge": "2h"},
    },
    "external": {
        "database": {
            "external": {"secretRef": {"name": "pg", "primaryKey": "rw", "replicaKey": "ro"}}
        }
    },
    "external-primary-only": {"database": {"external": {"secretRef": {"name": "pg"}}}},
    "no-restore-test": {"restoreTest": {"enabled": False}},
    "disabled": {"backup": {"enabled": False}, "restoreTest": {"enabled": False}},
}


def build(case: str, schema_version: str | None = None) -> list[dict[str, Any]]:
    return backup.manifests(parse_instance_spec(CASES[case]), OWNER, schema_version)


def for_golden(manifests: list[dict[str, Any]]) -> str:
    shown = []
    for manifest in manifests:
        if manifest["kind"] == "ConfigMap":
            manifest = {**manifest, "data": {k: f"<contents of {k}>" for k in manifest["data"]}}
        shown.append(manifest)
    return yaml.safe_dump_all(shown, sort_keys=True, width=100)


@pytest.mark.parametrize("case", sorted(CASES))
def test_golden(case: str) -> None:
    text = for_golden(build(case))
    path = GOLDEN / f"{case}.yaml"
    if os.environ.get("SSO_UPDATE_GOLDEN") == "1":
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    assert path.exists(), f"no golden file {path}: run with SSO_UPDATE_GOLDEN=1"
    assert text == path.read_text(), f"{path} differs; if intended, regenerate (module docstring)"


def by_kind(manifests: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {f"{m['kind']}/{m['metadata']['name']}": m for m in manifests}


def container(cronjob: dict[str, Any]) -> dict[str, Any]:
    pod = cronjob["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    (only,) = pod["containers"]
    result: dict[str, Any] = only
    return result


def env_of(cronjob: dict[str, Any]) -> dict[str, Any]:
    return {item["name"]: item for item in container(cronjob)["env"]}


def test_scripts_config_map_carries_the_shipped_scripts_byte_for_byte() -> None:
    objects = by_kind(build("defaults"))
    data = objects[f"ConfigMap/{names.backup_scripts_config_map('sso')}"]["data"]
    for name in ("backup.sh", "restore_test.sh"):
        assert data[name] == (SCRIPTS / name).read_text()


@pytest.mark.parametrize("case", ["defaults", "replicas", "external"])
def test_cronjobs_never_overlap_and_report_through_the_termination_message(case: str) -> None:
    objects = by_kind(build(case))
    for name in (names.backup_cronjob("sso"), names.restore_test_cronjob("sso")):
        cronjob = objects[f"CronJob/{name}"]
        assert cronjob["spec"]["concurrencyPolicy"] == "Forbid"
        assert cronjob["metadata"]["ownerReferences"][0]["uid"] == OWNER.uid
        box = container(cronjob)
        assert box["terminationMessagePolicy"] == "FallbackToLogsOnError"
        assert box["securityContext"]["runAsNonRoot"] is True
        assert box["securityContext"]["readOnlyRootFilesystem"] is True


@pytest.mark.parametrize("case", sorted(set(CASES) - {"disabled"}))
def test_credentials_only_through_secret_references(case: str) -> None:
    text = for_golden(build(case))  # the manifests, without the scripts' text
    for word in ("password=", "postgresql://", "PGPASSWORD=", "@sso-db"):
        assert word not in text
    cronjob = by_kind(build(case))[f"CronJob/{names.backup_cronjob('sso')}"]
    env = env_of(cronjob)
    for secret_var in ("PGUSER", "PGPASSWORD", "PGDATABASE", "DATABASE_URL"):
        if secret_var in env:
            assert "value" not in env[secret_var]
            assert "secretKeyRef" in env[secret_var]["valueFrom"]


def test_dump_source_is_the_replica_when_there_is_one() -> None:
    single = env_of(by_kind(build("defaults"))["CronJob/sso-backup"])
    assert single["PGHOST"]["value"] == names.database_rw_service("sso")
    assert single["PGPASSWORD"]["valueFrom"]["secretKeyRef"] == {
        "name": names.database_credentials_secret("sso"),
        "key": "password",
    }
    replicas = env_of(by_kind(build("replicas"))["CronJob/sso-backup"])
    assert replicas["PGHOST"]["value"] == names.database_ro_service("sso")
    external = env_of(by_kind(build("external"))["CronJob/sso-backup"])
    assert external["DATABASE_URL"]["valueFrom"]["secretKeyRef"] == {"name": "pg", "key": "ro"}
    primary = env_of(by_kind(build("external-primary-only"))["CronJob/sso-backup"])
    assert primary["DATABASE_URL"]["valueFrom"]["secretKeyRef"] == {"name": "pg", "key": "url"}


def test_backup_volume_outlives_the_instance() -> None:
    claim = by_kind(build("defaults"))[f"PersistentVolumeClaim/{names.backup_pvc('sso')}"]
    assert "ownerReferences" not in claim["metadata"]
    assert claim["spec"]["resources"]["requests"]["storage"] == "20Gi"


def test_pods_are_labelled_for_the_database_network_policy() -> None:
    objects = by_kind(build("defaults"))
    backup_pod = objects["CronJob/sso-backup"]["spec"]["jobTemplate"]["spec"]["template"]
    assert backup_pod["metadata"]["labels"]["app.kubernetes.io/component"] == "backup"
    # The restore test needs no database access: it does not get the label.
    restore_pod = objects["CronJob/sso-restore-test"]["spec"]["jobTemplate"]["spec"]["template"]
    assert restore_pod["metadata"]["labels"]["app.kubernetes.io/component"] == "restore-test"
    mounts = {m["name"]: m for m in container(objects["CronJob/sso-restore-test"])["volumeMounts"]}
    assert mounts["backups"]["readOnly"] is True and "scratch" in mounts


def test_spec_values_reach_the_scripts() -> None:
    objects = by_kind(build("replicas", schema_version="0005_admin"))
    backup_env = env_of(objects["CronJob/sso-backup"])
    assert (backup_env["RETAIN_DAYS"]["value"], backup_env["RETAIN_WEEKS"]["value"]) == ("14", "8")
    restore = objects["CronJob/sso-restore-test"]
    restore_env = env_of(restore)
    assert restore_env["MAX_BACKUP_AGE_SECONDS"]["value"] == "7200"
    assert restore_env["EXPECTED_SCHEMA_VERSION"]["value"] == "0005_admin"
    assert restore["spec"]["schedule"] == "@daily"
    assert container(restore)["image"] == "postgres:16"


def test_disabled_builds_nothing_and_no_restore_test_only_drops_its_cronjob() -> None:
    assert build("disabled") == []
    kinds = sorted(by_kind(build("no-restore-test")))
    assert kinds == [
        "ConfigMap/sso-backup-scripts",
        "CronJob/sso-backup",
        "PersistentVolumeClaim/sso-backups",
    ]


# ------------------------------------------ results: Jobs and termination messages


def job(name: str, result: str | None, finished: str = "2026-11-27T03:00:10Z") -> dict[str, Any]:
    status: dict[str, Any] = {"startTime": "2026-11-27T03:00:00Z"}
    if result == "Complete":
        status["completionTime"] = finished
    if result:
        status["conditions"] = [{"type": result, "status": "True", "lastTransitionTime": finished}]
    return {"metadata": {"name": name}, "status": status}


def pod(message: str | None) -> dict[str, Any]:
    terminated: dict[str, Any] = {"exitCode": 0}
    if message is not None:
        terminated["message"] = message
    return {
        "metadata": {"name": "p", "creationTimestamp": "2026-11-27T03:00:00Z"},
        "status": {"containerStatuses": [{"name": "backup", "state": {"terminated": terminated}}]},
    }


OK_LINE = json.dumps(
    {
        "kind": "backup",
        "result": "Succeeded",
        "file": "sso-x.dump",
        "sizeBytes": 2048,
        "finishedAt": "2026-11-27T03:00:09Z",
    }
)


def test_a_running_job_is_not_reported() -> None:
    assert handlers.job_report(job("j", None), [pod(None)]) is None


def test_termination_message_json_and_log_tail_fallback() -> None:
    report = handlers.job_report(job("j", "Complete"), [pod("some log\n" + OK_LINE)])
    assert report is not None and report.result == "Succeeded"
    assert report.report is not None and report.report["sizeBytes"] == 2048
    # FallbackToLogsOnError: the script died before writing its line; the log tail is kept.
    failed = handlers.job_report(job("j", "Failed"), [pod("pg_dump: error: connection refused")])
    assert failed is not None and failed.report is None
    status = handlers.backup_status({}, [failed], [])
    assert status["lastBackupResult"] == "Failed"
    assert "connection refused" in status["lastBackupMessage"]


def test_kwok_completion_without_message_records_size_unknown() -> None:
    report = handlers.job_report(job("j", "Complete"), [pod(None)])
    assert report is not None
    status = handlers.backup_status({}, [report], [])
    assert status["lastBackupSize"] == "unknown" and "lastBackupSizeBytes" not in status
    assert status["lastSuccessfulBackupTime"] == "2026-11-27T03:00:10Z"
    assert status["lastBackupMessage"] == handlers.NO_MESSAGE
    # The kubelet's report arriving later for the same Job replaces "unknown".
    late = handlers.job_report(job("j", "Complete"), [pod(OK_LINE)])
    assert late is not None
    updated = handlers.backup_status(status, [late], [])
    assert (updated["lastBackupSize"], updated["lastBackupFile"]) == ("2.0KiB", "sso-x.dump")
    assert updated["lastSuccessfulBackupTime"] == "2026-11-27T03:00:09Z"


def test_the_last_success_survives_a_later_failure_and_deleted_jobs() -> None:
    ok = handlers.job_report(job("a", "Complete", "2026-11-26T03:00:10Z"), [pod(OK_LINE)])
    bad_line = json.dumps({"kind": "backup", "result": "Failed", "step": "dump", "message": "x"})
    bad = handlers.job_report(job("b", "Failed", "2026-11-27T03:00:10Z"), [pod(bad_line)])
    assert ok is not None and bad is not None
    status = handlers.backup_status({}, [ok, bad], [])
    assert status["lastBackupJob"] == "b" and status["lastBackupMessage"] == "dump: x"
    assert status["lastBackupFile"] == "sso-x.dump"
    # Both Jobs deleted by the CronJob's history limit: nothing is forgotten.
    assert handlers.backup_status(status, [], []) == status


def test_restore_test_report() -> None:
    line = json.dumps(
        {
            "kind": "restore-test",
            "result": "Failed",
            "step": "schema",
            "backup": "sso-x.dump",
            "durationSeconds": 12.5,
            "message": "schema version 0004 differs from 0005",
        }
    )
    report = handlers.job_report(job("r", "Failed"), [pod(line)])
    assert report is not None
    status = handlers.backup_status({}, [], [report])
    test = status["lastRestoreTest"]
    assert test["result"] == "Failed" and test["step"] == "schema"
    assert test["durationSeconds"] == 12.5 and test["backupFile"] == "sso-x.dump"
    assert status["lastRestoreTestResult"] == "Failed"
    spec = parse_instance_spec({})
    now = datetime(2026, 11, 27, 4, tzinfo=UTC)
    created = now - timedelta(hours=1)
    cond = handlers.backup_condition(spec, status, cronjob_created=created, now=now)
    assert (cond.status, cond.reason) == ("False", "RestoreTestFailed")
    assert "schema version 0004" in cond.message
    # Without a report (kwok) the duration comes from the Job's own times.
    quiet = handlers.job_report(job("r2", "Complete"), [pod(None)])
    assert quiet is not None
    assert handlers.backup_status({}, [], [quiet])["lastRestoreTest"]["durationSeconds"] == 10


def test_backup_ready_condition() -> None:
    spec = parse_instance_spec({})
    now = datetime(2026, 11, 27, 12, tzinfo=UTC)

    def check(status: dict[str, Any], created: datetime | None) -> tuple[str, str]:
        cond = handlers.backup_condition(spec, status, cronjob_created=created, now=now)
        return cond.status, cond.reason

    hour = timedelta(hours=1)
    assert check({}, None) == ("False", "Provisioning")
    assert check({}, now - hour) == ("True", "Scheduled")
    assert check({}, now - 27 * hour) == ("False", "BackupOverdue")
    fresh = {"lastSuccessfulBackupTime": "2026-11-27T03:00:00Z", "lastBackupResult": "Succeeded"}
    assert check(fresh, now - 100 * hour) == ("True", "BackupSucceeded")
    stale = {**fresh, "lastSuccessfulBackupTime": "2026-11-25T03:00:00Z"}
    assert check(stale, now - 100 * hour) == ("False", "BackupOverdue")
    assert check({**fresh, "lastBackupResult": "Failed"}, now - hour) == ("False", "BackupFailed")
    off = parse_instance_spec({"backup": {"enabled": False}, "restoreTest": {"enabled": False}})
    cond = handlers.backup_condition(off, {}, cronjob_created=None, now=now)
    assert (cond.status, cond.reason) == ("True", "Disabled")


def test_an_unchanged_status_is_not_written_again() -> None:
    """Timers run every few seconds: only differences become a patch."""
    spec = parse_instance_spec({})
    now = datetime(2026, 11, 27, 4, tzinfo=UTC)
    report = handlers.job_report(job("j", "Complete"), [pod(OK_LINE)])
    assert report is not None
    status = handlers.backup_status({}, [report], [])
    cond = handlers.backup_condition(spec, status, cronjob_created=now, now=now)
    first = status_change({}, "backup", status, cond, 3)
    assert first is not None and first["backup"] == status
    # The condition goes in the same patch as the field it describes, merged into the
    # freshest list (a compare-and-swap against the API server, tests/k8s/test_status_cas.py).
    (written,) = first["conditions"]
    assert (written["type"], written["reason"], written["observedGeneration"]) == (
        "BackupReady",
        "BackupSucceeded",
        3,
    )
    current = {"backup": status, "conditions": [written]}
    assert status_change(current, "backup", status, cond, 3) is None
    # A new generation rewrites only the condition.
    assert set(status_change(current, "backup", status, cond, 4) or {}) == {"conditions"}
    # A field that disappears is deleted (None in a merge patch), not left behind.
    smaller = {k: v for k, v in status.items() if k != "lastBackupFile"}
    third = status_change(current, "backup", smaller, cond, 3)
    assert third is not None and set(third) == {"backup"}
    assert third["backup"]["lastBackupFile"] is None
