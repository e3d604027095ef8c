"""``spec.database.importFrom``: the spec rules, the import Job, and reading its result.

The Job's command is run here for real, as its container runs it: ``/bin/sh -c``
with the real ``sso import legacy-sqlite --json`` against a small Go-schema
database (``tests/legacy_import/legacy_db.py``) and a migrated SQLite database,
with only the termination-log and result paths moved into the test's directory.
Its output is what the operator's parser is fed. Golden files:
``tests/unit/golden/import/``; regenerate after an intended change with
``SSO_UPDATE_GOLDEN=1 pytest tests/unit/test_operator_import.py``.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import yaml

from sso_operator import conditions, names
from sso_operator.reconcile import readiness
from sso_operator.reconcile.children import (
    FAILED,
    PENDING,
    RUNNING,
    SUCCEEDED,
    ImportState,
    MigrationState,
    Outcome,
)
from sso_operator.resources import common, legacy_import, network, service
from sso_operator.spec import InvalidSpecError, SSOInstanceSpec, parse_instance_spec

REPO = Path(__file__).resolve().parents[2]
GOLDEN = Path(__file__).resolve().parent / "golden" / "import"
OWNER = common.Owner(name="sso", namespace="team-a", uid="00000000-0000-0000-0000-000000000001")
PVC = {"persistentVolumeClaim": {"claimName": "go-sso-data", "path": "data/sso.db"}}
SECRET = {"secret": {"name": "go-sso-db", "key": "sso.db"}}


def legacy_db() -> ModuleType:
    path = REPO / "tests" / "legacy_import" / "legacy_db.py"
    spec = importlib.util.spec_from_file_location("legacy_db_for_operator_tests", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def instance(import_from: dict[str, Any], **extra: Any) -> SSOInstanceSpec:
    return parse_instance_spec({"database": {"managed": {}, "importFrom": import_from}, **extra})


def example() -> SSOInstanceSpec:
    doc = yaml.safe_load((REPO / "e2e" / "manifests" / "ssoinstance-import.yaml").read_text())
    return parse_instance_spec(doc["spec"])


# ------------------------------------------------------------------ the spec


@pytest.mark.parametrize(
    ("import_from", "expected"),
    [
        ({}, "exactly one of database.importFrom.persistentVolumeClaim"),
        ({**PVC, **SECRET}, "exactly one of database.importFrom.persistentVolumeClaim"),
        ({"persistentVolumeClaim": {"claimName": "c", "path": "/abs/sso.db"}}, "relative path"),
        ({"persistentVolumeClaim": {"claimName": "c", "path": "a/../../etc"}}, "relative path"),
        ({"persistentVolumeClaim": {"claimName": "c", "path": "a//b"}}, "relative path"),
        ({"persistentVolumeClaim": {"claimName": "c", "path": "./sso.db"}}, "relative path"),
        ({"persistentVolumeClaim": {"claimName": "Not_DNS", "path": "x"}}, "claimName"),
        ({"persistentVolumeClaim": {"claimName": "c"}}, "path"),
        ({"secret": {"name": "s", "key": "a/b"}}, "secret.key"),
        ({"secret": {"name": "s", "key": ".."}}, "must not be '.' or '..'"),
        ({"secret": {"name": "s", "key": ""}}, "secret.key"),
        ({"secret": {"name": "s"}}, "secret.key"),
    ],
)
def test_invalid_import_from_is_refused(import_from: dict[str, Any], expected: str) -> None:
    with pytest.raises(InvalidSpecError) as error:
        instance(import_from)
    assert expected in str(error.value)


def test_valid_import_from_is_accepted() -> None:
    pvc = instance(PVC).database.import_from
    assert pvc is not None and pvc.persistent_volume_claim is not None
    assert pvc.persistent_volume_claim.path == "data/sso.db"
    secret = example().database.import_from
    assert secret is not None and secret.secret is not None and secret.secret.key == "sso.db"
    assert instance({"persistentVolumeClaim": {"claimName": "c", "path": "sso..db"}})
    assert parse_instance_spec({}).database.import_from is None


def test_source_hash_identifies_the_stanza() -> None:
    a = legacy_import.source_hash(instance(PVC).database.import_from)  # type: ignore[arg-type]
    same = legacy_import.source_hash(instance(PVC).database.import_from)  # type: ignore[arg-type]
    other_path = instance({"persistentVolumeClaim": {"claimName": "go-sso-data", "path": "b.db"}})
    b = legacy_import.source_hash(other_path.database.import_from)  # type: ignore[arg-type]
    c = legacy_import.source_hash(example().database.import_from)  # type: ignore[arg-type]
    assert a == same and len({a, b, c}) == 3
    longest = "x" * names.MAX_INSTANCE_NAME
    assert len(names.legacy_import_job(longest, a)) <= 63  # also the pods' job-name label


# ------------------------------------------------------------------ the Job


@pytest.mark.parametrize(("variant", "spec"), [("secret", example), ("pvc", lambda: instance(PVC))])
def test_golden(variant: str, spec: Any) -> None:
    rendered = yaml.safe_dump(legacy_import.job(spec(), OWNER), sort_keys=True)
    path = GOLDEN / f"ssoinstance-import-{variant}.yaml"
    if os.environ.get("SSO_UPDATE_GOLDEN"):
        path.write_text(rendered)
    assert rendered == path.read_text(), f"{path.name} differs; see the module docstring"


def _container(job: dict[str, Any]) -> dict[str, Any]:
    (container,) = job["spec"]["template"]["spec"]["containers"]
    found: dict[str, Any] = container
    return found


def test_job_gets_the_services_database_url_and_data_key_and_nothing_else_secret() -> None:
    spec = instance(
        SECRET,
        smtp={"host": "smtp.example.com", "from": "sso@example.com", "secretRef": {"name": "mail"}},
    )
    job = legacy_import.job(spec, OWNER)
    deployment = service.deployment(spec, OWNER, image=spec.image, config_checksum="x")
    served = {e["name"]: e for e in _container(deployment)["env"]}
    env = {e["name"]: e for e in _container(job)["env"]}
    assert env["SSO_DATABASE__URL"] == served["SSO_DATABASE__URL"]
    assert env["SSO_DATA_KEY"] == served["SSO_DATA_KEY"]
    assert env["SSO_DATA_KEY"]["valueFrom"]["secretKeyRef"]["name"] == "sso-data-key"
    assert set(env) == {"SSO_DATABASE__URL", "SSO_DATA_KEY", "HOME"}  # no Redis, no SMTP
    assert _container(job)["envFrom"] == _container(deployment)["envFrom"]
    external = instance(
        SECRET,
        database={
            "external": {"secretRef": {"name": "pg", "primaryKey": "u"}},
            "importFrom": SECRET,
        },
    )
    ext_env = {e["name"]: e for e in _container(legacy_import.job(external, OWNER))["env"]}
    assert ext_env["SSO_DATABASE__URL"]["valueFrom"]["secretKeyRef"] == {"name": "pg", "key": "u"}


def test_job_is_hardened_and_mounts_the_file_read_only() -> None:
    for spec in (example(), instance(PVC)):
        job = legacy_import.job(spec, OWNER)
        pod = job["spec"]["template"]["spec"]
        container = _container(job)
        assert container["securityContext"] == common.container_security_context(10001)
        assert pod["securityContext"] == common.pod_security_context(10001)
        assert pod["automountServiceAccountToken"] is False and pod["restartPolicy"] == "Never"
        assert container["terminationMessagePolicy"] == "FallbackToLogsOnError"
        assert job["spec"]["backoffLimit"] <= 2
        mount = next(m for m in container["volumeMounts"] if m["name"] == "legacy")
        assert mount == {"name": "legacy", "mountPath": "/import", "readOnly": True}
        labels = job["spec"]["template"]["metadata"]["labels"]
        assert labels["app.kubernetes.io/component"] == "import"
        assert container["image"] == spec.image
        assert container["command"][:2] == ["/bin/sh", "-c"]
    pvc_pod = legacy_import.job(instance(PVC), OWNER)["spec"]["template"]["spec"]
    volume = next(v for v in pvc_pod["volumes"] if v["name"] == "legacy")
    assert volume["persistentVolumeClaim"] == {"claimName": "go-sso-data", "readOnly": True}
    assert (
        _container(legacy_import.job(instance(PVC), OWNER))["command"][4] == "/import/data/sso.db"
    )
    secret_pod = legacy_import.job(example(), OWNER)["spec"]["template"]["spec"]
    volume = next(v for v in secret_pod["volumes"] if v["name"] == "legacy")
    assert volume["secret"]["items"] == [{"key": "sso.db", "path": "sso.db"}]
    with pytest.raises(ValueError, match="importFrom"):
        legacy_import.job(parse_instance_spec({}), OWNER)


def test_database_network_policy_admits_the_import_pods() -> None:
    policy = network.database(OWNER)
    (rule,) = policy["spec"]["ingress"]
    (peer,) = rule["from"]
    (expression,) = peer["podSelector"]["matchExpressions"]
    job = legacy_import.job(example(), OWNER)
    component = job["spec"]["template"]["metadata"]["labels"]["app.kubernetes.io/component"]
    assert component in expression["values"]


# ------------------------------------------- the command, run as the Job runs it


def run_job_command(
    tmp_path: Path, source: Path, db_url: str, data_key: str
) -> tuple[subprocess.CompletedProcess[str], str]:
    """The Job container's exact command, with its two fixed paths moved into ``tmp_path``."""
    result, log = tmp_path / "import-result.json", tmp_path / "termination-log"
    log.unlink(missing_ok=True)
    command = [
        part.replace(legacy_import.RESULT_FILE, str(result)).replace(
            "/dev/termination-log", str(log)
        )
        for part in _container(legacy_import.job(example(), OWNER))["command"]
    ]
    command[4] = str(source)  # the mounted file's path
    env = {k: v for k, v in os.environ.items() if not k.startswith("SSO_")}
    env.update(
        PATH=f"{REPO / '.venv' / 'bin'}:{env.get('PATH', '')}",
        SSO_DATABASE__URL=db_url,
        SSO_DATA_KEY=data_key,
        SSO_HOME=str(tmp_path),
        HOME=str(tmp_path),
    )
    proc = subprocess.run(
        command, env=env, capture_output=True, text=True, timeout=300, check=False, cwd=tmp_path
    )
    return proc, log.read_text() if log.exists() else ""


