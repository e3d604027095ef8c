"""Apply every child of an SSOInstance, in dependency order, idempotently.

Why this module exists: kopf may run this after a crash at any point, twice at
once (a change handler and the resync timer), or after someone deleted a
child. So each step is level-based: generated Secrets are created only when
missing and never rewritten; everything else is server-side applied with the
operator's field manager (the same manifest twice changes nothing); objects a
spec no longer wants (an HPA after autoscaling is switched off, the replica
StatefulSet at one instance) are deleted. The Deployment is created, or moved
to a new image, only after that image's migration Job succeeded, and, with
``spec.database.importFrom``, only after the legacy import Job succeeded once
for that source (a failed import leaves a running Deployment as it is).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import kopf

from sso_operator import kube, names
from sso_operator.resources import (
    config,
    database,
    legacy_import,
    migration,
    network,
    redis,
    secrets,
    service,
)
from sso_operator.resources.common import (
    CHECKSUM_ANNOTATION,
    Owner,
    checksum,
    selector,
    termination_message,
)
from sso_operator.spec import SSOInstanceSpec

RUNNING = "Running"
SUCCEEDED = "Succeeded"
FAILED = "Failed"
PENDING = "Pending"  # the import waits for the spec image's migration


@dataclass(frozen=True)
class MigrationState:
    """The migration Job of the spec's image, as last seen."""

    job: str
    result: str  # Running, Succeeded or Failed
    reason: str = ""
    message: str = ""


@dataclass(frozen=True)
class ImportState:
    """The legacy import of the spec's ``importFrom`` source, as last seen."""

    job: str
    result: str  # Pending, Running, Succeeded or Failed
    source: str  # legacy_import.source_hash of the stanza
    reason: str = ""
    message: str = ""
    fields: dict[str, Any] | None = None  # status.import fields from the pod's report
    finished_at: str | None = None
    recorded: bool = False  # done before: status.import already says so


@dataclass
class Outcome:
    """What one pass achieved: read by the status and the handler's retry decision."""

    migration: MigrationState | None = None
    deployment_image: str | None = None  # the image the Deployment runs now (None: none yet)
    waiting_for: str | None = None  # set when a prerequisite is missing (retry later)
    database_missing: str | None = None  # why an external database Secret cannot be used
    cache_missing: str | None = None  # why an external Redis Secret cannot be used
    legacy_import: ImportState | None = None  # None: no spec.database.importFrom


def job_state(job: dict[str, Any]) -> MigrationState:
    name = job["metadata"]["name"]
    for condition in (job.get("status") or {}).get("conditions") or []:
        if condition.get("status") != "True":
            continue
        if condition.get("type") == "Complete":
            return MigrationState(name, SUCCEEDED)
        if condition.get("type") == "Failed":
            return MigrationState(
                name, FAILED, condition.get("reason", "Failed"), condition.get("message", "")
            )
    return MigrationState(name, RUNNING)


async def ensure_secrets(spec: SSOInstanceSpec, owner: Owner, body: kopf.Body) -> None:
    """Create each generated Secret that is missing; never touch an existing one's data.

    An existing Secret without an ownerReference (kept from a deleted instance
    whose database was retained) is adopted, so it is used, not replaced.
    """
    for manifest in secrets.generated(spec, owner):
        name = manifest["metadata"]["name"]
        existing = await kube.get("v1", "Secret", owner.namespace, name)
        if existing is None:
            if await kube.create(manifest) is not None:
                kopf.info(body, reason="SecretGenerated", message=f"Generated Secret {name}")
            continue
        references = existing["metadata"].get("ownerReferences") or []
        if not any(ref.get("uid") == owner.uid for ref in references):
            await kube.merge_patch(
                "v1",
                "Secret",
                owner.namespace,
                name,
                {"metadata": {"ownerReferences": [*references, owner.reference()]}},
            )
            kopf.info(body, reason="SecretAdopted", message=f"Adopted existing Secret {name}")


async def _apply_or_delete(
    manifest: dict[str, Any] | None, api: str, kind: str, ns: str, name: str
) -> None:
    if manifest is not None:
        await kube.apply(manifest)
    else:
        await kube.delete(api, kind, ns, name)


