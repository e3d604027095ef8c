"""What every handler does with a spec it cannot use: record it once, then fail permanently.

Why this module exists: SSOInstance and ClientApp react to an invalid spec the
same way (status `Failed` with the message, one Warning event per generation,
the `InvalidSpecError` re-raised for kopf); one function keeps them identical.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import kopf

from sso_operator import status as statuses


def record_invalid_spec(
    error: Exception,
    *,
    body: kopf.Body,
    patch: kopf.Patch,
    current: Mapping[str, Any],
    generation: int | None,
    order: tuple[str, ...],
) -> None:
    """Write status `Failed`; post the Warning only when this generation is news."""
    desired = statuses.failed(str(error), generation=generation, current=current, order=order)
    patch.status.update(statuses.merge_patch(current, desired))
    if current.get("phase") != statuses.FAILED or current.get("observedGeneration") != generation:
        kopf.warn(body, reason="InvalidSpec", message=str(error))
