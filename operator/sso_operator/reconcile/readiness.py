"""Read an SSOInstance's children back and turn what they report into ``status``.

Why this module exists: readiness is what a platform team watches (``kubectl
get ssoi``), and it must converge on its own as pods become ready, without a
person re-applying anything. :func:`observe` makes the reads; :func:`conditions_for`
and :func:`phase` are pure, so every rule is unit-tested. ``KeysReady`` and
``BackupReady`` belong to other handlers: they are read from the resource, and
a missing one counts as not ready.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sso_operator import conditions, kube, names
from sso_operator.conditions import Condition
from sso_operator.reconcile.children import FAILED, RUNNING, SUCCEEDED, ImportState, Outcome
from sso_operator.reconcile.children import PENDING as IMPORT_PENDING
from sso_operator.resources import database
from sso_operator.resources.common import Owner
from sso_operator.spec import SSOInstanceSpec

PENDING = "Pending"
PROVISIONING = "Provisioning"
READY = "Ready"
DEGRADED = "Degraded"

#: Conditions this reconciler writes; the others are read from the resource.
OWN = (
    conditions.DATABASE_READY,
    conditions.CACHE_READY,
    conditions.SERVICE_READY,
    conditions.MIGRATIONS_READY,
)
FOREIGN = (conditions.KEYS_READY, conditions.BACKUP_READY)


@dataclass(frozen=True)
class Observed:
    """The children's reported state (None: the object does not exist)."""

    deployment: Mapping[str, Any] | None = None
    primary: Mapping[str, Any] | None = None
    replicas: Mapping[str, Any] | None = None
    redis: Mapping[str, Any] | None = None


async def observe(spec: SSOInstanceSpec, owner: Owner) -> Observed:
    ns = owner.namespace
    managed_db = spec.database.managed is not None
    return Observed(
        deployment=await kube.get("apps/v1", "Deployment", ns, owner.name),
        primary=await kube.get("apps/v1", "StatefulSet", ns, names.database_primary(owner.name))
        if managed_db
        else None,
        replicas=await kube.get("apps/v1", "StatefulSet", ns, names.database_replicas(owner.name))
        if managed_db
        else None,
        redis=await kube.get("apps/v1", "Deployment", ns, names.redis(owner.name))
        if spec.redis.managed is not None
        else None,
    )


def _ready(obj: Mapping[str, Any] | None) -> int:
    return int(((obj or {}).get("status") or {}).get("readyReplicas") or 0)


def database_condition(
    spec: SSOInstanceSpec, name: str, observed: Observed, outcome: Outcome
) -> tuple[Condition, dict[str, Any]]:
    managed = spec.database.managed
    if managed is None:
        cond = (
            Condition(conditions.DATABASE_READY, "False", "SecretMissing", outcome.database_missing)
            if outcome.database_missing
            else Condition(
                conditions.DATABASE_READY, "True", "External", "external database Secret found"
            )
        )
        return cond, {"mode": "external"}
    replication = database.replication(name, managed)
    primary_ready = _ready(observed.primary) >= 1
    replicas_ready = _ready(observed.replicas) if managed.instances > 1 else 0
    ready_instances = int(primary_ready) + replicas_ready
    summary = f"{ready_instances}/{managed.instances} instances ready; {replication.message}"
    doc = {
        "mode": "managed",
        "readWriteService": names.database_rw_service(name),
        "readOnlyService": names.database_ro_service(name),
        "instances": managed.instances,
        "readyInstances": ready_instances,
        "replication": replication.mode,
        "replicationMessage": replication.message,
    }
    if observed.primary is None:
        return Condition(conditions.DATABASE_READY, "False", "Creating", summary), doc
    if not primary_ready:
        return Condition(conditions.DATABASE_READY, "False", "PrimaryNotReady", summary), doc
    if replication.mode == "synchronous" and replicas_ready == 0:
        # Every commit waits for a standby: writes hang until one is back.
        return Condition(conditions.DATABASE_READY, "False", "NoSynchronousStandby", summary), doc
    if ready_instances < managed.instances:
        return Condition(conditions.DATABASE_READY, "True", "ReplicasNotReady", summary), doc
    return Condition(conditions.DATABASE_READY, "True", "Ready", summary), doc


