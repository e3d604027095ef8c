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
from sso_operator.spec import ClientAppSpec

PENDING = "Pending"
FAILED = "Failed"
# The SSOInstance's provisioned status (phases Provisioning, Ready, Degraded) is
# computed from its children in sso_operator.reconcile.readiness.


def _current_conditions(status: Mapping[str, Any] | None) -> list[Mapping[str, Any]]:
    raw = (status or {}).get("conditions") or []
    return [item for item in raw if isinstance(item, Mapping)]


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
            conditions.REGISTERED, "Unknown", "Pending", "Not registered with the instance yet"
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


REGISTERING = "Registering"
READY = "Ready"

#: Status fields of a ClientApp that describe its registration; kept while it waits.
CLIENTAPP_CARRIED = (
    "appId",
    "endpoint",
    "issuer",
    "lastRotationTime",
    "nextRotationTime",
    "rotationRequest",
)


def clientapp_status(
    *,
    phase: str,
    wanted: list[Condition],
    instance: str,
    secret_name: str,
    generation: int | None,
    current: Mapping[str, Any] | None,
    fields: Mapping[str, Any] | None = None,
    timestamp: str | None = None,
) -> dict[str, Any]:
    """A ClientApp's status: ``fields`` (appId, endpoint, rotation times…) over the carried ones.

    What the operator learnt about the registration (:data:`CLIENTAPP_CARRIED`)
    stays in the status unless ``fields`` replaces it, so a ClientApp that waits
    for its instance still shows its app id; a None in ``fields`` removes a field.
    """
    document: dict[str, Any] = {
        key: (current or {}).get(key)
        for key in CLIENTAPP_CARRIED
        if (current or {}).get(key) is not None
    }
    for key, value in (fields or {}).items():
        if value is None:
            document.pop(key, None)
        else:
            document[key] = value
    document.update(
        {
            "observedGeneration": generation,
            "phase": phase,
            "conditions": conditions.merge(
                _current_conditions(current),
                wanted,
                generation=generation,
                timestamp=timestamp,
                order=conditions.CLIENTAPP_CONDITION_TYPES,
            ),
            "instance": instance,
            "secretName": secret_name,
        }
    )
    return document


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
