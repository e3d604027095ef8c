"""Backups of an SSOInstance's database: the volume, the scripts, and the two CronJobs.

Why this module exists: backups and restore tests are plain Kubernetes objects
(a PVC, a ConfigMap with ``backup.sh`` and ``restore_test.sh``, two CronJobs)
whose exact shape decides whether backups are safe: ``concurrencyPolicy:
Forbid`` so runs never overlap, credentials only through ``secretKeyRef``, the
dump taken from a read replica when there is one, results reported through the
termination message (``FallbackToLogsOnError``), and a backup volume *without*
an ownerReference, so deleting the instance never deletes its backups. Pure
builders (spec in, manifests out) keep all of that reviewable in golden files.

The scripts run in the PostgreSQL image (bash, GNU coreutils, pg_dump,
pg_restore, initdb, pg_ctl), as its ``postgres`` user (uid 999).
"""

from __future__ import annotations

from importlib import resources as package_files
from typing import Any

from sso_operator import names
from sso_operator.resources.common import (
    COMPONENT_BACKUP,
    POSTGRES_UID,
    Owner,
    container_security_context,
    labels,
    metadata,
    pod_security_context,
    secret_env,
)
from sso_operator.spec import SSOInstanceSpec

COMPONENT_RESTORE_TEST = "restore-test"
BACKUP_SCRIPT = "backup.sh"
RESTORE_TEST_SCRIPT = "restore_test.sh"
BACKUP_DIR = "/backups"
SCRATCH_DIR = "/scratch"
SCRIPTS_DIR = "/scripts"
DEFAULT_POSTGRES_IMAGE = "postgres:17"
POSTGRES_PORT = 5432
#: A backup or restore test still running after this long is stopped and counts as failed.
JOB_DEADLINE_SECONDS = 6 * 3600
#: Finished Jobs kept by each CronJob: the operator reads results from them.
HISTORY_LIMIT = 3
#: A run that could not start within this long after its schedule is skipped.
STARTING_DEADLINE_SECONDS = 3600
_JOB_RESOURCES = {"requests": {"cpu": "50m", "memory": "128Mi"}}


def script_text(name: str) -> str:
    """The text of a script shipped as package data in ``sso_operator/scripts``."""
    return (package_files.files("sso_operator") / "scripts" / name).read_text(encoding="utf-8")


def postgres_image(spec: SSOInstanceSpec) -> str:
    """The image the jobs run: the managed database's (same major version), else PostgreSQL 17."""
    managed = spec.database.managed
    return managed.image_or_default if managed is not None else DEFAULT_POSTGRES_IMAGE


def database_env(spec: SSOInstanceSpec, name: str) -> list[dict[str, Any]]:
    """Where the dump is taken from; every credential comes from a Secret reference.

    Managed: the read-only Service when there are replicas (a dump is a long
    read), the primary otherwise. External: the replica URL when configured,
    else the primary URL, from the user's Secret.
    """
    external = spec.database.external
    if external is not None:
        ref = external.secret_ref
        return [secret_env("DATABASE_URL", ref.name, ref.replica_key or ref.primary_key)]
    managed = spec.database.managed
    replicas = managed is not None and managed.instances > 1
    host = names.database_ro_service(name) if replicas else names.database_rw_service(name)
    credentials = names.database_credentials_secret(name)
    return [
        {"name": "PGHOST", "value": host},
        {"name": "PGPORT", "value": str(POSTGRES_PORT)},
        secret_env("PGUSER", credentials, "username"),
        secret_env("PGPASSWORD", credentials, "password"),
        secret_env("PGDATABASE", credentials, "database"),
    ]


def pvc(spec: SSOInstanceSpec, owner: Owner) -> dict[str, Any]:
    """The backup volume. No ownerReference: backups outlive the instance (delete by hand)."""
    storage = spec.backup.storage
    claim: dict[str, Any] = {
        "accessModes": ["ReadWriteOnce"],
        "resources": {"requests": {"storage": storage.size}},
    }
    if storage.storage_class_name:
        claim["storageClassName"] = storage.storage_class_name
    meta = metadata(owner, names.backup_pvc(owner.name), COMPONENT_BACKUP)
    del meta["ownerReferences"]
    return {"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": meta, "spec": claim}


def scripts_config_map(owner: Owner) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": metadata(owner, names.backup_scripts_config_map(owner.name), COMPONENT_BACKUP),
        "data": {name: script_text(name) for name in (BACKUP_SCRIPT, RESTORE_TEST_SCRIPT)},
    }


def _volume_mounts(backups_read_only: bool) -> list[dict[str, Any]]:
    return [
        {"name": "backups", "mountPath": BACKUP_DIR, "readOnly": backups_read_only},
        {"name": "scripts", "mountPath": SCRIPTS_DIR, "readOnly": True},
        {"name": "tmp", "mountPath": "/tmp"},  # noqa: S108 - an emptyDir, private to the pod
    ]


def _volumes(owner: Owner, backups_read_only: bool) -> list[dict[str, Any]]:
    return [
        {
            "name": "backups",
            "persistentVolumeClaim": {
                "claimName": names.backup_pvc(owner.name),
                "readOnly": backups_read_only,
            },
        },
        {
            "name": "scripts",
            "configMap": {
                "name": names.backup_scripts_config_map(owner.name),
                "defaultMode": 0o555,
            },
        },
        {"name": "tmp", "emptyDir": {}},
    ]


