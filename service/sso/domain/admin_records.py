"""The Admin API's records, ports and input rules (page tokens, field validation).

Why this module exists: `sso.domain.admin` holds the rules; these are the plain
records it passes around (an app with its metadata, a user as an administrator
may see them: no hash, no TOTP material; usage statistics), the acting
credential, and the two ports `sso.storage` implements for it (`AdminApps` on
the apps table, `AdminStore` for listing, statistics, deletion and export),
and the checks every admin input goes through before it reaches storage.
"""

from __future__ import annotations

import base64
import json
import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Protocol
from urllib.parse import urlsplit

from sso.domain.models import App
from sso.errors import InvalidArgument

MAX_PAGE_SIZE = 500
DEFAULT_PAGE_SIZE = 50
MAX_REDIRECT_URIS = 32
MAX_RATE_LIMIT = 1_000_000
MIN_IMPORTED_SECRET = 16
MAX_SECRET = 512
MAX_OVERLAP = timedelta(days=30)
MAX_STATS_DAYS = 366


# -- records ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Actor:
    """Who is calling the Admin API: an admin token (by digest prefix) or an admin user."""

    label: str
    user_id: int | None = None


@dataclass(frozen=True, slots=True)
class AppInfo:
    app: App
    display_name: str = ""
    redirect_uris: tuple[str, ...] = ()
    updated_at: datetime | None = None
    secret_rotated_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class UserInfo:
    """What an administrator may see about a user (no hash, no TOTP material)."""

    id: int
    email: str
    email_verified: bool
    is_admin: bool
    admin_locked: bool
    hard_locked: bool
    locked_until: datetime | None
    created_at: datetime
    last_login_at: datetime | None
    active_sessions: int
    password_scheme: str

    def locked(self, now: datetime) -> bool:
        temporary = self.locked_until is not None and self.locked_until > now
        return self.admin_locked or self.hard_locked or temporary


@dataclass(frozen=True, slots=True)
class DailyLogins:
    day: str
    succeeded: int
    failed: int


@dataclass(frozen=True, slots=True)
class Stats:
    users: int
    verified_users: int
    active_sessions: int
    admins: int
    locked_users: int
    legacy_password_hashes: int
    apps: int
    logins_per_day: tuple[DailyLogins, ...] = ()


def password_scheme(password_hash: str) -> str:
    """The algorithm of a stored hash, by its prefix; never the hash itself."""
    if password_hash.startswith("$argon2id$"):
        return "argon2id"
    if password_hash.startswith("$2"):
        return "bcrypt"
    return "unknown"


# -- ports ------------------------------------------------------------------------


class AdminApps(Protocol):
    async def create_info(
        self,
        name: str,
        secret: str,
        *,
        app_id: int | None = None,
        display_name: str = "",
        redirect_uris: Sequence[str] = (),
        login_rate_limit_per_minute: int = 0,
    ) -> AppInfo: ...

    async def get_info(self, app_id: int) -> AppInfo | None: ...

    async def page(self, *, after_id: int, limit: int) -> Sequence[AppInfo]: ...

    async def update(
        self,
        app_id: int,
        *,
        display_name: str | None = None,
        redirect_uris: Sequence[str] | None = None,
        login_rate_limit_per_minute: int | None = None,
    ) -> AppInfo | None: ...

    async def rotate_secret(
        self, app_id: int, new_secret: str, *, previous_until: datetime, now: datetime
    ) -> AppInfo | None: ...

    async def delete(self, app_id: int, *, now: datetime) -> Sequence[str] | None:
        """Delete the app and its sessions; the ids of those that were live, None if absent."""