async def external_secret_missing(namespace: str, name: str, key: str) -> str | None:
    """Why an external Secret cannot be used yet, or None."""
    found = await kube.get("v1", "Secret", namespace, name)
    if found is None:
        return f"Secret {namespace}/{name} does not exist"
    if key not in (found.get("data") or {}):
        return f"Secret {namespace}/{name} has no key {key!r}"
    return None


async def apply_database(spec: SSOInstanceSpec, owner: Owner) -> str | None:
    """The managed PostgreSQL (or a check of the external Secret); returns what is missing."""
    ns = owner.namespace
    external = spec.database.external
    if external is not None:
        ref = external.secret_ref
        return await external_secret_missing(ns, ref.name, ref.primary_key)
    await kube.apply(database.init_config_map(owner))
    for manifest in database.services(spec, owner):
        await kube.apply(manifest)
    await kube.apply(database.primary(spec, owner))
    replicas = database.replicas(spec, owner)
    await _apply_or_delete(
        replicas, "apps/v1", "StatefulSet", ns, names.database_replicas(owner.name)
    )
    if replicas is None:
        await kube.delete("v1", "Service", ns, names.database_replicas(owner.name))
    return None


async def apply_cache(spec: SSOInstanceSpec, owner: Owner) -> str | None:
    external = spec.redis.external
    if external is not None:
        ref = external.secret_ref
        return await external_secret_missing(owner.namespace, ref.name, ref.key)
    await kube.apply(redis.service(owner))
    await kube.apply(redis.deployment(spec, owner))
    return None


async def apply_network(spec: SSOInstanceSpec, owner: Owner) -> None:
    ns = owner.namespace
    wanted = spec.network_policy.enabled
    policies = [
        ("server", network.server(spec, owner)),
        ("database", network.database(owner) if spec.database.managed is not None else None),
        ("cache", network.cache(owner) if spec.redis.managed is not None else None),
    ]
    for component, manifest in policies:
        name = names.network_policy(owner.name, component)
        await _apply_or_delete(
            manifest if wanted else None, "networking.k8s.io/v1", "NetworkPolicy", ns, name
        )


async def run_migration(spec: SSOInstanceSpec, owner: Owner, body: kopf.Body) -> MigrationState:
    """The spec image's migration Job: created when missing; its state."""
    manifest = migration.job(spec, owner)
    name = manifest["metadata"]["name"]
    existing = await kube.get("batch/v1", "Job", owner.namespace, name)
    if existing is None:
        existing = await kube.create(manifest)
        if existing is None:  # created concurrently
            existing = await kube.get("batch/v1", "Job", owner.namespace, name)
        else:
            kopf.info(
                body,
                reason="MigrationStarted",
                message=f"Job {name} runs `sso migrate` for image {spec.image}",
            )
    if existing is None:
        return MigrationState(name, RUNNING)
    return job_state(existing)


async def database_accepts_connections(spec: SSOInstanceSpec, owner: Owner) -> bool:
    """Whether a migration Job can start now (external: yes).

    The managed primary must be ready, and with synchronous replication also a
    standby: until one streams, every commit (the migration's too) waits.
    """
    managed = spec.database.managed
    if managed is None:
        return True

    async def ready(name: str) -> bool:
        found = await kube.get("apps/v1", "StatefulSet", owner.namespace, name)
        return bool(found and (found.get("status") or {}).get("readyReplicas", 0) >= 1)

    if not await ready(names.database_primary(owner.name)):
        return False
    if database.replication(owner.name, managed).mode == "synchronous":
        return await ready(names.database_replicas(owner.name))
    return True


async def prune_migration_jobs(owner: Owner, keep: str) -> None:
    """Delete finished migration Jobs of other images (their pods go with them)."""
    jobs = await kube.list_objects("batch/v1", "Job", owner.namespace, selector(owner, "migration"))
    for job in jobs:
        name = job["metadata"]["name"]
        if name != keep and job_state(job).result != RUNNING:
            await kube.delete("batch/v1", "Job", owner.namespace, name)


