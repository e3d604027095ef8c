"""One status field and its condition, written together by one compare-and-swap.

Why this module exists: the key and backup timers each own one status field
(``status.keys``, ``status.backup``) and one condition (``KeysReady``,
``BackupReady``). The condition list is shared with the reconciler, so it is
written with a compare-and-swap against the freshest copy (kube.update_status).
The field must go in that same write: written apart (the field through kopf's
patch after the handler returns), a reader could see ``KeysReady=True`` while
``status.keys`` was still missing, which a test against a real API server did.
Timers run every minute; an unchanged status is not written, nor even re-read.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from sso_operator import conditions, kube
from sso_operator import status as statuses
from sso_operator.conditions import Condition
from sso_operator.spec import GROUP, VERSION


def status_change(
    status: Mapping[str, Any],
    field: str,
    desired: Mapping[str, Any],
    condition: Condition,
    generation: int | None,
) -> dict[str, Any] | None:
    """The merge patch that brings ``status`` to ``desired`` and ``condition``; None if none.

    ``desired`` values that are None are left out; keys the current field has and
    ``desired`` lacks are deleted (status.merge_patch). The condition is merged into
    the whole current list, which a merge patch replaces as one value; the list is
    written only when the merge changed it (as the reconciler's readiness.changes).
    """
    current = status.get(field) or {}
    wanted = {key: value for key, value in desired.items() if value is not None}
    change: dict[str, Any] = {}
    if dict(current) != wanted:
        change[field] = statuses.merge_patch(current, wanted)
    found = status.get("conditions")
    merged = conditions.merge(
        found, [condition], generation=generation, order=conditions.INSTANCE_CONDITION_TYPES
    )
    if merged != found:
        change["conditions"] = merged
    return change or None


async def write_status(
    body: Mapping[str, Any], field: str, desired: Mapping[str, Any], condition: Condition
) -> None:
    """Write ``status.<field>`` and ``condition`` in one compare-and-swap.

    No request at all when the body already shows both.
    """
    meta = body["metadata"]
    generation = meta.get("generation")
    if status_change(body.get("status") or {}, field, desired, condition, generation) is None:
        return
    await kube.update_status(
        f"{GROUP}/{VERSION}",
        "SSOInstance",
        meta["namespace"],
        meta["name"],
        lambda status: status_change(status, field, desired, condition, generation),
    )