@pytest.fixture
def data_key() -> str:
    from sso.security.secretbox import generate_data_key

    return generate_data_key()


def test_real_import_result_is_recorded(tmp_path: Path, sqlite_url: str, data_key: str) -> None:
    db = legacy_db()
    source = db.create(tmp_path / "go-sso.db")
    good = db.hash_go("correct horse battery")
    db.add_users(
        source,
        [
            (1, "alice@example.com", good, True),
            (2, "not-an-address", good, False),
            (3, "Bob@example.com", good, False),
            (4, "bob@example.com", good, False),
            (5, "carol@example.com", "plain-text", False),
        ],
    )
    db.add_apps(source, [(1, "billing", "s3cret-billing"), (2, "", "x")])

    proc, message = run_job_command(tmp_path, source, sqlite_url, data_key)
    assert proc.returncode == 0, proc.stderr
    full = json.loads(proc.stdout.strip().splitlines()[-1])  # the log keeps the whole document
    assert full["format"] == legacy_import.FORMAT and full["skipped"][0]["detail"] is not None
    report = legacy_import.parse_message(message)
    assert report.ok is True and report.document is not None
    fields = legacy_import.result_fields(report)
    assert fields["users"] == {
        "read": 5,
        "imported": 1,
        "unchanged": 0,
        "updated": 0,
        "conflicts": 0,
        "skipped": 4,
    }
    assert fields["apps"]["imported"] == 1 and fields["apps"]["skipped"] == 1
    assert {(e["table"], e["id"], e["reason"]) for e in fields["skipped"]} == {
        ("users", 2, "invalid_email"),
        ("users", 3, "duplicate_email"),
        ("users", 4, "duplicate_email"),
        ("users", 5, "not_bcrypt"),
        ("apps", 2, "invalid_name"),
    }
    assert fields["conflicts"] == [] and fields["truncated"] is False
    assert fields["message"].startswith("users: 1 imported, 0 unchanged")

    # The same Job again (a changed stanza pointing at the same file): nothing new.
    proc, message = run_job_command(tmp_path, source, sqlite_url, data_key)
    assert proc.returncode == 0, proc.stderr
    again = legacy_import.result_fields(legacy_import.parse_message(message))
    assert again["users"]["imported"] == 0 and again["users"]["unchanged"] == 1
    assert again["apps"]["unchanged"] == 1


