"""kopf handlers of SSOInstance.

Why this module exists: it is the seam between kopf and the reconciler. Create,
update and resume all call one idempotent :func:`reconcile`, because kopf may
re-run any handler after a crash and a resumed operator must converge on the
same state as one that saw every event. Today the reconciler validates the spec
and records ``Pending`` (or ``Failed`` for a spec the operator cannot use);
provisioning plugs in here later.

Retries: a spec the operator cannot use raises ``kopf.PermanentError`` and is
not retried until the spec changes; API trouble raises ``kopf.TemporaryError``
with a delay fitting the cause (:mod:`sso_operator.kube`); anything unexpected
is retried after ``SSO_OPERATOR_BACKOFF`` seconds. There is deliberately no
retry limit: a level-based reconcile that gave up would leave the instance
stuck after an outage until someone edited it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import kopf

from sso_operator import conditions
from sso_operator import status as statuses
from sso_operator.handlers.invalid import record_invalid_spec
from sso_operator.spec import GROUP, VERSION, InvalidSpecError, parse_instance_spec

PLURAL = "ssoinstances"


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
    """Bring the status in line with the spec; safe to call any number of times.

    Raises :class:`~sso_operator.spec.InvalidSpecError` (a ``kopf.PermanentError``)
    after recording phase ``Failed`` when the spec is unusable.
    """
    try:
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
    desired = statuses.instance_pending(
        parsed, name=name, namespace=namespace, generation=generation, current=current
    )
    patch.status.update(statuses.merge_patch(current, desired))
    if current.get("phase") != desired["phase"]:
        kopf.info(
            body,
            reason="Validated",
            message=f"Spec is valid; phase {desired['phase']}, provisioning pending",
        )
    logger.info(f"SSOInstance {namespace}/{name}: phase {desired['phase']}")


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
    """Create, update and resume of an SSOInstance: one idempotent reconcile."""
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
