"""The interfaces the domain needs from the outside world (hexagonal ports).

`sso.storage` implements the repositories and the denylist (SQLAlchemy Core on
PostgreSQL/SQLite, Redis or in-process); `sso.security` implements hashing and
token signing. The composition root (`sso.app`) wires them. Every method that
touches a backend raises only `sso.errors` classes (`AlreadyExists`,
`Unavailable`, ...), never a driver exception.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Protocol

from sso.domain.account_models import (
    AccountTokenInfo,
    KnownDevice,
    LoginRecord,
    Mail,
    Purpose,
)
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


# -- account lifecycle (email verification, password reset, history) -----------------


class AccountTokenRepository(Protocol):
    """One-time link tokens (stored as SHA-256 only) and the account writes they unlock."""

    async def issue(
        self,
        user_id: int,
        purpose: Purpose,
        token_hash: bytes,
        *,
        now: datetime,
        expires_at: datetime,
        max_per_hour: int,
    ) -> bool:
        """Store a token and supersede the user's older unused ones of `purpose`, atomically;
        store nothing and return False when `max_per_hour` were issued in the last hour."""

    async def peek(self, token_hash: bytes, purpose: Purpose, now: datetime) -> int | None:
        """The user of a live (unused, unexpired) token of `purpose`; nothing is spent."""

    async def verify_email(self, token_hash: bytes, now: datetime) -> int | None:
        """Spend a live verification token and mark its user verified; None: not live."""

    async def reset_password(
        self, token_hash: bytes, now: datetime, password_hash: str
    ) -> int | None:
        """Spend a live reset token (compare-and-swap: one winner), set the password, void
        the user's other reset tokens and lift any lockout, in one transaction."""

    async def change_password(self, user_id: int, password_hash: str, now: datetime) -> None:
        """Set the password and void the user's unused reset tokens, in one transaction."""

    async def list_for_user(self, user_id: int) -> Sequence[AccountTokenInfo]: ...

    async def cleanup(self, now: datetime) -> int:
        """Delete expired tokens; returns how many."""


class LoginHistoryRepository(Protocol):
    async def record(self, entry: LoginRecord) -> None: ...

    async def page(
        self, user_id: int, *, before_id: int | None, limit: int
    ) -> Sequence[LoginRecord]:
        """Newest first; only rows with id < `before_id` when given."""

    async def record_success(self, entry: LoginRecord) -> tuple[bool, int]:
        """Record a successful login and the device it came from (`entry.device_hash`):
        (was the device new, how many devices were known before)."""

    async def devices(self, user_id: int) -> Sequence[KnownDevice]: ...


class Mailer(Protocol):
    """Hands a mail to the outgoing queue without waiting for delivery."""

    def submit(self, mail: Mail) -> bool:
        """Queue `mail`; False when it was dropped (queue full, mail disabled)."""


# -- two-factor (sso.domain.two_factor; adapters sso.security.totp, sso.storage.two_factor) --


@dataclass(frozen=True, slots=True)
class TotpState:
    """A user's TOTP row: sealed secrets only, never a plaintext one."""

    user_id: int
    enabled: bool
    secret_sealed: str | None
    enabled_at: datetime | None
    last_used_step: int | None
    failed_attempts: int
    pending_sealed: str | None
    pending_expires_at: datetime | None


@dataclass(frozen=True, slots=True)
class MfaChallengeRecord:
    """A login waiting for its second factor (the id itself is stored only hashed)."""

    id_hash: bytes
    user_id: int
    app_id: int
    user_agent: str
    ip: str
    device_name: str
    created_at: datetime
    expires_at: datetime
    attempts: int = 0


@dataclass(frozen=True, slots=True)
class MfaChallengeIssued:
    """What Login returns instead of tokens for an account with a second factor."""

    challenge_id: str
    methods: tuple[str, ...]
    expires_in: int
    user_id: int


class SecondFactorGate(Protocol):
    """What `AuthService` asks after a password verified (implemented by TwoFactorService)."""

    async def challenge(
        self, user: User, app_id: int, *, ip: str, user_agent: str, device_name: str
    ) -> MfaChallengeIssued | None:
        """A challenge when the user has a second factor, None when the password suffices."""

    async def enabled(self, user_id: int) -> bool: ...

    async def refuse_single_factor(self, user: User, *, api: str) -> None:
        """Raise `MfaRequired` when the user has a second factor (for the seed API)."""


class SecondFactorCrypto(Protocol):
    """TOTP and backup-code cryptography (`sso.security.totp.TotpAuthenticator`)."""

    def new_secret(self) -> bytes: ...

    def seal(self, user_id: int, secret: bytes) -> str: ...

    def open(self, user_id: int, sealed: str) -> bytes: ...

    def provisioning(self, secret: bytes, account: str) -> tuple[str, str, bytes]:
        """(base32 secret, otpauth:// URI, QR code PNG)."""

    def parse_code(self, text: str) -> str | None:
        """Exactly six ASCII digits, else None."""

    def step(self, now: datetime) -> int: ...

    def match(
        self, secret: bytes, code: str, *, step: int, window: int, after: int | None
    ) -> int | None:
        """The matching step within ±window and after `after`, else None (runs the HMACs)."""

    def new_backup_codes(self, count: int) -> list[str]: ...

    def parse_backup_code(self, text: str) -> str | None: ...

    def hash_backup_code(self, normalised: str) -> bytes: ...

    def hash_backup_codes(self, codes: Sequence[str]) -> list[bytes]: ...


class TwoFactorRepository(Protocol):
    """TOTP rows, backup codes and MFA challenges; every check-and-set is one CAS."""

    async def get(self, user_id: int) -> TotpState | None: ...

    async def start_enrollment(
        self, user_id: int, pending_sealed: str, *, expires_at: datetime, now: datetime
    ) -> bool:
        """Store a pending secret unless TOTP is enabled (False then)."""

    async def activate(
        self,
        user_id: int,
        pending_sealed: str,
        *,
        step: int,
        code_hashes: Sequence[bytes],
        now: datetime,
    ) -> bool:
        """Make exactly this pending secret active (CAS), step used, new backup codes."""

    async def disable(self, user_id: int) -> bool:
        """Delete the TOTP row, the backup codes and open challenges; False when none."""

    async def reserve_attempt(self, user_id: int, *, cap: int) -> bool:
        """Count a code attempt before checking it; False once `cap` failures are counted."""

    async def spend_step(self, user_id: int, step: int) -> bool:
        """CAS: last_used_step := step only if it was lower; clears the failure count."""

    async def clear_failures(self, user_id: int) -> None: ...

    async def use_backup_code(self, user_id: int, code_hash: bytes, *, now: datetime) -> bool:
        """CAS: mark one unused code of the user used; False when none matched."""

    async def replace_backup_codes(
        self, user_id: int, code_hashes: Sequence[bytes], *, now: datetime
    ) -> bool:
        """Void the old set and store the new one (TOTP enabled only); one transaction."""

    async def backup_codes_left(self, user_id: int) -> int: ...

    async def create_challenge(self, challenge: MfaChallengeRecord) -> None:
        """Insert a challenge (and drop the user's expired ones)."""

    async def reserve_challenge(
        self, id_hash: bytes, *, now: datetime, cap: int
    ) -> MfaChallengeRecord | None:
        """Count one attempt on a live challenge with attempts < cap; None otherwise."""

    async def consume_challenge(self, id_hash: bytes, *, now: datetime) -> bool:
        """CAS: mark the challenge used; False when it was used (or gone) already."""

    async def cleanup(self, now: datetime) -> int:
        """Delete used and expired challenges; returns how many went."""
