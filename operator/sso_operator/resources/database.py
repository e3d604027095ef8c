"""The managed PostgreSQL: a primary and ``instances - 1`` streaming replicas.

Why this module exists: the database is where a lost write hurts most (a
password change or a revocation rolled back by a failover). The primary runs
the official ``postgres`` image; replicas are cloned with ``pg_basebackup`` in
an init container and follow the primary as hot standbys (``standby.signal``,
``primary_conninfo`` written from the replication Secret at every start, so no
password ever appears in a pod spec). With two or more replicas the primary
commits only when one of them has the WAL (``synchronous_standby_names = 'ANY 1
(...)'``, checklist decision 7); with one replica that is opt-in
(``synchronous: true``), since losing the only standby would stop every write.

Applications use two Services: ``<name>-db-rw`` (the primary) and
``<name>-db-ro`` (the replicas; the primary when there are none).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sso_operator import names
from sso_operator.resources.common import (
    COMPONENT_DATABASE,
    POSTGRES_UID,
    ROLE_LABEL,
    Owner,
    container_security_context,
    labels,
    metadata,
    pod_security_context,
    resources,
    secret_env,
    selector,
)
from sso_operator.resources.secrets import POSTGRES_PORT
from sso_operator.spec import ManagedDatabase, SSOInstanceSpec

PRIMARY = "primary"
REPLICA = "replica"
DATA_DIR = "/var/lib/postgresql/data"
PGDATA = f"{DATA_DIR}/pgdata"
VOLUME = "data"

INIT_SCRIPT = """#!/bin/bash
# First start of the primary only (docker-entrypoint-initdb.d): the application
# role owns the application database; the replication role may stream WAL.
# Credentials are read from the environment inside psql (\\getenv), never
# passed on a command line.
set -euo pipefail
psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname postgres <<'SQL'
\\getenv app_user SSO_DB_USER
\\getenv app_password SSO_DB_PASSWORD
\\getenv app_db SSO_DB_NAME
\\getenv repl_user SSO_REPLICATION_USER
\\getenv repl_password SSO_REPLICATION_PASSWORD
-- No standby exists yet: with synchronous_standby_names set, these commits would wait forever.
SET synchronous_commit TO local;
CREATE ROLE :"app_user" LOGIN PASSWORD :'app_password';
CREATE DATABASE :"app_db" OWNER :"app_user";
CREATE ROLE :"repl_user" REPLICATION LOGIN PASSWORD :'repl_password';
SQL
echo "host replication $SSO_REPLICATION_USER all scram-sha-256" >> "$PGDATA/pg_hba.conf"
"""

CLONE_SCRIPT = """#!/bin/bash
# Replica init container: clone the primary once, then (at every start) point
# the standby at it. Credentials come from the environment (a Secret).
set -euo pipefail
if [ ! -s "$PGDATA/PG_VERSION" ]; then
  rm -rf "$PGDATA"
  until pg_isready -q -h "$PRIMARY_HOST" -p "$PRIMARY_PORT"; do
    echo "waiting for $PRIMARY_HOST"; sleep 2
  done
  PGPASSWORD="$REPLICATION_PASSWORD" pg_basebackup -h "$PRIMARY_HOST" -p "$PRIMARY_PORT" \\
    -U "$REPLICATION_USER" -D "$PGDATA" -X stream --checkpoint=fast --no-password
fi
touch "$PGDATA/standby.signal"
printf "primary_conninfo = 'host=%s port=%s user=%s password=%s application_name=%s'\\n" \\
  "$PRIMARY_HOST" "$PRIMARY_PORT" "$REPLICATION_USER" "$REPLICATION_PASSWORD" "$POD_NAME" \\
  > "$PGDATA/postgresql.auto.conf"