def test_failed_import_exits_non_zero_with_its_error(
    tmp_path: Path, sqlite_url: str, data_key: str
) -> None:
    proc, message = run_job_command(tmp_path, tmp_path / "missing.db", sqlite_url, data_key)
    assert proc.returncode == 1  # the shell passes the command's status on: the Job fails
    report = legacy_import.parse_message(message)
    assert report.ok is False
    fields = legacy_import.result_fields(report)
    assert "no such file" in fields["message"]


def test_long_report_is_shortened_to_fit_a_termination_message(
    tmp_path: Path, sqlite_url: str, data_key: str
) -> None:
    db = legacy_db()
    source = db.create(tmp_path / "go-sso.db")
    db.add_users(
        source, [(i, f"broken-{i}-" + "x" * 40, "not-a-hash", False) for i in range(1, 401)]
    )
    proc, message = run_job_command(tmp_path, source, sqlite_url, data_key)
    assert proc.returncode == 0, proc.stderr
    assert len(json.loads(proc.stdout.strip().splitlines()[-1])["skipped"]) == 400
    assert 0 < len(message.encode()) <= legacy_import.MESSAGE_LIMIT
    fields = legacy_import.result_fields(legacy_import.parse_message(message))
    assert fields["users"]["skipped"] == 400 and fields["users"]["read"] == 400  # counts complete
    assert len(fields["skipped"]) <= legacy_import.STATUS_LIST_LIMIT
    assert fields["truncated"] is True


