"""The relational schema, declared once with SQLAlchemy Core.

Repositories build their statements from these `Table` objects and Alembic
compares migrations against `metadata`, so the schema has one source of truth
(`tests/storage` checks that autogenerate finds no difference on both
backends). Core rather than the ORM: the hot paths (login, refresh) measured
about 4x cheaper without it (PERFORMANCE_NOTES.md).

Every timestamp column is `UtcDateTime`: timezone-aware UTC datetimes go in and
come out on PostgreSQL (`timestamptz`) and on SQLite (stored as naive UTC text
in a fixed-width format, so text comparison is chronological).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    Column,
    DateTime,
    Dialect,
    ForeignKey,
    Identity,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    Table,
    Text,
    false,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.types import JSON, TypeDecorator

# Constraint names are part of the schema: stable names let later migrations
# drop or alter them on both backends (SQLite needs names for batch mode).
NAMING_CONVENTION: dict[str, str] = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

metadata = MetaData(naming_convention=NAMING_CONVENTION)

# int64 ids on PostgreSQL; plain INTEGER on SQLite so the column aliases the rowid
# (SQLite only autoincrements `INTEGER PRIMARY KEY`; it is 64-bit anyway).
BigId = BigInteger().with_variant(Integer(), "sqlite")

# Refresh tokens are stored as their SHA-256 digest only (SECURITY_CHECKLIST E7).
TOKEN_HASH_BYTES = 32


class UtcDateTime(TypeDecorator[datetime]):
    """A timestamp that is always timezone-aware UTC on the Python side.

    Naive datetimes are refused on the way in (they are a bug: whose local
    time?); aware ones are converted to UTC. SQLite has no time zone type, so
    values are stored naive-UTC there and get `tzinfo=UTC` back on the way out.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None or value.utcoffset() is None:
            raise ValueError("naive datetime given where an aware UTC datetime is required")
        value = value.astimezone(UTC)
        if dialect.name == "sqlite":
            return value.replace(tzinfo=None)
        return value

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        parsed: datetime = (
            value if isinstance(value, datetime) else datetime.fromisoformat(str(value))
        )
        if parsed.tzinfo is None:
            return parsed.replace(tzinfo=UTC)
        return parsed.astimezone(UTC)


users = Table(
    "users",
    metadata,
    Column("id", BigId, Identity(), primary_key=True),
    # Normalised by the domain before it gets here; unique by the index below (K6).
    Column("email", Text(), nullable=False),
    Column("password_hash", Text(), nullable=False),
    Column("is_admin", Boolean(), nullable=False, server_default=false()),
    Column("email_verified", Boolean(), nullable=False, server_default=false()),
    Column("created_at", UtcDateTime(), nullable=False),
    Column("updated_at", UtcDateTime(), nullable=False),
    # Access tokens issued before this instant are rejected.
    Column("tokens_valid_after", UtcDateTime(), nullable=True),
    # Lockout (C2/C3): consecutive failures, counted before the password is checked.
    Column("failed_logins", Integer(), nullable=False, server_default=text("0")),
    # The previous failure; one more than `failure_reset` later counts as the first.
    Column("last_failed_at", UtcDateTime(), nullable=True),
    # No login is even checked before this instant.
    Column("locked_until", UtcDateTime(), nullable=True),
    # Set at the hard limit (100 failures): only a password reset or an admin unlock clears it.
    Column("hard_locked", Boolean(), nullable=False, server_default=false()),
    # Administrative lock (sso.v1.Admin/LockUser): no login until UnlockUser (migration 0005).
    Column("admin_locked", Boolean(), nullable=False, server_default=false()),
    Index(None, "email", unique=True),
    # SQLite: never reuse a deleted user's id (migration 0005).
    sqlite_autoincrement=True,
)

apps = Table(
    "apps",
    metadata,
    # int32: the legacy auth.Auth API carries app_id as int32.
    Column("id", Integer(), Identity(), primary_key=True),
    Column("name", Text(), nullable=False),
    # Encrypted by sso.security.secretbox (through the SecretCipher port); never plaintext.
    Column("secret_encrypted", Text(), nullable=False),
    Column("created_at", UtcDateTime(), nullable=False),
    # Admin API (migration 0005): metadata, per-app login limit, secret rotation overlap.
    Column("display_name", Text(), nullable=True),
    # A JSON list of strings, as text.
    Column("redirect_uris", Text(), nullable=True),
    # Logins per minute for this app; 0 = no per-app limit.
    Column("login_rate_limit_per_minute", Integer(), nullable=False, server_default=text("0")),
    # The secret before the last rotation (encrypted like the current one) and its end.
    Column("previous_secret_encrypted", Text(), nullable=True),
    Column("previous_secret_expires_at", UtcDateTime(), nullable=True),
    Column("updated_at", UtcDateTime(), nullable=True),
    Column("secret_rotated_at", UtcDateTime(), nullable=True),
    Index(None, "name", unique=True),
    # SQLite: never reuse a deleted app's id (migration 0005).
    sqlite_autoincrement=True,
)

