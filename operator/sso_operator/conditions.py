"""Helpers for ``status.conditions`` lists (the Kubernetes ``metav1.Condition`` shape).

Why this module exists: every reconciler writes conditions, and each must follow
the same rules: one entry per type, ``lastTransitionTime`` changing only when
the status flips, ``observedGeneration`` stamped, and a stable order so that
repeated reconciles produce identical patches (which keeps handlers idempotent
and the resource's history quiet). The functions are pure; callers put the
result into a status patch.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

ConditionStatus = Literal["True", "False", "Unknown"]

READY = "Ready"
DATABASE_READY = "DatabaseReady"
CACHE_READY = "CacheReady"
SERVICE_READY = "ServiceReady"
MIGRATIONS_READY = "MigrationsReady"
KEYS_READY = "KeysReady"
BACKUP_READY = "BackupReady"
INSTANCE_READY = "InstanceReady"
REGISTERED = "Registered"
#: Only present while ``spec.database.importFrom`` is set (the legacy import's Job).
IMPORT_READY = "ImportReady"

#: The condition types of an SSOInstance, in the order they are listed.
INSTANCE_CONDITION_TYPES: tuple[str, ...] = (
    READY,
    DATABASE_READY,
    CACHE_READY,
    SERVICE_READY,
    MIGRATIONS_READY,
    KEYS_READY,
    BACKUP_READY,
    IMPORT_READY,
)
#: The condition types of a ClientApp, in the order they are listed.
CLIENTAPP_CONDITION_TYPES: tuple[str, ...] = (READY, INSTANCE_READY, REGISTERED)


@dataclass(frozen=True)
class Condition:
    """A desired condition, before timestamps are decided."""

    type: str
    status: ConditionStatus
    reason: str
    message: str = ""


def now() -> str:
    """The current time as the RFC 3339 string Kubernetes uses (second precision, UTC)."""
    return datetime.now(UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z")


def find(conditions: Iterable[Mapping[str, Any]] | None, type_: str) -> Mapping[str, Any] | None:
    """The condition of the given type, or None."""
    for condition in conditions or ():
        if condition.get("type") == type_:
            return condition
    return None


def is_true(conditions: Iterable[Mapping[str, Any]] | None, type_: str) -> bool:
    condition = find(conditions, type_)
    return condition is not None and condition.get("status") == "True"


def merge(
    current: Sequence[Mapping[str, Any]] | None,
    desired: Iterable[Condition],
    *,
    generation: int | None,
    timestamp: str | None = None,
    order: Sequence[str] = (),
) -> list[dict[str, Any]]:
    """Return the condition list with ``desired`` applied to ``current``.

    A condition whose status is unchanged keeps its ``lastTransitionTime``; a new
    or flipped one gets ``timestamp`` (default: now). Conditions not mentioned in
    ``desired`` are kept as they are. Types listed in ``order`` come first, in that
    order; the others follow sorted by type, so equal inputs give equal outputs.
    """
    stamp = timestamp or now()
    merged: dict[str, dict[str, Any]] = {
        str(item["type"]): dict(item) for item in current or () if "type" in item
    }
    for condition in desired:
        previous = merged.get(condition.type)
        changed = previous is None or previous.get("status") != condition.status
        entry: dict[str, Any] = {
            "type": condition.type,
            "status": condition.status,
            "reason": condition.reason,
            "message": condition.message,
            "lastTransitionTime": stamp
            if changed or previous is None
            else previous.get("lastTransitionTime", stamp),
        }
        if generation is not None:
            entry["observedGeneration"] = generation
        merged[condition.type] = entry
    rank = {type_: index for index, type_ in enumerate(order)}
    return [merged[key] for key in sorted(merged, key=lambda key: (rank.get(key, len(rank)), key))]
