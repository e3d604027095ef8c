"""Plain records of the account lifecycle: link-token purposes, mails, login history, devices.

Why this module exists: the ports (`sso.domain.ports`), the use cases
(`sso.domain.account`, `sso.domain.history`) and the adapters (`sso.storage`,
`sso.mail`) all speak these types, so they live apart from any of them.
"""

from __future__ import annotations

import enum
import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime


class Purpose(enum.StrEnum):
    """What a one-time account token may be used for (a token serves exactly one)."""

    VERIFY_EMAIL = "verify_email"
    RESET_PASSWORD = "reset_password"  # noqa: S105 (a purpose name)


class MailKind(enum.StrEnum):
    """The mails the service sends; each has a plain-text and an HTML template."""

    VERIFY_EMAIL = "verify_email"
    PASSWORD_RESET = "password_reset"  # noqa: S105 (a template name)
    PASSWORD_CHANGED = "password_changed"  # noqa: S105 (a template name)
    NEW_DEVICE = "new_device"


@dataclass(frozen=True, slots=True)
class Mail:
    """One mail to send: the template, the (stored) recipient, the template's values.

    `values` may hold a link token: adapters must never log them, only `kind`.
    """

    kind: MailKind
    to: str
    values: Mapping[str, str] = field(default_factory=dict)


class LoginResult(enum.StrEnum):
    SUCCESS = "success"
    FAILURE = "failure"
    LOCKED = "locked"
    REFUSED = "refused"


@dataclass(frozen=True, slots=True)
class LoginRecord:
    """One row of a user's login history."""

    user_id: int
    ts: datetime
    result: LoginResult
    ip: str = ""
    user_agent: str = ""
    device_name: str = ""
    app_id: int | None = None
    device_hash: str | None = None
    id: int = 0


@dataclass(frozen=True, slots=True)
class KnownDevice:
    device_hash: str
    user_agent: str
    device_name: str
    first_seen_at: datetime
    last_seen_at: datetime


@dataclass(frozen=True, slots=True)
class AccountTokenInfo:
    """What the export shows of a link token: never the token or its hash."""

    purpose: Purpose
    created_at: datetime
    expires_at: datetime
    used_at: datetime | None


def device_hash(user_agent: str, device_name: str) -> str:
    """A device: the SHA-256 of the user agent and the client-chosen device name.

    Not an identity (both are chosen by the client) but a stable label for
    "the same browser or app install as before", good enough for a notice.
    """
    raw = f"{user_agent}\x00{device_name}".encode("utf-8", "surrogatepass")
    return hashlib.sha256(raw).hexdigest()[:32]