chmod 0600 "$PGDATA/postgresql.auto.conf"
"""


@dataclass(frozen=True)
class Replication:
    """How commits are confirmed, derived from the spec (also reported in status)."""

    mode: str  # "synchronous", "asynchronous" or "none"
    standby_names: str  # the synchronous_standby_names value ("" when not synchronous)
    message: str


def replica_pod_names(name: str, managed: ManagedDatabase) -> list[str]:
    return [f"{names.database_replicas(name)}-{i}" for i in range(managed.instances - 1)]


def replication(name: str, managed: ManagedDatabase) -> Replication:
    replicas = replica_pod_names(name, managed)
    if not replicas:
        return Replication("none", "", "one instance: no standby, no replication")
    if len(replicas) >= 2 or managed.synchronous:
        quoted = ", ".join(f'"{pod}"' for pod in replicas)
        return Replication(
            "synchronous",
            f"ANY 1 ({quoted})",
            f"quorum synchronous: a commit waits for 1 of {len(replicas)} standbys",
        )
    return Replication(
        "asynchronous",
        "",
        "asynchronous: one standby; a failover may lose the last commits"
        " (set synchronous: true, or add an instance, for quorum commits)",
    )


def _parameters(name: str, managed: ManagedDatabase) -> list[str]:
    settings = {
        "listen_addresses": "*",
        "wal_level": "replica",
        "max_wal_senders": "10",
        "max_replication_slots": "10",
        "wal_keep_size": "512MB",
        "hot_standby": "on",
        "password_encryption": "scram-sha-256",
        **managed.parameters,
    }
    standby_names = replication(name, managed).standby_names
    if standby_names:
        settings["synchronous_standby_names"] = standby_names
        settings["synchronous_commit"] = "on"
    args = ["postgres"]
    for key, value in sorted(settings.items()):
        args += ["-c", f"{key}={value}"]
    return args


def _probe(period: int, failures: int) -> dict[str, Any]:
    return {
        "exec": {"command": ["pg_isready", "-q", "-h", "127.0.0.1", "-p", str(POSTGRES_PORT)]},
        "periodSeconds": period,
        "timeoutSeconds": 5,
        "failureThreshold": failures,
    }


def _role_labels(owner: Owner, role: str) -> dict[str, str]:
    return {**selector(owner, COMPONENT_DATABASE), ROLE_LABEL: role}


def _statefulset(spec: SSOInstanceSpec, owner: Owner, role: str, replicas: int) -> dict[str, Any]:
    managed = spec.database.managed
    assert managed is not None
    name = (
        names.database_primary(owner.name)
        if role == PRIMARY
        else names.database_replicas(owner.name)
    )
    credentials = names.database_credentials_secret(owner.name)
    replication_secret = names.database_replication_secret(owner.name)
    env = [
        {"name": "PGDATA", "value": PGDATA},
        secret_env("POSTGRES_USER", credentials, "superuser-username"),
        secret_env("POSTGRES_PASSWORD", credentials, "superuser-password"),
    ]
    mounts = [
        {"name": VOLUME, "mountPath": DATA_DIR},
        {"name": "run", "mountPath": "/var/run/postgresql"},
        {"name": "tmp", "mountPath": "/tmp"},  # noqa: S108 - an emptyDir
    ]
    volumes: list[dict[str, Any]] = [
        {"name": "run", "emptyDir": {}},
        {"name": "tmp", "emptyDir": {}},
    ]
    init_containers: list[dict[str, Any]] = []
    if role == PRIMARY:
        env += [
            secret_env("SSO_DB_USER", credentials, "username"),
            secret_env("SSO_DB_PASSWORD", credentials, "password"),
            secret_env("SSO_DB_NAME", credentials, "database"),
            secret_env("SSO_REPLICATION_USER", replication_secret, "username"),
            secret_env("SSO_REPLICATION_PASSWORD", replication_secret, "password"),
        ]
        mounts.append({"name": "init", "mountPath": "/docker-entrypoint-initdb.d"})
        volumes.append(
            {
                "name": "init",
                "configMap": {
                    "name": names.database_init_config_map(owner.name),
                    "defaultMode": 0o555,
                },
            }
        )
    else:
        init_containers.append(
            {
                "name": "clone",
                "image": managed.image_or_default,
                "imagePullPolicy": spec.image_pull_policy,
                "command": ["bash", "-c", CLONE_SCRIPT],
                "env": [
                    {"name": "PGDATA", "value": PGDATA},
                    {
                        "name": "PRIMARY_HOST",
                        "value": f"{names.database_rw_service(owner.name)}.{owner.namespace}.svc",
                    },
                    {"name": "PRIMARY_PORT", "value": str(POSTGRES_PORT)},
                    {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
                    secret_env("REPLICATION_USER", replication_secret, "username"),
                    secret_env("REPLICATION_PASSWORD", replication_secret, "password"),
                ],
                "securityContext": container_security_context(POSTGRES_UID),
                "volumeMounts": [{"name": VOLUME, "mountPath": DATA_DIR}],
            }
        )
    container: dict[str, Any] = {
        "name": "postgres",
        "image": managed.image_or_default,
        "imagePullPolicy": spec.image_pull_policy,
        "args": _parameters(owner.name, managed),
        "ports": [{"name": "postgres", "containerPort": POSTGRES_PORT, "protocol": "TCP"}],
        "env": env,
        "readinessProbe": _probe(5, 3),
        "livenessProbe": {**_probe(10, 6), "initialDelaySeconds": 30},
        "securityContext": container_security_context(POSTGRES_UID),
        "volumeMounts": mounts,
    }
    container_resources = resources(managed.resources)
    if container_resources:
        container["resources"] = container_resources
    pod_labels = {**labels(owner, COMPONENT_DATABASE), ROLE_LABEL: role}
    claim: dict[str, Any] = {
        "metadata": {"name": VOLUME, "labels": pod_labels},
        "spec": {
            "accessModes": ["ReadWriteOnce"],
            "resources": {"requests": {"storage": managed.storage.size}},
        },
    }
    if managed.storage.storage_class_name:
        claim["spec"]["storageClassName"] = managed.storage.storage_class_name
    pod: dict[str, Any] = {
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        "terminationGracePeriodSeconds": 60,
        "securityContext": pod_security_context(POSTGRES_UID),
        "containers": [container],
        "volumes": volumes,
    }
    if init_containers:
        pod["initContainers"] = init_containers
    if spec.image_pull_secrets:
        pod["imagePullSecrets"] = [{"name": ref.name} for ref in spec.image_pull_secrets]
    return {
        "apiVersion": "apps/v1",
        "kind": "StatefulSet",
        "metadata": metadata(owner, name, COMPONENT_DATABASE, extra_labels={ROLE_LABEL: role}),
        "spec": {
            "replicas": replicas,
            "serviceName": name,
            "podManagementPolicy": "Parallel" if role == REPLICA else "OrderedReady",
            "selector": {"matchLabels": _role_labels(owner, role)},
            "updateStrategy": {"type": "RollingUpdate"},
            # Volumes stay when the instance goes (reclaimPolicy decides, in the finalizer);
            # a replica removed by scaling down loses its volume, so a later one re-clones.
            "persistentVolumeClaimRetentionPolicy": {
                "whenDeleted": "Retain",
                "whenScaled": "Retain" if role == PRIMARY else "Delete",
            },
            "template": {"metadata": {"labels": pod_labels}, "spec": pod},
            "volumeClaimTemplates": [claim],
        },
    }


def primary(spec: SSOInstanceSpec, owner: Owner) -> dict[str, Any]:
    return _statefulset(spec, owner, PRIMARY, 1)


def replicas(spec: SSOInstanceSpec, owner: Owner) -> dict[str, Any] | None:
    """The replicas' StatefulSet; None with one instance (the reconciler deletes it)."""
    managed = spec.database.managed
    assert managed is not None
    if managed.instances < 2:
        return None
    return _statefulset(spec, owner, REPLICA, managed.instances - 1)