sessions = Table(
    "sessions",
    metadata,
    # Random id chosen by the caller (it also goes into access tokens as `sid`).
    Column("id", Text(), primary_key=True),
    Column("user_id", BigId, ForeignKey("users.id", ondelete="CASCADE"), nullable=False),
    Column("app_id", Integer(), ForeignKey("apps.id"), nullable=False),
    Column("user_agent", Text(), nullable=False),
    Column("ip", Text(), nullable=False),
    Column("device_name", Text(), nullable=False),
    Column("created_at", UtcDateTime(), nullable=False),
    Column("last_used_at", UtcDateTime(), nullable=False),
    # Absolute end of the session, whatever the refresh activity (E4).
    Column("expires_at", UtcDateTime(), nullable=False),
    Column("revoked_at", UtcDateTime(), nullable=True),
    Column("revoke_reason", Text(), nullable=True),
    # How the login that opened the session authenticated (space-separated `amr`
    # methods): Refresh copies it into every new access token.
    Column("amr", Text(), nullable=False, server_default=text("'pwd'")),
    # Listing, revoke-all and the ON DELETE CASCADE from users all go by user.
    Index(None, "user_id"),
    # cleanup(): sessions past their absolute expiry, and revoked ones past retention
    # (partial: live sessions, the vast majority, stay out of that index).
    Index(None, "expires_at"),
    Index(
        None,
        "revoked_at",
        postgresql_where=text("revoked_at IS NOT NULL"),
        sqlite_where=text("revoked_at IS NOT NULL"),
    ),
)

refresh_tokens = Table(
    "refresh_tokens",
    metadata,
    Column("id", BigId, Identity(), primary_key=True),
    Column("token_hash", LargeBinary(TOKEN_HASH_BYTES), nullable=False),
    Column(
        "session_id",
        Text(),
        ForeignKey("sessions.id", ondelete="CASCADE"),
        nullable=False,
    ),
    Column("created_at", UtcDateTime(), nullable=False),
    # min(issued + idle TTL, session.expires_at).
    Column("expires_at", UtcDateTime(), nullable=False),
    # Set once, by the compare-and-swap in SqlSessionRepository.rotate().
    Column("used_at", UtcDateTime(), nullable=True),
    # Id of the successor row; no FK so cleanup can delete rows in any order.
    Column("replaced_by", BigId, nullable=True),
    # length() counts bytes for bytea (PostgreSQL) and blobs (SQLite).
    CheckConstraint(f"length(token_hash) = {TOKEN_HASH_BYTES}", name="token_hash_length"),
    Index(None, "token_hash", unique=True),
    Index(None, "session_id"),
    Index(None, "expires_at"),
)

# Append-only security history (SECURITY_CHECKLIST H2, I3): one row per decision,
# named after the OWASP logging vocabulary. Triggers created by migration 0002
# refuse UPDATE, DELETE (and TRUNCATE on PostgreSQL) whoever the role.
audit_events = Table(
    "audit_events",
    metadata,
    Column("id", BigId, Identity(), primary_key=True),
    Column("ts", UtcDateTime(), nullable=False),
    # The vocabulary name, e.g. authn_login_fail (sso.domain.events.SecurityEvent).
    Column("event", Text(), nullable=False),
    # Who: the account concerned, when known (no FK: history outlives users).
    Column("user_id", BigId, nullable=True),
    # What it was about when not a user: a hashed email, a hashed session id, a rule.
    Column("target", Text(), nullable=True),
    Column("outcome", Text(), nullable=False),
    # From where: the client address and the request id of the RPC.
    Column("ip", Text(), nullable=True),
    Column("request_id", Text(), nullable=True),
    Column("details", JSON().with_variant(JSONB(), "postgresql"), nullable=True),
    Index(None, "ts"),
    Index(None, "user_id", "ts"),
    Index(None, "event", "ts"),
)

# Account lifecycle (migration 0003): one-time link tokens, login history, known devices.
ACCOUNT_TOKEN_PURPOSES = ("verify_email", "reset_password")

# Email verification and password reset links (SECURITY_CHECKLIST D1-D4): only the
# SHA-256 of the token is stored; a token is bound to one user and one purpose and
# spent by a compare-and-swap on `used_at`. A newer request sets `used_at` on the
# older unused tokens of the same purpose (superseded).
account_tokens = Table(
    "account_tokens",
    metadata,
    Column("id", BigId, Identity(), primary_key=True),
    Column("token_hash", LargeBinary(TOKEN_HASH_BYTES), nullable=False),
    Column("user_id", BigId, ForeignKey("users.id", ondelete="CASCADE"), nullable=False),
    Column("purpose", Text(), nullable=False),
    Column("created_at", UtcDateTime(), nullable=False),
    Column("expires_at", UtcDateTime(), nullable=False),
    # Spent, superseded by a newer token, or voided by a password change.
    Column("used_at", UtcDateTime(), nullable=True),
    CheckConstraint(f"length(token_hash) = {TOKEN_HASH_BYTES}", name="token_hash_length"),
    CheckConstraint(
        "purpose IN ('verify_email', 'reset_password')",
        name="purpose_known",
    ),
    Index(None, "token_hash", unique=True),
    # Superseding and the per-account mail limit go by (user, purpose, recent).
    Index(None, "user_id", "purpose", "created_at"),
    Index(None, "expires_at"),
)