def _cronjob(
    spec: SSOInstanceSpec,
    owner: Owner,
    *,
    name: str,
    component: str,
    schedule: str,
    script: str,
    env: list[dict[str, Any]],
    extra_mounts: list[dict[str, Any]],
    extra_volumes: list[dict[str, Any]],
    backups_read_only: bool,
) -> dict[str, Any]:
    pod_labels = labels(owner, component)
    container = {
        "name": component,
        "image": postgres_image(spec),
        "imagePullPolicy": spec.image_pull_policy,
        "command": ["/bin/bash", f"{SCRIPTS_DIR}/{script}"],
        "env": env,
        "volumeMounts": [*_volume_mounts(backups_read_only), *extra_mounts],
        "resources": _JOB_RESOURCES,
        "securityContext": container_security_context(POSTGRES_UID),
        "terminationMessagePath": "/dev/termination-log",
        # The script writes one JSON line there; if it dies first, the log tail is used.
        "terminationMessagePolicy": "FallbackToLogsOnError",
    }
    pod_spec: dict[str, Any] = {
        "restartPolicy": "Never",
        "automountServiceAccountToken": False,
        "securityContext": pod_security_context(POSTGRES_UID),
        "containers": [container],
        "volumes": [*_volumes(owner, backups_read_only), *extra_volumes],
    }
    if spec.image_pull_secrets:
        pod_spec["imagePullSecrets"] = [{"name": ref.name} for ref in spec.image_pull_secrets]
    return {
        "apiVersion": "batch/v1",
        "kind": "CronJob",
        "metadata": metadata(owner, name, component),
        "spec": {
            "schedule": schedule,
            "timeZone": "Etc/UTC",
            "concurrencyPolicy": "Forbid",
            "startingDeadlineSeconds": STARTING_DEADLINE_SECONDS,
            "successfulJobsHistoryLimit": HISTORY_LIMIT,
            "failedJobsHistoryLimit": HISTORY_LIMIT,
            "suspend": False,
            "jobTemplate": {
                "metadata": {"labels": dict(pod_labels)},
                "spec": {
                    "backoffLimit": 1,
                    "activeDeadlineSeconds": JOB_DEADLINE_SECONDS,
                    "template": {"metadata": {"labels": pod_labels}, "spec": pod_spec},
                },
            },
        },
    }


def backup_cronjob(spec: SSOInstanceSpec, owner: Owner) -> dict[str, Any]:
    """``pg_dump -Fc`` on schedule into the backup volume, then retention."""
    retention = spec.backup.retention
    env = [
        *database_env(spec, owner.name),
        {"name": "PGCONNECT_TIMEOUT", "value": "30"},
        {"name": "PGAPPNAME", "value": "sso-backup"},
        {"name": "BACKUP_DIR", "value": BACKUP_DIR},
        {"name": "RETAIN_DAYS", "value": str(retention.days)},
        {"name": "RETAIN_WEEKS", "value": str(retention.weeks)},
    ]
    return _cronjob(
        spec,
        owner,
        name=names.backup_cronjob(owner.name),
        component=COMPONENT_BACKUP,
        schedule=spec.backup.schedule,
        script=BACKUP_SCRIPT,
        env=env,
        extra_mounts=[],
        extra_volumes=[],
        backups_read_only=False,
    )


def restore_test_cronjob(
    spec: SSOInstanceSpec, owner: Owner, expected_schema_version: str | None = None
) -> dict[str, Any]:
    """Restore the newest backup into a scratch server inside the pod and check it.

    It needs no database access and no credentials: it reads the backup
    volume (read-only) and runs its own PostgreSQL in an emptyDir.
    """
    env = [
        {"name": "BACKUP_DIR", "value": BACKUP_DIR},
        {"name": "SCRATCH_DIR", "value": SCRATCH_DIR},
        {
            "name": "MAX_BACKUP_AGE_SECONDS",
            "value": str(int(spec.restore_test.max_backup_age.total_seconds())),
        },
    ]
    if expected_schema_version:
        env.append({"name": "EXPECTED_SCHEMA_VERSION", "value": expected_schema_version})
    return _cronjob(
        spec,
        owner,
        name=names.restore_test_cronjob(owner.name),
        component=COMPONENT_RESTORE_TEST,
        schedule=spec.restore_test.schedule,
        script=RESTORE_TEST_SCRIPT,
        env=env,
        extra_mounts=[{"name": "scratch", "mountPath": SCRATCH_DIR}],
        extra_volumes=[{"name": "scratch", "emptyDir": {}}],
        backups_read_only=True,
    )


def manifests(
    spec: SSOInstanceSpec, owner: Owner, expected_schema_version: str | None = None
) -> list[dict[str, Any]]:
    """Everything backups need, in apply order; empty when backups are disabled."""
    if not spec.backup.enabled:
        return []
    wanted = [pvc(spec, owner), scripts_config_map(owner), backup_cronjob(spec, owner)]
    if spec.restore_test.enabled:
        wanted.append(restore_test_cronjob(spec, owner, expected_schema_version))
    return wanted
