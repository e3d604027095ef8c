"""Authentication use cases: register, log in, refresh with rotation, log out, validate.

This is where the rules of the token model live (DESIGN.md §2 Tokens): a login
opens a session with a refresh-token family; every refresh spends the presented
token and hands out its successor; a spent token presented again revokes the
family; a revoked session's access tokens are denylisted until they expire.
Everything is reached through ports, so the same code runs on PostgreSQL or
SQLite, with Redis or in-process.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from sso.domain.emails import normalise_email
from sso.domain.events import EventSink, FanOut
from sso.domain.models import App, NewSession, RotationStatus, Session, User
from sso.domain.ports import (
    AccessTokenIssuer,
    AppRepository,
    Denylist,
    OpaqueTokens,
    PasswordHasher,
    PasswordRules,
    SessionRepository,
    UserRepository,
)
from sso.errors import (
    AlreadyExists,
    InvalidArgument,
    NotFound,
    TokenError,
    TokenExpired,
    TokenReused,
    TokenRevoked,
    Unauthenticated,
)

Clock = Callable[[], datetime]


def utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True, slots=True)
class TokenPolicy:
    access_ttl: timedelta = timedelta(minutes=5)
    refresh_idle_ttl: timedelta = timedelta(days=14)
    refresh_absolute_ttl: timedelta = timedelta(days=30)
    refresh_grace: timedelta = timedelta(seconds=10)


@dataclass(frozen=True, slots=True)
class ClientInfo:
    """Where a call came from; recorded on the session."""

    ip: str = ""
    user_agent: str = ""
    device_name: str = ""


@dataclass(frozen=True, slots=True)
class IssuedTokens:
    access_token: str
    refresh_token: str
    expires_in: int
    refresh_expires_in: int
    session_id: str
    user: User


@dataclass(frozen=True, slots=True)
class AccessClaims:
    """A verified access token."""

    raw: dict[str, Any]
    user_id: int
    session_id: str
    app_id: int


MAX_TOKEN_CHARS = 8192
MAX_FIELD_CHARS = 512


def require_text(value: str, name: str, *, max_chars: int = MAX_FIELD_CHARS) -> str:
    if not value:
        raise InvalidArgument(f"{name} is required", reason=f"{name.upper()}_REQUIRED")
    if len(value) > max_chars or "\x00" in value:
        raise InvalidArgument(f"invalid {name}", reason=f"{name.upper()}_INVALID")
    return value


@dataclass
class AuthService:
    users: UserRepository
    apps: AppRepository
    sessions: SessionRepository
    denylist: Denylist
    hasher: PasswordHasher
    rules: PasswordRules
    access_tokens: AccessTokenIssuer
    opaque: OpaqueTokens
    policy: TokenPolicy = field(default_factory=TokenPolicy)
    clock: Clock = utcnow
    check_deliverability: bool = False
    events: EventSink = field(default_factory=FanOut)

    # -- accounts -----------------------------------------------------------------

    async def register(self, email: str, password: str) -> User:
        if not password:
            raise InvalidArgument("password is required", reason="PASSWORD_REQUIRED")
        normalised = await normalise_email(email, check_deliverability=self.check_deliverability)
        self.rules.check(password, context_words=(normalised.split("@", 1)[0],))
        taken = AlreadyExists("user already exists", reason="EMAIL_TAKEN")
        if await self.users.get_by_email(normalised) is not None:
            raise taken  # cheap pre-check; the unique index below is the real guarantee
        password_hash = await self.hasher.hash(password)
        try:
            return await self.users.create(normalised, password_hash)
        except AlreadyExists:
            raise taken from None

    async def authenticate(self, email: str, password: str) -> User:
        """Check a password. One error, same work, for every kind of failure."""
        if not password:
            raise InvalidArgument("password is required", reason="PASSWORD_REQUIRED")
        require_text(password, "password", max_chars=1024)
        normalised = await normalise_email(email)
        user = await self.users.get_by_email(normalised)
        if user is None:
            await self.hasher.dummy_verify(password)
            raise Unauthenticated()
        if not await self.hasher.verify(user.password_hash, password):
            raise Unauthenticated()
        if self.hasher.needs_rehash(user.password_hash):
            await self.users.update_password_hash(user.id, await self.hasher.hash(password))
        return user

    async def is_admin(self, user_id: int) -> bool:
        if user_id <= 0:
            raise InvalidArgument("user_id is required", reason="USER_ID_REQUIRED")
        user = await self.users.get_by_id(user_id)
        if user is None:
            raise NotFound("user not found", reason="USER_NOT_FOUND")
        return user.is_admin

    async def app(self, app_id: int) -> App:
        if app_id <= 0:
            raise InvalidArgument("app_id is required", reason="APP_ID_REQUIRED")
        app = await self.apps.get(app_id)
        if app is None:
            raise NotFound("app not found", reason="APP_NOT_FOUND")
        return app

    # -- sessions and tokens --------------------------------------------------------

    async def login(
        self, email: str, password: str, app_id: int, client: ClientInfo
    ) -> IssuedTokens:
        if not email:
            raise InvalidArgument("email is required", reason="EMAIL_REQUIRED")
        app = await self.app(app_id)
        user = await self.authenticate(email, password)
        now = self.clock()
        session = NewSession(
            id=self.opaque.new_session_id(),
            user_id=user.id,
            app_id=app.id,
            user_agent=client.user_agent[:MAX_FIELD_CHARS],
            ip=client.ip[:64],
            device_name=client.device_name[:MAX_FIELD_CHARS],
            created_at=now,
            expires_at=now + self.policy.refresh_absolute_ttl,
        )
        refresh = self.opaque.new_refresh_token()
        refresh_expires = min(now + self.policy.refresh_idle_ttl, session.expires_at)
        await self.sessions.create(session, self.opaque.hash(refresh), refresh_expires)
        return self._issue(user, session.id, app.id, refresh, refresh_expires, now, amr=["pwd"])

    async def refresh(self, refresh_token: str) -> IssuedTokens:
        require_text(refresh_token, "refresh_token", max_chars=MAX_TOKEN_CHARS)
        now = self.clock()
        successor = self.opaque.successor(refresh_token)
        outcome = await self.sessions.rotate(
            self.opaque.hash(refresh_token),
            self.opaque.hash(successor),
            now=now,
            idle_ttl=self.policy.refresh_idle_ttl,
            grace=self.policy.refresh_grace,
        )
        status, session = outcome.status, outcome.session
        if status is RotationStatus.REUSED and session is not None:
            await self.denylist.add(session.id, now + self.policy.access_ttl)
            raise TokenReused()
        if status is RotationStatus.EXPIRED:
            raise TokenExpired()
        if status is RotationStatus.REVOKED:
            raise TokenRevoked()
        if session is None or outcome.successor_expires_at is None:
            raise TokenError()
        user = await self.users.get_by_id(session.user_id)
        if user is None:
            raise TokenRevoked()
        return self._issue(
            user,
            session.id,
            session.app_id,
            successor,
            outcome.successor_expires_at,
            now,
            amr=["pwd"],
        )

    def _issue(
        self,
        user: User,
        session_id: str,
        app_id: int,
        refresh: str,
        refresh_expires: datetime,
        now: datetime,
        *,
        amr: Sequence[str],
    ) -> IssuedTokens:
        claims: dict[str, Any] = {
            "sub": str(user.id),
            "aud": str(app_id),
            "sid": session_id,
            "email": user.email,
            "email_verified": user.email_verified,
            "amr": list(amr),
            "app_id": app_id,
        }
        access = self.access_tokens.issue(claims, ttl=self.policy.access_ttl, now=now)
        return IssuedTokens(
            access_token=access,
            refresh_token=refresh,
            expires_in=int(self.policy.access_ttl.total_seconds()),
            refresh_expires_in=max(0, int((refresh_expires - now).total_seconds())),
            session_id=session_id,
            user=user,
        )

    async def validate(self, token: str, audience: str | None = None) -> AccessClaims:
        require_text(token, "token", max_chars=MAX_TOKEN_CHARS)
        raw = self.access_tokens.verify(token, audience=audience or None, now=self.clock())
        sid = raw.get("sid")
        sub = raw.get("sub")
        if not isinstance(sid, str) or not isinstance(sub, str) or not sub.isdigit():
            raise TokenError()
        if await self.denylist.contains(sid):
            raise TokenRevoked()
        app_id = raw.get("app_id")
        return AccessClaims(
            raw=raw,
            user_id=int(sub),
            session_id=sid,
            app_id=app_id if isinstance(app_id, int) else 0,
        )

    async def logout(self, *, refresh_token: str = "", access_token: str = "") -> bool:
        now = self.clock()
        session: Session | None
        if refresh_token:
            require_text(refresh_token, "refresh_token", max_chars=MAX_TOKEN_CHARS)
            session = await self.sessions.get_by_refresh(self.opaque.hash(refresh_token))
            if session is None:
                raise TokenError()
        elif access_token:
            claims = await self.validate(access_token)
            session = await self.sessions.get(claims.session_id)
            if session is None:
                raise TokenError()
        else:
            raise InvalidArgument(
                "refresh_token or access_token is required", reason="TOKEN_REQUIRED"
            )
        await self.end_sessions([session.id], now)
        await self.sessions.revoke(session.id, user_id=None, reason="logout", now=now)
        return True

    async def end_sessions(self, session_ids: Sequence[str], now: datetime) -> None:
        """Denylist sessions so their outstanding access tokens fail at once."""
        until = now + self.policy.access_ttl + timedelta(seconds=60)
        for sid in session_ids:
            await self.denylist.add(sid, until)