def cache_condition(spec: SSOInstanceSpec, observed: Observed, outcome: Outcome) -> Condition:
    external = spec.redis.external
    if external is not None:
        if outcome.cache_missing:
            return Condition(
                conditions.CACHE_READY, "False", "SecretMissing", outcome.cache_missing
            )
        return Condition(conditions.CACHE_READY, "True", "External", "external Redis Secret found")
    if observed.redis is None:
        return Condition(conditions.CACHE_READY, "False", "Creating", "Redis not created yet")
    if _ready(observed.redis) >= 1:
        return Condition(conditions.CACHE_READY, "True", "Ready", "Redis is ready")
    return Condition(conditions.CACHE_READY, "False", "NotReady", "Redis pod not ready")


def service_condition(
    spec: SSOInstanceSpec, observed: Observed
) -> tuple[Condition, dict[str, Any]]:
    deployment = observed.deployment
    desired = int((deployment or {}).get("spec", {}).get("replicas") or spec.desired_replicas)
    ready = _ready(deployment)
    replicas = {"desired": desired, "ready": ready, "summary": f"{ready}/{desired}"}
    if deployment is None:
        message = "Deployment not created yet (it waits for its migration Job)"
        return Condition(conditions.SERVICE_READY, "False", "NotCreated", message), replicas
    state = deployment.get("status") or {}
    available = any(
        c.get("type") == "Available" and c.get("status") == "True"
        for c in state.get("conditions") or []
    )
    updated = int(state.get("updatedReplicas") or 0)
    message = f"{ready}/{desired} pods ready"
    if updated < desired or int(state.get("replicas") or 0) > desired:
        message += f"; rolling out ({updated}/{desired} updated)"
    if available and ready >= 1:
        return Condition(conditions.SERVICE_READY, "True", "Available", message), replicas
    return Condition(conditions.SERVICE_READY, "False", "Unavailable", message), replicas


def migrations_condition(spec: SSOInstanceSpec, outcome: Outcome) -> Condition:
    state = outcome.migration
    if state is None:
        waiting = outcome.waiting_for or "prerequisites"
        return Condition(
            conditions.MIGRATIONS_READY, "Unknown", "Waiting", f"waiting for {waiting}"
        )
    if state.result == SUCCEEDED:
        return Condition(
            conditions.MIGRATIONS_READY, "True", "Succeeded", f"schema ready for {spec.image}"
        )
    if state.result == RUNNING:
        return Condition(
            conditions.MIGRATIONS_READY, "False", "Running", f"Job {state.job} is running"
        )
    serving = outcome.deployment_image
    message = f"Job {state.job} failed: {state.message or state.reason}"
    if serving and serving != spec.image:
        message += f"; still serving {serving}"
    message += " (delete the Job to retry)"
    return Condition(conditions.MIGRATIONS_READY, "False", state.reason or FAILED, message)


def import_condition(outcome: Outcome, current: Mapping[str, Any]) -> Condition:
    """``ImportReady``, while ``spec.database.importFrom`` is set."""
    state = outcome.legacy_import
    if state is None:  # the pass stopped before the import (prerequisites, migration)
        waiting = outcome.waiting_for or "the migration"
        return Condition(conditions.IMPORT_READY, "Unknown", "Waiting", f"waiting for {waiting}")
    if state.result == SUCCEEDED:
        fields = state.fields or {}
        recorded = current.get("import") or {}
        message = str(fields.get("message") or recorded.get("message") or "imported")
        return Condition(conditions.IMPORT_READY, "True", "Imported", message)
    if state.result == IMPORT_PENDING:
        return Condition(
            conditions.IMPORT_READY, "Unknown", "Waiting", "waiting for the migration Job"
        )
    if state.result == RUNNING:
        return Condition(conditions.IMPORT_READY, "False", "Running", f"Job {state.job} is running")
    serving = outcome.deployment_image
    message = f"Job {state.job} failed ({state.reason or FAILED}): {state.message}"
    message += f"; still serving {serving}" if serving else "; the service is not started"
    message += " (fix the source or the database, then delete the Job to retry)"
    return Condition(conditions.IMPORT_READY, "False", "ImportFailed", message)


