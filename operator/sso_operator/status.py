"""Status documents for SSOInstance and ClientApp, computed from typed specs.

Why this module exists: the status is the operator's user interface (``kubectl
get`` columns, ``kubectl describe`` conditions). Building it in pure functions,
apart from the kopf handlers, makes every phase testable without a cluster and
keeps the handlers thin. The functions return the whole ``status`` subtree the
operator owns; ``status.kopf`` belongs to kopf and is never touched here.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from sso_operator import conditions, names
from sso_operator.conditions import Condition
from sso_operator.spec import ClientAppSpec, SSOInstanceSpec

PENDING = "Pending"
FAILED = "Failed"


def _current_conditions(status: Mapping[str, Any] | None) -> list[Mapping[str, Any]]:
    raw = (status or {}).get("conditions") or []
    return [item for item in raw if isinstance(item, Mapping)]


def instance_pending(
    spec: SSOInstanceSpec,
    *,
    name: str,
    namespace: str,
    generation: int | None,
    current: Mapping[str, Any] | None,
    timestamp: str | None = None,
) -> dict[str, Any]:
    """Status of a valid SSOInstance whose resources are not provisioned yet."""
    issuer = spec.issuer or names.default_issuer(name, namespace)
    desired = spec.desired_replicas
    database: dict[str, Any]
    if spec.database.managed is not None:
        database = {
            "mode": "managed",
            "readWriteService": names.database_rw_service(name),
            "readOnlyService": names.database_ro_service(name),
            "instances": spec.database.managed.instances,
            "readyInstances": 0,
        }
    else:
        database = {"mode": "external"}
    backup_condition = (
        Condition(conditions.BACKUP_READY, "Unknown", "Provisioning", "Backup CronJobs not created")
        if spec.backup.enabled
        else Condition(conditions.BACKUP_READY, "True", "Disabled", "Backups are disabled")
    )
    wanted = [
        Condition(
            conditions.READY,
            "False",
            "Provisioning",
            "The spec is valid; waiting for the instance's resources to be provisioned",
        ),
        Condition(conditions.DATABASE_READY, "Unknown", "Provisioning", "Database not checked yet"),
        Condition(conditions.CACHE_READY, "Unknown", "Provisioning", "Redis not checked yet"),
        Condition(
            conditions.SERVICE_READY, "Unknown", "Provisioning", "SSO Deployment not created"
        ),
        Condition(
            conditions.MIGRATIONS_READY, "Unknown", "Provisioning", "Migrations have not run yet"
        ),
        Condition(conditions.KEYS_READY, "Unknown", "Provisioning", "Signing keys not created"),
        backup_condition,
    ]
    return {
        "observedGeneration": generation,
        "phase": PENDING,
        "conditions": conditions.merge(
            _current_conditions(current),
            wanted,
            generation=generation,
            timestamp=timestamp,
            order=conditions.INSTANCE_CONDITION_TYPES,
        ),
        "endpoint": names.grpc_endpoint(name, namespace),
        "issuer": issuer,
        "jwksUri": names.jwks_uri(issuer),
        "replicas": {"desired": desired, "ready": 0, "summary": f"0/{desired}"},
        "database": database,
    }


def failed(
    message: str,
    *,
    generation: int | None,
    current: Mapping[str, Any] | None,
    order: tuple[str, ...] = conditions.INSTANCE_CONDITION_TYPES,
    reason: str = "InvalidSpec",
    timestamp: str | None = None,
) -> dict[str, Any]:
    """Status of a resource the operator cannot act on until its spec changes."""
    return {
        "observedGeneration": generation,
        "phase": FAILED,
        "conditions": conditions.merge(
            _current_conditions(current),
            [Condition(conditions.READY, "False", reason, message)],
            generation=generation,
            timestamp=timestamp,
            order=order,
        ),
    }


def clientapp_pending(
    spec: ClientAppSpec,
    *,
    name: str,
    namespace: str,
    generation: int | None,
    current: Mapping[str, Any] | None,
    timestamp: str | None = None,
) -> dict[str, Any]:
    """Status of a valid ClientApp that is not registered with its instance yet."""
    instance_namespace = spec.instance_ref.namespace or namespace
    instance = f"{instance_namespace}/{spec.instance_ref.name}"
    wanted = [
        Condition(
            conditions.READY,
            "False",
            "WaitingForInstance",
            f"The spec is valid; waiting for SSOInstance {instance} to be Ready",
        ),
        Condition(
            conditions.INSTANCE_READY, "Unknown", "Pending", f"SSOInstance {instance} not checked"
        ),
        Condition(
            conditions.CREDENTIALS_READY, "Unknown", "Pending", "Credentials Secret not written"
        ),
    ]
    return {
        "observedGeneration": generation,
        "phase": PENDING,
        "conditions": conditions.merge(
            _current_conditions(current),
            wanted,
            generation=generation,
            timestamp=timestamp,
            order=conditions.CLIENTAPP_CONDITION_TYPES,
        ),
        "instance": instance,
        "secretName": names.credentials_secret(name, spec.credentials_secret.name),
    }


def merge_patch(current: Mapping[str, Any] | None, desired: Mapping[str, Any]) -> dict[str, Any]:
    """A JSON merge patch turning the operator-owned part of ``current`` into ``desired``.

    Keys the operator wrote before and no longer wants are set to None (deleted),
    recursively through nested objects; ``kopf`` (the framework's own progress)
    is left alone. Lists are replaced whole, as merge patches do.
    """
    patch: dict[str, Any] = dict(desired)
    for key, old in (current or {}).items():
        if key == "kopf":
            continue
        new = desired.get(key)
        if key not in desired:
            patch[key] = None
        elif isinstance(old, Mapping) and isinstance(new, Mapping):
            patch[key] = merge_patch(old, new)
    return patch
