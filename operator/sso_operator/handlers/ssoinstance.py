"""kopf handlers of SSOInstance.

Why this module exists: it is the seam between kopf and the reconciler. Create,
update and resume all call one idempotent :func:`reconcile`, because kopf may
re-run any handler after a crash and a resumed operator must converge on the
same state as one that saw every event. A timer runs the same reconcile every
``SSO_OPERATOR_RESYNC`` seconds, so status follows the children as their pods
become ready, and a deleted or edited child is put back, without a hot loop.

Retries: a spec the operator cannot use raises ``kopf.PermanentError`` (status
``Failed``) and is not retried until the spec changes; a missing prerequisite
(an external Secret, the database primary, a running migration Job) raises
``kopf.TemporaryError`` with a short delay; API trouble raises the
``TemporaryError`` :mod:`sso_operator.kube` chose. A failed migration is
permanent for that image: the Job's reason goes to ``MigrationsReady`` and the
running version keeps serving.

Deletion: the finalizer keeps the instance until :func:`cleanup` has applied
``spec.database.reclaimPolicy`` to the database volumes; everything else goes
with the instance through ownerReferences.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import kopf

from sso_operator import conditions, kube, names
from sso_operator.handlers.invalid import record_invalid_spec
from sso_operator.reconcile import children, readiness
from sso_operator.resources import common, secrets
from sso_operator.settings import OperatorConfig
from sso_operator.spec import GROUP, VERSION, InvalidSpecError, parse_instance_spec

PLURAL = "ssoinstances"
#: Seconds between resyncs of every instance (status and drift); read once at import.
RESYNC_S = OperatorConfig.from_env().resync
WAIT_DELAY_S = 5.0
#: Status fields written by compare-and-swap (see :func:`reconcile`), not by kopf's patch.
CAS_FIELDS = ("conditions", "phase")


async def reconcile(
    *,
    body: kopf.Body,
    spec: Mapping[str, Any],
    current: Mapping[str, Any],
    generation: int | None,
    patch: kopf.Patch,
    logger: kopf.Logger,
) -> children.Outcome:
    """Apply the children, observe them, write the status; safe to run any number of times.

    Raises :class:`~sso_operator.spec.InvalidSpecError` after recording ``Failed``.
    """
    try:
        problem = names.instance_name_problem(body["metadata"]["name"])
        if problem is not None:
            raise InvalidSpecError(problem)
        parsed = parse_instance_spec(spec)
    except InvalidSpecError as error:
        record_invalid_spec(
            error,
            body=body,
            patch=patch,
            current=current,
            generation=generation,
            order=conditions.INSTANCE_CONDITION_TYPES,
        )
        raise
    owner = common.Owner.from_body(body)
    outcome = await children.apply_all(parsed, owner, body)
    observed = await readiness.observe(parsed, owner)
    # Other handlers (keys, backups) write their conditions concurrently. The condition
    # list and the phase derived from it are therefore written with a compare-and-swap
    # on the freshest status (kube.update_status): computed again from it when someone
    # wrote in between, so their entries survive. The other status fields go with
    # kopf's patch, as only this handler writes them.
    computed: dict[str, Mapping[str, Any]] = {}

    def change(fresh: Mapping[str, Any]) -> Mapping[str, Any] | None:
        base = {**current, "conditions": fresh.get("conditions"), "phase": fresh.get("phase")}
        desired = readiness.status(
            parsed, owner, observed, outcome, current=base, generation=generation
        )
        computed["desired"], computed["base"] = desired, base
        delta = readiness.changes(base, desired)
        return {key: delta[key] for key in CAS_FIELDS if key in delta} or None

    written = await kube.update_status(
        body["apiVersion"], body["kind"], owner.namespace, owner.name, change
    )
    if written is None:  # deleted meanwhile
        return outcome
    desired, seen = computed["desired"], computed["base"]
    for key, value in readiness.changes(current, desired).items():
        if key not in CAS_FIELDS:
            patch.status[key] = value
    if desired["phase"] != seen.get("phase"):
        kind = "Warning" if desired["phase"] == readiness.DEGRADED else "Normal"
        ready = conditions.find(desired["conditions"], conditions.READY) or {}
        kopf.event(body, type=kind, reason=desired["phase"], message=str(ready.get("message", "")))
        logger.info(f"SSOInstance {owner.namespace}/{owner.name}: phase {desired['phase']}")
    migration = outcome.migration
    previous = (current.get("migrations") or {}).get("result")
    if migration is not None and migration.result != previous:
        if migration.result == children.SUCCEEDED and previous is not None:
            kopf.info(body, reason="MigrationSucceeded", message=f"Job {migration.job} succeeded")
        elif migration.result == children.FAILED:
            kopf.warn(
                body,
                reason="MigrationFailed",
                message=f"Job {migration.job} failed ({migration.reason}): {migration.message}",
            )
    return outcome


@kopf.on.resume(GROUP, VERSION, PLURAL)
@kopf.on.create(GROUP, VERSION, PLURAL)
@kopf.on.update(GROUP, VERSION, PLURAL)
async def apply(
    body: kopf.Body,
    spec: kopf.Spec,
    status: kopf.Status,
    meta: kopf.Meta,
    patch: kopf.Patch,
    logger: kopf.Logger,
    **_: Any,
) -> None:
    """Create, update and resume of an SSOInstance: one idempotent reconcile."""
    outcome = await reconcile(
        body=body,
        spec=spec,
        current=dict(status),
        generation=meta.get("generation"),
        patch=patch,
        logger=logger,
    )
    if outcome.migration is not None and outcome.migration.result == children.FAILED:
        raise kopf.PermanentError(
            f"migration Job {outcome.migration.job} failed: {outcome.migration.reason}"
        )
    if outcome.waiting_for:
        raise kopf.TemporaryError(f"waiting for {outcome.waiting_for}", delay=WAIT_DELAY_S)


@kopf.timer(GROUP, VERSION, PLURAL, interval=RESYNC_S, initial_delay=RESYNC_S)
async def resync(
    body: kopf.Body,
    spec: kopf.Spec,
    status: kopf.Status,
    meta: kopf.Meta,
    patch: kopf.Patch,
    logger: kopf.Logger,
    **_: Any,
) -> None:
    """Re-run the reconcile: status converges as children become ready; drift is repaired.

    Skipped for a spec already recorded as invalid (its next change is handled).
    """
    current = dict(status)
    if current.get("phase") == "Failed" and current.get("observedGeneration") == meta.get(
        "generation"
    ):
        ready = conditions.find(current.get("conditions"), conditions.READY) or {}
        if ready.get("reason") == "InvalidSpec":
            return
    await reconcile(
        body=body,
        spec=spec,
        current=current,
        generation=meta.get("generation"),
        patch=patch,
        logger=logger,
    )


@kopf.on.delete(GROUP, VERSION, PLURAL)
async def cleanup(body: kopf.Body, spec: kopf.Spec, logger: kopf.Logger, **_: Any) -> None:
    """Apply the database's reclaim policy; the garbage collector removes the rest.

    An external database outlives the instance, so its data key (which decrypts
    the app secrets stored there) is always kept.
    """
    meta = body["metadata"]
    namespace, name = meta["namespace"], meta["name"]
    owner = common.Owner.from_body(body)
    database = spec.get("database") or {}
    if database.get("managed") is None:
        await orphan_secrets(owner, (names.data_key_secret(name),))
        kopf.info(
            body, reason="DataKeyRetained", message="Kept the data key of the external database"
        )
        return
    claims = await kube.list_objects(
        "v1",
        "PersistentVolumeClaim",
        namespace,
        common.selector(owner, common.COMPONENT_DATABASE),
    )
    if database.get("reclaimPolicy", "Retain") == "Delete":
        for claim in claims:
            await kube.delete("v1", "PersistentVolumeClaim", namespace, claim["metadata"]["name"])
        kopf.info(body, reason="VolumesDeleted", message=f"Deleted {len(claims)} database PVC(s)")
        logger.info(f"SSOInstance {namespace}/{name}: deleted {len(claims)} database PVCs")
        return
    # Retain: the volumes have no ownerReference; orphan the Secrets needed to use them.
    await orphan_secrets(owner, secrets.retained_with_database(name))
    kopf.info(
        body,
        reason="VolumesRetained",
        message=f"Kept {len(claims)} database PVC(s) and their credentials Secrets",
    )


async def orphan_secrets(owner: common.Owner, secret_names: tuple[str, ...]) -> None:
    """Remove the instance's ownerReference, so the garbage collector keeps these Secrets."""
    for secret in secret_names:
        found = await kube.get("v1", "Secret", owner.namespace, secret)
        if found is None:
            continue
        references = [
            ref
            for ref in found["metadata"].get("ownerReferences") or []
            if ref.get("uid") != owner.uid
        ]
        await kube.merge_patch(
            "v1",
            "Secret",
            owner.namespace,
            secret,
            {"metadata": {"ownerReferences": references or None}},
        )
