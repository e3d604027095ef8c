"""kopf handlers of an SSOInstance's signing keys: the key-set Secret and its rotation timer.

Why this module exists: the service signs access tokens with the ``active``
key of a key set it reads from a mounted Secret (docs/keys.md); the operator
creates that Secret and rotates it on ``spec.signing.rotationInterval``. Every
decision is made by the pure planner :func:`sso_operator.keys.plan`; this
module reads the Secret, asks the planner, and writes the result back with a
compare-and-swap (``PUT`` with the ``resourceVersion`` it read), so two runs at
once (a change handler and the timer) can never interleave: the loser gets a
409 and is retried. A crash between the Secret write and the status write is
harmless: the next run reads the rotated set, the planner has nothing to do,
and only the status is written.

A person can ask for a rotation now by setting the annotation
``sso.dev/rotate-signing-key`` on the SSOInstance to a new value; the value
handled last is stored on the Secret itself (in the same write as the
rotation), so a request is carried out exactly once.

Writes ``status.keys`` and the ``KeysReady`` condition only.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import kopf

from sso_operator import conditions, keys, kube, names
from sso_operator.conditions import Condition
from sso_operator.handlers.timer_status import write_status
from sso_operator.keys import KeyEntry, KeySetFormatError, Plan, RotationPolicy
from sso_operator.resources.common import Owner, metadata
from sso_operator.spec import GROUP, VERSION, InvalidSpecError, SSOInstanceSpec, parse_instance_spec

PLURAL = "ssoinstances"
COMPONENT = "signing-keys"
TIMER_INTERVAL_S = 60.0
ROTATE_ANNOTATION = "sso.dev/rotate-signing-key"
HANDLED_ANNOTATION = "sso.dev/handled-rotation-request"


def policy_of(spec: SSOInstanceSpec) -> RotationPolicy:
    return RotationPolicy(
        algorithm=spec.signing.algorithm,
        rotation_interval=spec.signing.rotation_interval,
        overlap=spec.signing.overlap,
        access_token_ttl=spec.tokens.access_token_ttl,
    )


def secret_manifest(
    owner: Owner, entries: tuple[KeyEntry, ...], pems: Mapping[str, bytes], handled: str | None
) -> dict[str, Any]:
    """The key-set Secret: keyset.json plus one ``<kid>.pem`` per key (docs/keys.md §1)."""
    annotations = {HANDLED_ANNOTATION: handled} if handled else None
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "type": "Opaque",
        "metadata": metadata(
            owner, names.signing_keys_secret(owner.name), COMPONENT, annotations=annotations
        ),
        "data": keys.secret_data(entries, pems),
    }


@dataclass(frozen=True)
class KeysResult:
    """What one run saw and did; ``error`` is set when the Secret cannot be used."""

    plan: Plan | None
    wrote: bool = False
    error: str | None = None


async def reconcile_keys(
    body: Mapping[str, Any],
    spec: SSOInstanceSpec,
    *,
    now: datetime | None = None,
    after_write: Callable[[], None] | None = None,
) -> KeysResult:
    """Read the Secret, plan, write the Secret if the plan changed anything.

    ``after_write`` runs right after a successful Secret write (tests use it
    to crash the operator at the worst moment).
    """
    owner = Owner.from_body(body)
    when = now or datetime.now(UTC)
    secret_name = names.signing_keys_secret(owner.name)
    existing = await kube.get("v1", "Secret", owner.namespace, secret_name)
    entries: tuple[KeyEntry, ...] = ()
    pems: dict[str, bytes] = {}
    handled: str | None = None
    if existing is not None:
        try:
            entries, pems = keys.read_secret_data(existing.get("data"))
        except KeySetFormatError as error:
            return KeysResult(plan=None, error=f"Secret {secret_name}: {error}")
        handled = (existing["metadata"].get("annotations") or {}).get(HANDLED_ANNOTATION)
    request = ((body.get("metadata") or {}).get("annotations") or {}).get(ROTATE_ANNOTATION)
    rotate_now = bool(request) and request != handled
    result = keys.plan(entries, when, policy_of(spec), rotate_now=rotate_now)
    if existing is not None and not result.changed and not rotate_now:
        return KeysResult(plan=result)
    new_pems = {
        entry.kid: pems.get(entry.kid) or keys.generate_private_key_pem(entry.alg)
        for entry in result.keys
    }
    manifest = secret_manifest(owner, result.keys, new_pems, request if rotate_now else handled)
    if existing is None:
        if await kube.create(manifest) is None:
            raise kopf.TemporaryError(
                f"Secret {secret_name} appeared meanwhile; re-reading", delay=1
            )
    else:
        version = existing["metadata"]["resourceVersion"]
        await kube.replace(
            {**manifest, "metadata": {**manifest["metadata"], "resourceVersion": version}}
        )
    if after_write is not None:
        after_write()
    return KeysResult(plan=result, wrote=True)


def status_of(spec: SSOInstanceSpec, name: str, result: KeysResult) -> dict[str, Any]:
    document: dict[str, Any] = {"secretName": names.signing_keys_secret(name)}
    plan = result.plan
    if plan is None:
        return document
    active, upcoming = plan.active, plan.next
    document.update(
        algorithm=active.alg,
        activeKeyId=active.kid,
        nextKeyId=upcoming.kid if upcoming else None,
        lastRotationTime=keys.format_ts(active.activated_at or active.created_at),
        nextRotationTime=keys.format_ts(plan.next_rotation) if plan.next_rotation else None,
        retiredKeyIds=sorted(k.kid for k in plan.keys if k.state == "retired"),
    )
    return document


def condition_of(result: KeysResult) -> Condition:
    if result.error is not None or result.plan is None:
        message = f"{result.error}; fix or delete the Secret (a new key set is then created)"
        return Condition(conditions.KEYS_READY, "False", "KeySetInvalid", message)
    plan = result.plan
    upcoming = plan.next.kid if plan.next else "none"
    when = keys.format_ts(plan.next_rotation) if plan.next_rotation else "unknown"
    message = (
        f"active key {plan.active.kid} ({plan.active.alg}), next {upcoming}, "
        f"{len(plan.keys)} published; next rotation at {when}"
    )
    return Condition(conditions.KEYS_READY, "True", "KeysActive", message)


async def record(
    body: kopf.Body,
    spec: SSOInstanceSpec,
    result: KeysResult,
    logger: kopf.Logger,
) -> None:
    """Status, condition and Events of one run."""
    name = body["metadata"]["name"]
    await write_status(body, "keys", status_of(spec, name, result), condition_of(result))
    if result.error is not None:
        kopf.warn(body, reason="KeySetInvalid", message=result.error)
        return
    plan = result.plan
    if plan is None or not result.wrote:
        return
    for note in plan.repairs:
        kopf.warn(body, reason="KeySetRepaired", message=note)
    if plan.activated and plan.retired:
        message = f"Signing key {plan.activated} is active; {', '.join(plan.retired)} retired"
        kopf.info(body, reason="KeyRotated", message=message)
    elif plan.activated:
        kopf.info(body, reason="KeyCreated", message=f"Signing key {plan.activated} is active")
    for kid in plan.created:
        if kid != plan.activated:
            kopf.info(body, reason="KeyCreated", message=f"Signing key {kid} published as next")
    for kid in plan.removed:
        kopf.info(body, reason="RetiredKeyRemoved", message=f"Signing key {kid} unpublished")
    logger.info(f"signing keys of {name}: active {plan.active.kid}, {len(plan.keys)} published")


async def run(body: kopf.Body, logger: kopf.Logger) -> None:
    try:
        spec = parse_instance_spec(body.get("spec") or {})
    except InvalidSpecError:
        return  # the main handler records the invalid spec
    result = await reconcile_keys(body, spec)
    await record(body, spec, result, logger)


@kopf.on.resume(GROUP, VERSION, PLURAL, id="signing-keys")
@kopf.on.create(GROUP, VERSION, PLURAL, id="signing-keys")
@kopf.on.update(GROUP, VERSION, PLURAL, id="signing-keys")
async def apply(body: kopf.Body, logger: kopf.Logger, **_: Any) -> None:
    """Create the key set, or adapt it to a changed spec (algorithm, intervals)."""
    await run(body, logger)


@kopf.timer(GROUP, VERSION, PLURAL, id="signing-keys-rotation", interval=TIMER_INTERVAL_S)
async def rotate(body: kopf.Body, logger: kopf.Logger, **_: Any) -> None:
    """Rotate when due, remove retired keys when their time is up, keep the status current."""
    await run(body, logger)
