"""Plain records the domain works with, independent of any storage or wire format.

Timestamps are timezone-aware UTC datetimes everywhere.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import datetime


@dataclass(frozen=True, slots=True)
class User:
    id: int
    email: str
    password_hash: str
    is_admin: bool
    email_verified: bool
    created_at: datetime
    # Access tokens issued before this instant are rejected (password change, admin action).
    tokens_valid_after: datetime | None = None


@dataclass(frozen=True, slots=True)
class App:
    id: int
    name: str
    # Decrypted secret; signs the legacy HS256 tokens. Never logged, never returned after creation.
    secret: str
    created_at: datetime
    # Admin API (docs/admin.md): after RotateAppSecret the previous secret also works
    # until `previous_secret_expires_at`.
    previous_secret: str | None = None
    previous_secret_expires_at: datetime | None = None
    # Logins per minute for this app; 0 = no per-app limit.
    login_rate_limit_per_minute: int = 0

    def secrets_at(self, now: datetime) -> tuple[str, ...]:
        """The secrets that authenticate this app at `now`: current first, then the previous."""
        expires = self.previous_secret_expires_at
        if self.previous_secret and expires is not None and now < expires:
            return (self.secret, self.previous_secret)
        return (self.secret,)


@dataclass(frozen=True, slots=True)
class Session:
    id: str
    user_id: int
    app_id: int
    user_agent: str
    ip: str
    device_name: str
    created_at: datetime
    last_used_at: datetime
    # Absolute end of the session, whatever the refresh activity.
    expires_at: datetime
    revoked_at: datetime | None = None
    revoke_reason: str | None = None
    # How the login that opened it authenticated (the access tokens' `amr`).
    amr: tuple[str, ...] = ("pwd",)


@dataclass(frozen=True, slots=True)
class NewSession:
    id: str
    user_id: int
    app_id: int
    user_agent: str
    ip: str
    device_name: str
    created_at: datetime
    expires_at: datetime
    amr: tuple[str, ...] = ("pwd",)


class RotationStatus(enum.Enum):
    ROTATED = "rotated"  # the presented token was current; the successor is now stored
    GRACE = "grace"  # immediate retry of the previous token: the same successor stands
    REUSED = "reused"  # an older token came back: the whole family was revoked
    NOT_FOUND = "not_found"
    EXPIRED = "expired"  # idle or absolute lifetime over
    REVOKED = "revoked"  # the session was revoked before


@dataclass(frozen=True, slots=True)
class RotationOutcome:
    status: RotationStatus
    session: Session | None = None
    # For ROTATED and GRACE: when the successor refresh token expires if unused.
    successor_expires_at: datetime | None = None
    # For ROTATED and GRACE: the session's user, read by the rotation itself (None when
    # the user is gone, or the repository does not provide it: then ask `UserRepository`).
    user: User | None = None
