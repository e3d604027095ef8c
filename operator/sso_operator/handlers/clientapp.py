"""kopf handlers of ClientApp: register the app with its instance and deliver its credentials.

Why this module exists: kopf calls in here on every ClientApp event; each
handler only translates kopf's arguments and serialises the work per object.
Create, update (the spec, or the ``sso.dev/rotate-secret`` annotation) and
resume run one idempotent :func:`sso_operator.clientapp_sync.reconcile`; a
timer runs the same reconcile for drift repair and scheduled rotation; a new
value of the ``sso.dev/rotate-secret`` annotation (which kopf's change
detection ignores: it follows the spec) runs it from an event handler; the
deletion handler (and so the ``sso.dev/finalizer`` finalizer) removes the app
from the SSO and the credentials Secret.

The handlers of one object may overlap (the timer ticks while a change is being
handled), so they take a per-object lock, and each remembers what a reconcile
learnt (the app id, the rotation request it acted on) until the status patch,
which kopf applies only after the handler returns, is visible: otherwise the
next reconcile, reading the old status, would register or rotate twice.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import kopf

from sso_operator import clientapp as logic
from sso_operator import conditions, sso_admin
from sso_operator import status as statuses
from sso_operator.clientapp_sync import reconcile, unregister
from sso_operator.handlers.invalid import record_invalid_spec
from sso_operator.settings import OperatorConfig
from sso_operator.spec import GROUP, VERSION, ClientAppSpec, InvalidSpecError, parse_clientapp_spec

PLURAL = "clientapps"
#: How often the timer looks at each ClientApp; it talks to the SSO only when a
#: resync (SSO_OPERATOR_CLIENTAPP_RESYNC) or a rotation is due.
TIMER_TICK = 5.0

_locks: dict[str, asyncio.Lock] = {}
_last_sync: dict[str, float] = {}
_learnt: dict[str, dict[str, Any]] = {}


def _lock(uid: str) -> asyncio.Lock:
    """One reconcile at a time per ClientApp: the change handlers and the timer share it."""
    return _locks.setdefault(uid, asyncio.Lock())


def _current(uid: str, status: Mapping[str, Any]) -> dict[str, Any]:
    """The status as the next reconcile must see it: what earlier reconciles learnt wins."""
    return {**status, **{k: v for k, v in _learnt.get(uid, {}).items() if v is not None}}


async def _reconcile(
    body: kopf.Body,
    parsed: ClientAppSpec,
    status: Mapping[str, Any],
    patch: kopf.Patch,
    logger: kopf.Logger,
) -> None:
    """Reconcile under the object's lock, remembering what it learnt."""
    uid = body["metadata"]["uid"]
    async with _lock(uid):
        try:
            learnt = await reconcile(
                body=body,
                parsed=parsed,
                current=_current(uid, status),
                generation=body["metadata"].get("generation"),
                patch=patch,
                logger=logger,
            )
            _learnt[uid] = learnt
        finally:
            _last_sync[uid] = time.monotonic()


def _parse_or_record(
    body: kopf.Body, spec: Mapping[str, Any], current: Mapping[str, Any], patch: kopf.Patch
) -> ClientAppSpec:
    try:
        return parse_clientapp_spec(spec)
    except InvalidSpecError as error:
        record_invalid_spec(
            error,
            body=body,
            patch=patch,
            current=current,
            generation=body["metadata"].get("generation"),
            order=conditions.CLIENTAPP_CONDITION_TYPES,
        )
        raise


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
    """Create, update and resume: one idempotent reconcile."""
    parsed = _parse_or_record(body, spec, dict(status), patch)
    await _reconcile(body, parsed, status, patch, logger)
    logger.info(f"ClientApp {meta['namespace']}/{meta['name']}: Ready")


def resync_due(
    current: Mapping[str, Any],
    annotations: Mapping[str, str],
    *,
    last_sync: float | None,
    resync_seconds: float,
    now: datetime | None = None,
) -> bool:
    """Whether the timer should talk to the SSO now: resync period passed, or a rotation due."""
    if last_sync is None or time.monotonic() - last_sync >= resync_seconds:
        return True
    requested = annotations.get(logic.ROTATE_ANNOTATION)
    if requested and requested != current.get("rotationRequest"):
        return True
    next_rotation = logic.parse_time(current.get("nextRotationTime"))
    return next_rotation is not None and next_rotation <= (now or datetime.now(UTC))


@kopf.timer(GROUP, VERSION, PLURAL, interval=TIMER_TICK, initial_delay=TIMER_TICK)
async def resync(
    body: kopf.Body,
    spec: kopf.Spec,
    status: kopf.Status,
    meta: kopf.Meta,
    patch: kopf.Patch,
    logger: kopf.Logger,
    **_: Any,
) -> None:
    """Drift repair and scheduled rotation: compare the CR with the server, fix what differs."""
    uid = meta["uid"]
    current = _current(uid, status)
    generation = meta.get("generation")
    if meta.get("deletionTimestamp") or (
        current.get("phase") == statuses.FAILED and current.get("observedGeneration") == generation
    ):
        return
    due = resync_due(
        current,
        meta.get("annotations", {}),
        last_sync=_last_sync.get(uid),
        resync_seconds=OperatorConfig.from_env().clientapp_resync,
    )
    if not due:
        return
    try:
        parsed = parse_clientapp_spec(spec)
    except InvalidSpecError:
        return  # the change handlers report it
    try:
        await _reconcile(body, parsed, status, patch, logger)
    except (kopf.TemporaryError, kopf.PermanentError) as error:
        # The status already says why; the next tick tries again.
        logger.info(f"resync of ClientApp {meta['namespace']}/{meta['name']}: {error}")


def rotation_requested(body: kopf.Body, **_: Any) -> bool:
    """A new ``sso.dev/rotate-secret`` value that no reconcile has acted on yet."""
    meta = body["metadata"]
    requested = meta.get("annotations", {}).get(logic.ROTATE_ANNOTATION)
    handled = _current(meta["uid"], body.get("status") or {}).get("rotationRequest")
    return bool(requested) and requested != handled and not meta.get("deletionTimestamp")


@kopf.on.event(GROUP, VERSION, PLURAL, when=rotation_requested)
async def rotate_on_request(
    body: kopf.Body,
    spec: kopf.Spec,
    status: kopf.Status,
    patch: kopf.Patch,
    logger: kopf.Logger,
    **_: Any,
) -> None:
    """On-demand rotation as soon as the annotation changes (the timer could be a tick late)."""
    try:
        parsed = parse_clientapp_spec(spec)
        await _reconcile(body, parsed, status, patch, logger)
    except (kopf.TemporaryError, kopf.PermanentError) as error:
        # Event handlers are not retried; the timer tries again on its next tick.
        logger.info(f"rotation of ClientApp {body['metadata']['name']} postponed: {error}")


@kopf.on.delete(GROUP, VERSION, PLURAL)
async def remove(
    spec: kopf.Spec, status: kopf.Status, meta: kopf.Meta, logger: kopf.Logger, **_: Any
) -> None:
    """Delete the app in the SSO (its credentials stop working), then the Secret."""
    uid = meta["uid"]
    async with _lock(uid):
        await unregister(spec=spec, status=status, meta=meta, logger=logger)
    _locks.pop(uid, None)
    _last_sync.pop(uid, None)
    _learnt.pop(uid, None)


@kopf.on.cleanup()
async def close_channels(**_: Any) -> None:
    """Operator shutdown: close the gRPC channels to the instances."""
    await sso_admin.close_channels()
