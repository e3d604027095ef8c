"""kopf handlers of ClientApp.

Why this module exists: like SSOInstance, every ClientApp event goes through one
idempotent :func:`reconcile`. Today it validates the spec and records
``Pending`` while registration through the instance's Admin API is still to
come.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import kopf

from sso_operator import conditions
from sso_operator import status as statuses
from sso_operator.handlers.invalid import record_invalid_spec
from sso_operator.spec import GROUP, VERSION, InvalidSpecError, parse_clientapp_spec

PLURAL = "clientapps"


def reconcile(
    *,
    body: kopf.Body,
    spec: Mapping[str, Any],
    current: Mapping[str, Any],
    name: str,
    namespace: str,
    generation: int | None,
    patch: kopf.Patch,
    logger: kopf.Logger,
) -> None:
    """Bring the status in line with the spec; safe to call any number of times."""
    try:
        parsed = parse_clientapp_spec(spec)
    except InvalidSpecError as error:
        record_invalid_spec(
            error,
            body=body,
            patch=patch,
            current=current,
            generation=generation,
            order=conditions.CLIENTAPP_CONDITION_TYPES,
        )
        raise
    desired = statuses.clientapp_pending(
        parsed, name=name, namespace=namespace, generation=generation, current=current
    )
    patch.status.update(statuses.merge_patch(current, desired))
    logger.info(f"ClientApp {namespace}/{name}: phase {desired['phase']}")


@kopf.on.resume(GROUP, VERSION, PLURAL)
@kopf.on.create(GROUP, VERSION, PLURAL)
@kopf.on.update(GROUP, VERSION, PLURAL)
def apply(
    body: kopf.Body,
    spec: kopf.Spec,
    status: kopf.Status,
    meta: kopf.Meta,
    name: str,
    namespace: str | None,
    patch: kopf.Patch,
    logger: kopf.Logger,
    **_: Any,
) -> None:
    """Create, update and resume of a ClientApp: one idempotent reconcile."""
    reconcile(
        body=body,
        spec=spec,
        current=dict(status),
        name=name,
        namespace=namespace or "default",
        generation=meta.get("generation"),
        patch=patch,
        logger=logger,
    )