async def apply_all(spec: SSOInstanceSpec, owner: Owner, body: kopf.Body) -> Outcome:
    """One reconcile pass over every child this engineer's handlers own."""
    ns = owner.namespace
    outcome = Outcome()
    await ensure_secrets(spec, owner, body)
    config_map = config.config_map(spec, owner)
    await kube.apply(config_map)
    outcome.database_missing = await apply_database(spec, owner)
    outcome.cache_missing = await apply_cache(spec, owner)
    await apply_network(spec, owner)
    await kube.apply(service.service(spec, owner))
    await kube.apply(service.admin_service(owner))
    await _apply_or_delete(
        service.pod_disruption_budget(spec, owner),
        "policy/v1",
        "PodDisruptionBudget",
        ns,
        owner.name,
    )
    await _apply_or_delete(
        service.horizontal_pod_autoscaler(spec, owner),
        "autoscaling/v2",
        "HorizontalPodAutoscaler",
        ns,
        owner.name,
    )
    current = await kube.get("apps/v1", "Deployment", ns, owner.name)
    current_image = _image_of(current)
    outcome.deployment_image = current_image
    job_name = names.migration_job(owner.name, spec.image)
    existing = await kube.get("batch/v1", "Job", ns, job_name)
    known: MigrationState | None = None
    if current_image == spec.image:
        # Running this image means its migration succeeded before (the Job may be gone).
        known = MigrationState(job_name, SUCCEEDED)
    elif existing is not None:
        known = job_state(existing)
    outcome.migration = known
    missing = [m for m in (outcome.database_missing, outcome.cache_missing) if m]
    if missing:  # the Deployment's pods could not start: leave it as it is
        outcome.waiting_for = "; ".join(missing)
        return outcome

    if known is not None:
        state = known
    else:
        if not await database_accepts_connections(spec, owner):
            outcome.waiting_for = "the database primary to become ready"
            return outcome
        state = await run_migration(spec, owner, body)
    outcome.migration = state
    if state.result == SUCCEEDED:
        image = spec.image
    elif current_image is not None:
        image = current_image  # keep serving the running version, apply the rest of the spec
    else:
        if state.result == RUNNING:
            outcome.waiting_for = f"migration Job {state.job}"
        return outcome
    outcome.legacy_import = await run_legacy_import(
        spec, owner, body, migrated=state.result == SUCCEEDED
    )
    imported = outcome.legacy_import
    if imported is not None and imported.result != SUCCEEDED:
        if imported.result in (PENDING, RUNNING):
            outcome.waiting_for = f"legacy import Job {imported.job}"
        if current_image is None:  # first install: the service waits for its users
            return outcome
        image = current_image  # keep the running version as it is
    if imported is not None and imported.result == SUCCEEDED:
        await prune_import_jobs(owner, keep=imported.job)
    if spec.autoscaling.enabled and current is not None and owns_replicas(current):
        await hand_replicas_over(current)
    checksum_value = checksum(config_map["data"])
    await kube.apply(service.deployment(spec, owner, image=image, config_checksum=checksum_value))
    if current_image is None:
        kopf.info(body, reason="DeploymentCreated", message=f"Deployment {owner.name} runs {image}")
    elif current_image != image:
        kopf.info(
            body,
            reason="RollingOut",
            message=f"Deployment {owner.name}: {current_image} -> {image}",
        )
    outcome.deployment_image = image
    if state.result == SUCCEEDED:
        await prune_migration_jobs(owner, keep=state.job)
    elif state.result == RUNNING:
        outcome.waiting_for = f"migration Job {state.job}"
    return outcome


