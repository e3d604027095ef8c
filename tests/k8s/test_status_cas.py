"""Concurrent condition writers on one SSOInstance, against the real apiserver.

``status.conditions`` is one list; the reconciler owns most entries, the key
timer ``KeysReady`` and the backup timer ``BackupReady``, and they run at the
same time. A merge patch replaces the whole list, so a writer that merges its
entry into the list as its (older) copy of the object had it puts back the
other writers' old entries, or drops entries that appeared since. The first
test shows that loss with plain merge patches; the second runs the same writers
through ``kube.update_status`` (a compare-and-swap on ``resourceVersion``, what
the handlers use) and loses nothing; the timers' writers also write their own
status field in the same swap, and the field left always matches the condition
left (a reader never sees ``KeysReady`` without the ``status.keys`` it describes).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from typing import Any

from operator_support import get_or_none

from sso_operator import conditions, kube
from sso_operator.conditions import Condition
from sso_operator.handlers import timer_status

API = "sso.dev/v1alpha1"
TYPES = (conditions.DATABASE_READY, conditions.KEYS_READY, conditions.BACKUP_READY)
WRITERS_PER_TYPE = 2  # e.g. a timer and a change handler
WRITES = 20  # each writer, one after the other (a handler never races itself)
# The status field each timer owns, and a string property of it the CRD keeps.
FIELDS = {
    conditions.KEYS_READY: ("keys", "activeKeyId"),
    conditions.BACKUP_READY: ("backup", "lastBackupFile"),
}

INSTANCE = """
apiVersion: sso.dev/v1alpha1
kind: SSOInstance
metadata:
  name: sso
spec: {}
"""


def _condition(type_: str, writer: int, n: int) -> Condition:
    return Condition(type_, "True", "Written", f"writer {writer} write {n}")


async def _run(writers: list[Callable[[], Awaitable[None]]]) -> list[BaseException]:
    kube._state.pop("session", None)  # a session of another test's event loop
    try:
        results = await asyncio.gather(*(w() for w in writers), return_exceptions=True)
        return [r for r in results if isinstance(r, BaseException)]
    finally:
        session = kube._state.pop("session", None)
        if session is not None:
            await session.close()


def _final(kube_cluster: Any, namespace: str) -> dict[str, str]:
    obj = get_or_none(kube_cluster, "ssoi", "sso", namespace)
    return {c["type"]: c["message"] for c in (obj.get("status") or {}).get("conditions") or []}


def test_plain_merge_patches_from_a_stale_copy_lose_entries(
    kube_cluster: Any, namespace: str
) -> None:
    """The fault the compare-and-swap exists for, produced for real (no mock)."""
    kube_cluster.apply(INSTANCE, namespace)
    stale = get_or_none(kube_cluster, "ssoi", "sso", namespace)

    def writer(type_: str, index: int) -> Callable[[], Awaitable[None]]:
        async def run() -> None:
            for n in range(WRITES):
                merged = conditions.merge(
                    (stale.get("status") or {}).get("conditions"),
                    [_condition(type_, index, n)],
                    generation=1,
                )
                await kube.request(
                    "PATCH",
                    f"/apis/{API}/namespaces/{namespace}/ssoinstances/sso/status",
                    body={"status": {"conditions": merged}},
                    content_type="application/merge-patch+json",
                )

        return run

    errors = asyncio.run(_run([writer(t, i) for t in TYPES for i in range(WRITERS_PER_TYPE)]))
    assert errors == []
    # Every writer started from the same copy, so the last one's list is all that is left.
    assert len(_final(kube_cluster, namespace)) == 1


def test_compare_and_swap_writers_keep_every_entry(kube_cluster: Any, namespace: str) -> None:
    kube_cluster.apply(INSTANCE, namespace)
    body = get_or_none(kube_cluster, "ssoi", "sso", namespace)
    written: dict[str, list[str]] = {t: [] for t in TYPES}

    def writer(type_: str, index: int) -> Callable[[], Awaitable[None]]:
        async def run() -> None:
            for n in range(WRITES):
                wanted = _condition(type_, index, n)
                # The timers' path (keys and backups): their field and condition ...
                if type_ in FIELDS:
                    field, key = FIELDS[type_]
                    await timer_status.write_status(body, field, {key: wanted.message}, wanted)
                else:  # ... and the reconciler's: kube.update_status with its own merge
                    await kube.update_status(
                        API,
                        "SSOInstance",
                        namespace,
                        "sso",
                        lambda status, c=wanted: {
                            "conditions": conditions.merge(
                                status.get("conditions"), [c], generation=1
                            )
                        },
                    )
                written[type_].append(wanted.message)

        return run

    errors = asyncio.run(_run([writer(t, i) for t in TYPES for i in range(WRITERS_PER_TYPE)]))
    assert errors == []
    final = _final(kube_cluster, namespace)
    assert set(final) == set(TYPES), json.dumps(final)
    for type_ in TYPES:
        assert len(written[type_]) == WRITERS_PER_TYPE * WRITES
        # The entry left is the last write of one of that type's writers.
        lasts = {f"writer {i} write {WRITES - 1}" for i in range(WRITERS_PER_TYPE)}
        assert final[type_] in lasts, (type_, final[type_])
    status = get_or_none(kube_cluster, "ssoi", "sso", namespace)["status"]
    for type_, (field, key) in FIELDS.items():
        assert status[field] == {key: final[type_]}, (status[field], final[type_])