class AdminStore(Protocol):
    async def list_users(
        self, *, after_id: int, limit: int, email_prefix: str, now: datetime
    ) -> Sequence[UserInfo]:
        """Users with id > after_id, ascending; `email_prefix` matched literally (no wildcards)."""

    async def get_user(self, user_id: int, now: datetime) -> UserInfo | None: ...

    async def set_admin_lock(self, user_id: int, locked: bool) -> bool:
        """False when the user does not exist."""

    async def delete_user(self, user_id: int, now: datetime) -> Sequence[str] | None:
        """Delete the user and everything of theirs; ids of live sessions, None if absent."""

    async def stats(self, now: datetime, since: datetime) -> Stats: ...

    async def user_profile(self, user_id: int) -> Mapping[str, object] | None: ...

    async def user_sessions(self, user_id: int) -> Sequence[Mapping[str, object]]: ...

    async def user_audit_events(self, user_id: int) -> Sequence[Mapping[str, object]]: ...


# -- page tokens --------------------------------------------------------------------


def encode_page_token(kind: str, last_id: int) -> str:
    return base64.urlsafe_b64encode(f"{kind}:{last_id}".encode()).decode().rstrip("=")


def decode_page_token(kind: str, token: str) -> int:
    """The last id of the previous page (0 for the first page)."""
    if not token:
        return 0
    invalid = InvalidArgument("invalid page_token", reason="PAGE_TOKEN_INVALID")
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)).decode()
    except ValueError:
        raise invalid from None
    prefix, _, number = raw.partition(":")
    if prefix != kind or not number.isdigit() or len(number) > 19:
        raise invalid
    return int(number)


def page_size(requested: int) -> int:
    if requested < 0:
        raise InvalidArgument("page_size must not be negative", reason="PAGE_SIZE_INVALID")
    return min(requested or DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE)


# -- validation -------------------------------------------------------------------


def check_text(value: str, name: str, *, required: bool, max_chars: int = 200) -> str:
    value = value.strip()
    if required and not value:
        raise InvalidArgument(f"{name} is required", reason=f"{name.upper()}_REQUIRED")
    if len(value) > max_chars or any(ord(c) < 0x20 or ord(c) == 0x7F for c in value):
        raise InvalidArgument(f"invalid {name}", reason=f"{name.upper()}_INVALID")
    return value


def check_redirect_uris(values: Sequence[str]) -> tuple[str, ...]:
    """Absolute URIs, no fragment (RFC 6749 §3.1.2): https, loopback http or a custom scheme."""
    if len(values) > MAX_REDIRECT_URIS:
        raise InvalidArgument("too many redirect_uris", reason="REDIRECT_URIS_INVALID")
    out: list[str] = []
    for value in values:
        bad = InvalidArgument("invalid redirect_uri", reason="REDIRECT_URIS_INVALID")
        try:
            parts = urlsplit(value)
        except ValueError:
            raise bad from None
        if not parts.scheme or parts.fragment or value != value.strip() or " " in value:
            raise bad
        if parts.scheme in ("http", "https") and not parts.hostname:
            raise bad
        loopback = parts.hostname in ("localhost", "127.0.0.1", "::1")
        if parts.scheme == "http" and not loopback:
            raise bad
        if value not in out:
            out.append(value)
    return tuple(out)


def check_rate_limit(value: int) -> int:
    if not 0 <= value <= MAX_RATE_LIMIT:
        raise InvalidArgument(
            "login_rate_limit_per_minute out of range", reason="RATE_LIMIT_INVALID"
        )
    return value


def check_user_id(value: int) -> int:
    if value <= 0:
        raise InvalidArgument("user_id is required", reason="USER_ID_REQUIRED")
    return value


def check_app_id(value: int) -> int:
    if value <= 0:
        raise InvalidArgument("app_id is required", reason="APP_ID_REQUIRED")
    return value


def new_app_secret() -> str:
    """256 random bits, URL-safe (43 characters)."""
    return secrets.token_urlsafe(32)


def describe_change(**fields: object) -> str:
    return json.dumps(fields, sort_keys=True, default=str, separators=(",", ":"))


USER_NOT_FOUND = "user not found"
APP_NOT_FOUND = "app not found"
UPDATABLE = frozenset({"display_name", "redirect_uris", "login_rate_limit_per_minute"})