def test_no_message_is_recorded_as_no_result() -> None:
    report = legacy_import.parse_message(common.termination_message([]))
    assert report.document is None
    assert legacy_import.result_fields(report)["message"] == legacy_import.NO_RESULT
    # FallbackToLogsOnError: a crash leaves the log tail, kept as the message.
    crash = legacy_import.parse_message("Traceback (most recent call last):\nBoom")
    assert crash.ok is None and "Boom" in legacy_import.result_fields(crash)["message"]
    pods = [
        {
            "metadata": {"creationTimestamp": "2026-01-01T00:00:00Z"},
            "status": {"containerStatuses": [{"state": {"terminated": {"message": "old"}}}]},
        },
        {
            "metadata": {"creationTimestamp": "2026-01-01T00:01:00Z"},
            "status": {"containerStatuses": [{"state": {"terminated": {"message": "new"}}}]},
        },
    ]
    assert common.termination_message(pods) == "new"


# ------------------------------------------------------------ status and gates


def _status(outcome: Outcome, current: dict[str, Any] | None = None) -> dict[str, Any]:
    spec = example()
    return readiness.status(
        spec,
        OWNER,
        readiness.Observed(),
        outcome,
        current=current or {},
        generation=1,
        timestamp="2026-01-01T00:00:00Z",
    )


def _condition(doc: dict[str, Any]) -> dict[str, Any]:
    found = conditions.find(doc["conditions"], conditions.IMPORT_READY)
    assert found is not None
    return dict(found)


def test_import_condition_and_status_follow_the_job() -> None:
    migrated = MigrationState("sso-migrate-x", SUCCEEDED)
    pending = _status(Outcome(migration=migrated, legacy_import=ImportState("j", PENDING, "h")))
    assert _condition(pending)["status"] == "Unknown"
    running = _status(Outcome(migration=migrated, legacy_import=ImportState("j", RUNNING, "h")))
    assert (_condition(running)["status"], _condition(running)["reason"]) == ("False", "Running")
    assert running["import"] == {"phase": RUNNING, "job": "j", "source": "h", "completed": False}

    fields = {"users": {"imported": 2}, "message": "users: 2 imported"}
    done = ImportState("j", SUCCEEDED, "h", fields=fields, finished_at="2026-01-01T00:00:09Z")
    succeeded = _status(Outcome(migration=migrated, legacy_import=done))
    assert _condition(succeeded)["status"] == "True"
    assert succeeded["import"]["completed"] is True
    assert succeeded["import"]["completedAt"] == "2026-01-01T00:00:09Z"
    assert succeeded["import"]["users"] == {"imported": 2}

    failed = ImportState("j", FAILED, "h", "BackoffLimitExceeded", "no such file")
    doc = _status(Outcome(migration=migrated, legacy_import=failed))
    condition = _condition(doc)
    assert (condition["status"], condition["reason"]) == ("False", "ImportFailed")
    assert (
        "BackoffLimitExceeded" in condition["message"] and "delete the Job" in condition["message"]
    )
    assert "not started" in condition["message"]
    assert doc["import"]["completed"] is False and doc["import"]["reason"] == "BackoffLimitExceeded"
    ready = conditions.find(doc["conditions"], conditions.READY)
    assert ready is not None and "ImportReady" in ready["message"]

    # Recorded before: status.import is left as it is; the condition stays True.
    recorded = _status(
        Outcome(migration=migrated, legacy_import=ImportState("j", SUCCEEDED, "h", recorded=True)),
        current={"import": {"message": "users: 2 imported"}},
    )
    assert "import" not in recorded and _condition(recorded)["message"] == "users: 2 imported"


def test_condition_is_dropped_without_import_from() -> None:
    spec = parse_instance_spec({})
    current = {"conditions": [{"type": conditions.IMPORT_READY, "status": "False"}]}
    doc = readiness.status(
        spec, OWNER, readiness.Observed(), Outcome(), current=current, generation=1
    )
    assert conditions.find(doc["conditions"], conditions.IMPORT_READY) is None
    assert "import" not in doc