async def run_legacy_import(
    spec: SSOInstanceSpec, owner: Owner, body: kopf.Body, *, migrated: bool
) -> ImportState | None:
    """The import Job of ``spec.database.importFrom``: created once per source; its state.

    Done once: when ``status.import`` records this source as completed, nothing
    runs (the Job may be gone). Otherwise the Job is created once the spec
    image's migration succeeded (``migrated``), and its pod's report is read
    when it finished. A failed Job stays until someone deletes it (the retry).
    """
    import_from = spec.database.import_from
    if import_from is None:
        return None
    source = legacy_import.source_hash(import_from)
    recorded = (body.get("status") or {}).get("import") or {}
    if recorded.get("completed") and recorded.get("source") == source:
        return ImportState(str(recorded.get("job", "")), SUCCEEDED, source, recorded=True)
    ns = owner.namespace
    name = names.legacy_import_job(owner.name, source)
    existing = await kube.get("batch/v1", "Job", ns, name)
    if existing is None:
        if not migrated:
            return ImportState(name, PENDING, source)
        existing = await kube.create(legacy_import.job(spec, owner))
        if existing is None:  # created concurrently
            existing = await kube.get("batch/v1", "Job", ns, name)
        else:
            kopf.info(
                body,
                reason="LegacyImportStarted",
                message=f"Job {name} imports {legacy_import.describe_source(import_from)}",
            )
    if existing is None:
        return ImportState(name, RUNNING, source)
    state = job_state(existing)
    if state.result == RUNNING:
        return ImportState(name, RUNNING, source)
    pods = await kube.list_objects("v1", "Pod", ns, {"batch.kubernetes.io/job-name": name})
    report = legacy_import.parse_message(termination_message(pods))
    fields = legacy_import.result_fields(report)
    job_status = existing.get("status") or {}
    finished = job_status.get("completionTime")
    for condition in job_status.get("conditions") or []:
        if condition.get("type") == "Failed" and condition.get("status") == "True":
            finished = condition.get("lastTransitionTime")
    if state.result == SUCCEEDED and report.ok is False:  # cannot happen (exit 1): be safe
        result = ImportState(
            name, FAILED, source, "ImportFailed", fields["message"], fields, finished
        )
    else:
        message = fields["message"]
        if report.document is None and state.result == FAILED:  # the Job's reason, the log tail
            message = "; ".join(m for m in (state.message, report.text[-500:]) if m)
        result = ImportState(
            name, state.result, source, state.reason, message or "", fields, finished
        )
    announce_import(body, result, recorded)
    return result


def announce_import(body: kopf.Body, state: ImportState, recorded: Mapping[str, Any]) -> None:
    """One Event per finished import Job: when ``status.import`` does not say so yet."""
    if recorded.get("job") == state.job and recorded.get("phase") == state.result:
        return
    if state.result == SUCCEEDED:
        kopf.info(body, reason="LegacyImportSucceeded", message=f"Job {state.job}: {state.message}")
    elif state.result == FAILED:
        kopf.warn(
            body,
            reason="LegacyImportFailed",
            message=f"Job {state.job} failed ({state.reason or FAILED}): {state.message}",
        )


async def prune_import_jobs(owner: Owner, keep: str) -> None:
    """Delete finished import Jobs of earlier sources (their pods go with them)."""
    labels = selector(owner, legacy_import.COMPONENT_IMPORT)
    for job in await kube.list_objects("batch/v1", "Job", owner.namespace, labels):
        name = job["metadata"]["name"]
        if name != keep and job_state(job).result != RUNNING:
            await kube.delete("batch/v1", "Job", owner.namespace, name)


#: Field manager that briefly co-owns a Deployment's replicas while an HPA takes over.
HANDOVER_MANAGER = "sso-operator-handover"


def owns_replicas(deployment: dict[str, Any]) -> bool:
    """Whether the operator's last apply set ``spec.replicas`` (managedFields)."""
    for entry in deployment["metadata"].get("managedFields") or []:
        fields = (entry.get("fieldsV1") or {}).get("f:spec") or {}
        if (
            entry.get("manager") == kube.FIELD_MANAGER
            and entry.get("operation") == "Apply"
            and "f:replicas" in fields
        ):
            return True
    return False


async def hand_replicas_over(deployment: dict[str, Any]) -> None:
    """Keep the current replica count when autoscaling is switched on.

    Dropping ``replicas`` from the operator's apply would remove the field (the
    Deployment would fall back to 1 pod until the HPA's next sync). A second
    field manager first co-owns the current value, so the field survives the
    operator letting go; the HPA's next scale takes it over from there.
    """
    meta = deployment["metadata"]
    await kube.apply(
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": meta["name"], "namespace": meta["namespace"]},
            "spec": {"replicas": deployment["spec"]["replicas"]},
        },
        field_manager=HANDOVER_MANAGER,
        force=False,
    )


def _image_of(deployment: dict[str, Any] | None) -> str | None:
    if deployment is None:
        return None
    containers = deployment["spec"]["template"]["spec"].get("containers") or []
    for container in containers:
        if container.get("name") == "sso":
            image: str = container["image"]
            return image
    return None


__all__ = [
    "CHECKSUM_ANNOTATION",
    "FAILED",
    "PENDING",
    "RUNNING",
    "SUCCEEDED",
    "ImportState",
    "MigrationState",
    "Outcome",
    "apply_all",
]