def import_status(state: ImportState, spec_source: str) -> dict[str, Any]:
    """``status.import`` for a state that is not already recorded."""
    doc: dict[str, Any] = {
        "phase": state.result,
        "job": state.job,
        "source": spec_source,
        "completed": state.result == SUCCEEDED,
    }
    if state.finished_at:
        doc["completedAt"] = state.finished_at
    if state.reason and state.result == FAILED:
        doc["reason"] = state.reason
    doc.update(state.fields or {})
    if state.result == FAILED and state.message:
        doc["message"] = state.message
    return doc


def phase(
    current: Sequence[Mapping[str, Any]], previous_phase: str | None, pending: bool
) -> tuple[str, Condition]:
    """The phase and the summary ``Ready`` condition from every other condition."""
    # ImportReady counts only while it is listed (spec.database.importFrom is set).
    types: tuple[str, ...] = (*OWN, *FOREIGN)
    if conditions.find(current, conditions.IMPORT_READY) is not None:
        types = (*types, conditions.IMPORT_READY)
    not_ready = [type_ for type_ in types if not conditions.is_true(current, type_)]
    if not not_ready:
        return READY, Condition(conditions.READY, "True", "Ready", "every component is ready")
    message = "not ready: " + ", ".join(not_ready)
    if previous_phase in (READY, DEGRADED):
        return DEGRADED, Condition(conditions.READY, "False", "Degraded", message)
    if pending:
        return PENDING, Condition(conditions.READY, "False", "Pending", message)
    return PROVISIONING, Condition(conditions.READY, "False", "Provisioning", message)


def status(
    spec: SSOInstanceSpec,
    owner: Owner,
    observed: Observed,
    outcome: Outcome,
    *,
    current: Mapping[str, Any],
    generation: int | None,
    timestamp: str | None = None,
) -> dict[str, Any]:
    """The part of ``status`` this reconciler owns, with conditions merged into the current ones."""
    db_condition, db_doc = database_condition(spec, owner.name, observed, outcome)
    service_cond, replicas = service_condition(spec, observed)
    own = [
        db_condition,
        cache_condition(spec, observed, outcome),
        service_cond,
        migrations_condition(spec, outcome),
    ]
    current_conditions = current.get("conditions")
    imported = import_condition(outcome, current) if spec.database.import_from else None
    if imported is not None:
        own.append(imported)
    else:  # no importFrom (any more): the condition is not listed
        current_conditions = [
            c for c in current_conditions or [] if c.get("type") != conditions.IMPORT_READY
        ]
    merged = conditions.merge(
        current_conditions,
        own,
        generation=generation,
        timestamp=timestamp,
        order=conditions.INSTANCE_CONDITION_TYPES,
    )
    pending = bool(outcome.database_missing or outcome.cache_missing)
    phase_name, ready = phase(merged, current.get("phase"), pending)
    merged = conditions.merge(
        merged,
        [ready],
        generation=generation,
        timestamp=timestamp,
        order=conditions.INSTANCE_CONDITION_TYPES,
    )
    issuer = spec.issuer or names.default_issuer(owner.name, owner.namespace)
    doc: dict[str, Any] = {
        "observedGeneration": generation,
        "phase": phase_name,
        "conditions": merged,
        "endpoint": names.grpc_endpoint(owner.name, owner.namespace),
        "adminEndpoint": names.admin_endpoint(owner.name, owner.namespace),
        "issuer": issuer,
        "jwksUri": names.jwks_uri(issuer),
        "replicas": replicas,
        "database": db_doc,
    }
    if outcome.migration is not None:
        doc["migrations"] = {
            "job": outcome.migration.job,
            "result": outcome.migration.result,
            "image": spec.image
            if outcome.migration.result == SUCCEEDED
            else ((current.get("migrations") or {}).get("image") or outcome.deployment_image or ""),
        }
    state = outcome.legacy_import
    if state is not None and not state.recorded:
        doc["import"] = import_status(state, state.source)
    return doc


def changes(current: Mapping[str, Any], desired: Mapping[str, Any]) -> dict[str, Any]:
    """Only the keys whose value differs: other handlers' concurrent status writes survive."""
    return {key: value for key, value in desired.items() if current.get(key) != value}