def init_config_map(owner: Owner) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": metadata(owner, names.database_init_config_map(owner.name), COMPONENT_DATABASE),
        "data": {"10-sso-roles.sh": INIT_SCRIPT},
    }


def _service(owner: Owner, name: str, role: str, *, headless: bool) -> dict[str, Any]:
    body: dict[str, Any] = {
        "selector": _role_labels(owner, role),
        "ports": [
            {"name": "postgres", "port": POSTGRES_PORT, "targetPort": "postgres", "protocol": "TCP"}
        ],
    }
    if headless:
        body["clusterIP"] = "None"
        body["publishNotReadyAddresses"] = True
    else:
        body["type"] = "ClusterIP"
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": metadata(owner, name, COMPONENT_DATABASE),
        "spec": body,
    }


def services(spec: SSOInstanceSpec, owner: Owner) -> list[dict[str, Any]]:
    """Headless Services of the StatefulSets, plus ``-rw`` and ``-ro``."""
    managed = spec.database.managed
    assert managed is not None
    ro_role = REPLICA if managed.instances > 1 else PRIMARY
    result = [
        _service(owner, names.database_primary(owner.name), PRIMARY, headless=True),
        _service(owner, names.database_rw_service(owner.name), PRIMARY, headless=False),
        _service(owner, names.database_ro_service(owner.name), ro_role, headless=False),
    ]
    if managed.instances > 1:
        result.append(_service(owner, names.database_replicas(owner.name), REPLICA, headless=True))
    return result