# What the user sees in ListLoginHistory: one row per login attempt on a known account.
login_history = Table(
    "login_history",
    metadata,
    Column("id", BigId, Identity(), primary_key=True),
    Column("user_id", BigId, ForeignKey("users.id", ondelete="CASCADE"), nullable=False),
    Column("ts", UtcDateTime(), nullable=False),
    # success, failure, locked, refused (unverified email).
    Column("result", Text(), nullable=False),
    Column("ip", Text(), nullable=False),
    Column("user_agent", Text(), nullable=False),
    Column("device_name", Text(), nullable=False),
    # No FK: the history outlives a deleted app.
    Column("app_id", Integer(), nullable=True),
    Column("device_hash", Text(), nullable=True),
    # Newest first, page by page (keyset on id).
    Index(None, "user_id", "id"),
    Index(None, "ts"),
)

# Devices a user has logged in from (device = SHA-256 of user agent + device name).
known_devices = Table(
    "known_devices",
    metadata,
    Column(
        "user_id",
        BigId,
        ForeignKey("users.id", ondelete="CASCADE"),
        primary_key=True,
    ),
    Column("device_hash", Text(), primary_key=True),
    Column("user_agent", Text(), nullable=False),
    Column("device_name", Text(), nullable=False),
    Column("first_seen_at", UtcDateTime(), nullable=False),
    Column("last_seen_at", UtcDateTime(), nullable=False),
)

# Two-factor (migration 0004). One row per user who started or finished TOTP enrolment.
# Secrets are AES-256-GCM ciphertext (sso.security.totp, bound to the user id), never plaintext.
totp_credentials = Table(
    "totp_credentials",
    metadata,
    Column("user_id", BigId, ForeignKey("users.id", ondelete="CASCADE"), primary_key=True),
    # The active secret; NULL until an enrolment is confirmed.
    Column("secret_encrypted", Text(), nullable=True),
    Column("enabled", Boolean(), nullable=False, server_default=false()),
    Column("enabled_at", UtcDateTime(), nullable=True),
    # Replay protection (G2): the last accepted time step, advanced only by compare-and-swap.
    Column("last_used_step", BigInteger(), nullable=True),
    # Consecutive wrong codes (C5), reserved before the HMAC runs; capped per account.
    Column("failed_attempts", Integer(), nullable=False, server_default=text("0")),
    # A started, unconfirmed enrolment (replaced by the next BeginTotpEnrollment).
    Column("pending_secret_encrypted", Text(), nullable=True),
    Column("pending_expires_at", UtcDateTime(), nullable=True),
    Column("updated_at", UtcDateTime(), nullable=False),
)

# Backup codes (G5): SHA-256 of 120-bit codes; `used_at` set once by compare-and-swap.
backup_codes = Table(
    "backup_codes",
    metadata,
    Column("id", BigId, Identity(), primary_key=True),
    Column("user_id", BigId, ForeignKey("users.id", ondelete="CASCADE"), nullable=False),
    Column("code_hash", LargeBinary(TOKEN_HASH_BYTES), nullable=False),
    Column("created_at", UtcDateTime(), nullable=False),
    Column("used_at", UtcDateTime(), nullable=True),
    CheckConstraint(f"length(code_hash) = {TOKEN_HASH_BYTES}", name="code_hash_length"),
    Index(None, "code_hash", unique=True),
    Index(None, "user_id"),
)

# Login's second step, in the database so any replica can finish it. Only the SHA-256 of
# the challenge id is stored; `attempts` is reserved per code tried; `used_at` is the
# single-use compare-and-swap.
mfa_challenges = Table(
    "mfa_challenges",
    metadata,
    Column("id_hash", LargeBinary(TOKEN_HASH_BYTES), primary_key=True),
    Column("user_id", BigId, ForeignKey("users.id", ondelete="CASCADE"), nullable=False),
    Column("app_id", Integer(), ForeignKey("apps.id", ondelete="CASCADE"), nullable=False),
    Column("user_agent", Text(), nullable=False),
    Column("ip", Text(), nullable=False),
    Column("device_name", Text(), nullable=False),
    Column("created_at", UtcDateTime(), nullable=False),
    Column("expires_at", UtcDateTime(), nullable=False),
    Column("attempts", Integer(), nullable=False, server_default=text("0")),
    Column("used_at", UtcDateTime(), nullable=True),
    CheckConstraint(f"length(id_hash) = {TOKEN_HASH_BYTES}", name="id_hash_length"),
    Index(None, "user_id"),
    Index(None, "expires_at"),
)
