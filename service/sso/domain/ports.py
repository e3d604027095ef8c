"""The interfaces the domain needs from the outside world (hexagonal ports).

`sso.storage` implements the repositories and the denylist (SQLAlchemy Core on
PostgreSQL/SQLite, Redis or in-process); `sso.security` implements hashing and
token signing. The composition root (`sso.app`) wires them. Every method that
touches a backend raises only `sso.errors` classes (`AlreadyExists`,
`Unavailable`, ...), never a driver exception.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any, Protocol

from sso.domain.models import App, NewSession, RotationOutcome, Session, User


class UserRepository(Protocol):
    async def create(self, email: str, password_hash: str, *, is_admin: bool = False) -> User:
        """Insert a user; `AlreadyExists` when the normalised email is taken (atomic)."""

    async def get_by_email(self, email: str) -> User | None: ...

    async def get_by_id(self, user_id: int) -> User | None: ...

    async def update_password_hash(self, user_id: int, password_hash: str) -> None: ...

    async def set_admin(self, user_id: int, is_admin: bool) -> bool:
        """Return False when the user does not exist."""


class AppRepository(Protocol):
    async def create(self, name: str, secret: str) -> App:
        """Store the secret encrypted; `AlreadyExists` when the name is taken."""

    async def get(self, app_id: int) -> App | None: ...

    async def get_by_name(self, name: str) -> App | None: ...

    async def list(self) -> Sequence[App]: ...


class SessionRepository(Protocol):
    async def create(
        self, session: NewSession, refresh_hash: bytes, refresh_expires_at: datetime
    ) -> None:
        """Insert the session and its first refresh token in one transaction."""

    async def rotate(
        self,
        presented_hash: bytes,
        successor_hash: bytes,
        *,
        now: datetime,
        idle_ttl: timedelta,
        grace: timedelta,
    ) -> RotationOutcome:
        """Spend a refresh token and store its successor, atomically.

        In one transaction: mark the presented token used only if it is unused,
        unexpired and its session is live (a compare-and-swap, so of N concurrent
        calls exactly one rotates), insert `successor_hash` expiring at
        min(now + idle_ttl, session.expires_at) and touch the session. Otherwise
        classify: unknown → NOT_FOUND; session revoked → REVOKED; expired (idle or
        absolute) → EXPIRED; spent within `grace` and its successor unspent and
        equal to `successor_hash` → GRACE (nothing written); any other spent
        token → revoke the session (reason "token_reuse") and return REUSED.
        """

    async def get(self, session_id: str) -> Session | None: ...

    async def get_by_refresh(self, refresh_hash: bytes) -> Session | None: ...

    async def list_active(self, user_id: int, now: datetime) -> Sequence[Session]: ...

    async def revoke(
        self, session_id: str, *, user_id: int | None, reason: str, now: datetime
    ) -> Session | None:
        """Revoke one live session (of `user_id` when given); None when nothing matched."""

    async def revoke_all(
        self, user_id: int, *, reason: str, now: datetime, keep: str | None = None
    ) -> Sequence[Session]:
        """Revoke every live session of the user except `keep`; returns those revoked."""

    async def cleanup(self, now: datetime, *, keep_revoked_for: timedelta) -> int:
        """Delete expired sessions and tokens; returns how many rows went."""


class Denylist(Protocol):
    """Session ids whose access tokens must fail validation until they expire."""

    async def add(self, session_id: str, until: datetime) -> None: ...

    async def contains(self, session_id: str) -> bool: ...


class PasswordHasher(Protocol):
    async def hash(self, password: str) -> str: ...

    async def verify(self, password_hash: str, password: str) -> bool:
        """Constant-time check; False for a mismatch or a malformed hash."""

    async def dummy_verify(self, password: str) -> None:
        """Spend the time of a real verify (for unknown users)."""

    def needs_rehash(self, password_hash: str) -> bool: ...


class AccessTokenIssuer(Protocol):
    def issue(self, claims: dict[str, Any], *, ttl: timedelta, now: datetime) -> str:
        """Sign a JWT with the active key; adds iss, iat, nbf, exp, jti; `kid` header."""

    def verify(
        self, token: str, *, audience: str | None, now: datetime | None = None
    ) -> dict[str, Any]:
        """Verify signature and registered claims; raise `TokenError`/`TokenExpired`."""

    def jwks(self) -> dict[str, Any]:
        """The published JWK Set (next, active and retired keys)."""


class SecretCipher(Protocol):
    """Authenticated encryption for secrets kept at rest (app secrets)."""

    def encrypt(self, plaintext: str) -> str: ...

    def decrypt(self, ciphertext: str) -> str:
        """Raise `Unavailable`-free `SSOError` subclasses only; wrong key → `SSOError`."""


class OpaqueTokens(Protocol):
    """Opaque random tokens (refresh tokens, session ids), stored only as hashes."""

    def new_refresh_token(self) -> str: ...

    def hash(self, token: str) -> bytes: ...

    def successor(self, token: str) -> str:
        """The refresh token that replaces `token` on rotation (deterministic, keyed)."""

    def new_session_id(self) -> str: ...


class PasswordRules(Protocol):
    def check(self, password: str, *, context_words: Sequence[str] = ()) -> None:
        """Raise `WeakPassword`/`InvalidArgument` when the password may not be used."""


class LegacyTokens(Protocol):
    """The seed service's HS256 token, signed with the app's secret."""

    def issue(
        self, *, user_id: int, email: str, app_id: int, secret: str, ttl: timedelta, now: datetime
    ) -> str: ...

    def verify(self, token: str, secret: str) -> dict[str, Any]: ...

    def peek(self, token: str) -> dict[str, Any]:
        """Unverified claims (to find the app whose secret verifies the token); {} if malformed."""
