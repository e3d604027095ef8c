"""Authentication use cases: register, log in, refresh with rotation, log out, validate.

This is where the rules of the token model live (DESIGN.md §2 Tokens): a login
opens a session with a refresh-token family; every refresh spends the presented
token and hands out its successor; a spent token presented again revokes the
family; a revoked session's access tokens are denylisted until they expire.
Everything is reached through ports, so the same code runs on PostgreSQL or
SQLite, with Redis or in-process.

Brute-force defence (SECURITY_CHECKLIST B1, C1-C3; rules in `sso.domain.limits`):
a password check is throttled per client IP and per email, then the attempt is
counted as a failure in the durable per-account counter *before* the hash runs
(a locked account hashes nothing), and a success clears the counter. Unknown
user, wrong password and locked account raise the same `Unauthenticated` after
about the same time (a dummy hash; a locked account waits as long as a check
takes lately). Every decision emits one `SecurityEvent`.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from sso.domain.emails import normalise_email
from sso.domain.events import EventSink, FanOut, SecurityEvent
from sso.domain.guard import NO_USER, OPEN, LoginGuard
from sso.domain.limits import LimitRule, Reservation, key_digest
from sso.domain.models import App, NewSession, RotationStatus, Session, User
from sso.domain.ports import (
    AccessTokenIssuer,
    AppRepository,
    Denylist,
    MfaChallengeIssued,
    OpaqueTokens,
    PasswordHasher,
    PasswordRules,
    SecondFactorGate,
    SessionRepository,
    UserRepository,
)
from sso.errors import (
    AlreadyExists,
    AppRateLimited,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    RateLimited,
    SSOError,
    TokenError,
    TokenExpired,
    TokenReused,
    TokenRevoked,
    Unauthenticated,
)
from sso.logs import client_ip_var

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


def session_ref(session_id: str) -> str:
    """How a session appears in audit rows: hashed, never the id itself (H1)."""
    return f"session:{key_digest(session_id)[:16]}"


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
    # Refuse logins of unverified accounts (after a correct password), see docs/account.md.
    require_verified_email: bool = False
    events: EventSink = field(default_factory=FanOut)
    # Rate limits, lockout and timing parity (none of them by default).
    guard: LoginGuard = field(default_factory=LoginGuard)
    # Asked after a password verified: an MFA challenge instead of tokens (sso.domain.two_factor).
    second_factor: SecondFactorGate | None = None
    # Seconds a found app is reused by `app()` (0 = read it every time); see config.
    app_cache_ttl: float = 0.0
    _apps: dict[int, tuple[App, float]] = field(default_factory=dict, init=False, repr=False)

    APP_CACHE_MAX = 1024

    # -- accounts -----------------------------------------------------------------

    async def register(self, email: str, password: str) -> User:
        if not password:
            raise InvalidArgument("password is required", reason="PASSWORD_REQUIRED")
        await self.guard.throttle(self.guard.limits.register_ip, client_ip_var.get(), self.events)
        normalised = await normalise_email(email, check_deliverability=self.check_deliverability)
        self.rules.check(password, context_words=(normalised.split("@", 1)[0],))
        taken = AlreadyExists("user already exists", reason="EMAIL_TAKEN")
        with self.guard.admitted():
            if await self.users.get_by_email(normalised) is not None:
                raise taken  # cheap pre-check; the unique index below is the real guarantee
            password_hash = await self.hasher.hash(password)
            try:
                user = await self.users.create(normalised, password_hash)
            except AlreadyExists:
                raise taken from None
        await self.events.emit(SecurityEvent.USER_CREATED, user_id=user.id)
        return user

    async def authenticate(self, email: str, password: str, *, ip: str = "") -> User:
        """Check a password. One error, same work, for every kind of failure.

        Admit (bounded checks in flight) → throttle (per IP, per email) → look
        up → reserve an attempt in the durable counter (locked: no hash at all)
        → verify → clear the counter.
        """
        with self.guard.admitted():
            return await self._authenticate(email, password, ip)

    async def _authenticate(self, email: str, password: str, ip: str) -> User:
        if not password:
            raise InvalidArgument("password is required", reason="PASSWORD_REQUIRED")
        require_text(password, "password", max_chars=1024)
        normalised = await normalise_email(email)
        guard = self.guard
        await guard.throttle(guard.limits.login_ip, ip or client_ip_var.get(), self.events)
        await guard.throttle(guard.limits.login_email, key_digest(normalised), self.events)
        user = await self.users.get_by_email(normalised)
        now = self.clock()
        if user is None:
            await guard.reserve(NO_USER, now)  # the same round trip a known account makes
            await guard.timed(self.hasher.dummy_verify(password))
            await self._login_failed(None, OPEN, target=normalised)
            raise Unauthenticated()
        started = time.perf_counter()
        reservation = await guard.reserve(user.id, now)
        if not reservation.granted:
            # Locked, or `threshold` other attempts are being checked right now. Wait as
            # long as a check takes (same answer time, no hash), then look once more: a
            # success among those attempts lifts the lock for a parallel legitimate login.
            # The second look costs about what the first did: both come off the wait.
            await guard.wait_like_a_check(2 * (time.perf_counter() - started))
            now = self.clock()
            reservation = await guard.reserve(user.id, now)
            if not reservation.granted:
                await self._login_failed(user.id, reservation)
                raise Unauthenticated()
        try:
            ok = await guard.timed(self.hasher.verify(user.password_hash, password))
        except SSOError:  # overloaded: the password was never checked
            await guard.release(user.id, reservation, now)
            raise
        if not ok:
            await self._login_failed(user.id, reservation)
            raise Unauthenticated()
        await guard.succeeded(user.id)
        if self.require_verified_email and not user.email_verified:
            # Only after the password was right, so the refusal tells a guesser nothing.
            await self.events.emit(
                SecurityEvent.LOGIN_FAIL,
                user_id=user.id,
                outcome="failure",
                details={"reason": "email_not_verified"},
            )
            raise FailedPrecondition("email address not verified", reason="EMAIL_NOT_VERIFIED")
        if self.hasher.needs_rehash(user.password_hash):
            await self.users.update_password_hash(user.id, await self.hasher.hash(password))
        await self.events.emit(SecurityEvent.LOGIN_SUCCESS, user_id=user.id)
        return user

    async def _login_failed(
        self, user_id: int | None, reservation: Reservation, *, target: str = ""
    ) -> None:
        event, details = self.guard.failure(reservation, self.clock(), known=user_id is not None)
        await self.events.emit(
            event,
            user_id=user_id,
            target=f"email:{key_digest(target)[:16]}" if target else None,
            outcome="failure",
            details=details,
        )

    async def unlock(self, user_id: int, *, actor_id: int | None = None) -> bool:
        """Lift a lock (temporary or hard) and zero the counter: the admin unlock path."""
        attempts = self.guard.attempts
        done = False if attempts is None else await attempts.clear(user_id)
        await self.events.emit(
            SecurityEvent.AUTHZ_ADMIN,
            user_id=actor_id,
            target=f"user:{user_id}",
            outcome="success" if done else "failure",
            details={"action": "unlock_account"},
        )
        return done

    async def is_admin(self, user_id: int) -> bool:
        if user_id <= 0:
            raise InvalidArgument("user_id is required", reason="USER_ID_REQUIRED")
        user = await self.users.get_by_id(user_id)
        if user is None:
            raise NotFound("user not found", reason="USER_NOT_FOUND")
        return user.is_admin

    async def app(self, app_id: int) -> App:
        """The app, from this process's cache for `app_cache_ttl` seconds after a read."""
        if app_id <= 0:
            raise InvalidArgument("app_id is required", reason="APP_ID_REQUIRED")
        cached = self._apps.get(app_id)
        if cached is not None and cached[1] > time.monotonic():
            return cached[0]
        app = await self.apps.get(app_id)
        if app is None:  # not cached: an app created a moment later is found at once
            self._apps.pop(app_id, None)
            raise NotFound("app not found", reason="APP_NOT_FOUND")
        if self.app_cache_ttl > 0:
            if len(self._apps) >= self.APP_CACHE_MAX:
                self._apps.clear()
            self._apps[app_id] = (app, time.monotonic() + self.app_cache_ttl)
        return app

    def forget_apps(self) -> None:
        """Drop this process's cached apps (the next `app()` reads each again)."""
        self._apps.clear()

    async def app_for_login(self, app_id: int, client_secret: str | None = None) -> App:
        """The app a Login is for (docs/admin.md): client secret and per-app rate limit.

        A presented secret must be the app's current one or, during a rotation's
        overlap, the previous one (SHA-256 digests compared in constant time, every
        candidate); absent, the app is a public client as before.
        """
        app = await self.app(app_id)
        if client_secret is not None:
            presented = hashlib.sha256(client_secret.encode("utf-8", "surrogatepass")).digest()
            ok = False
            for secret in app.secrets_at(self.clock()):
                ok |= hmac.compare_digest(presented, hashlib.sha256(secret.encode()).digest())
            if not ok:
                raise Unauthenticated("invalid client credentials", reason="CLIENT_AUTH_FAILED")
        if app.login_rate_limit_per_minute > 0:
            rule = LimitRule("login_app", app.login_rate_limit_per_minute, timedelta(minutes=1))
            try:
                await self.guard.throttle(rule, str(app.id), self.events)
            except RateLimited as exc:
                raise AppRateLimited(retry_after=exc.retry_after) from None
        return app

    # -- sessions and tokens --------------------------------------------------------

    async def login(
        self,
        email: str,
        password: str,
        app_id: int,
        client: ClientInfo,
        *,
        client_secret: str | None = None,
    ) -> IssuedTokens | MfaChallengeIssued:
        """Tokens, or an MFA challenge when the account has a second factor (after the
        password verified; `sso.domain.two_factor` finishes it with `open_session`)."""
        if not email:
            raise InvalidArgument("email is required", reason="EMAIL_REQUIRED")
        with self.guard.admitted():  # before any lookup: a flood is refused at once
            app = await self.app_for_login(app_id, client_secret)
            user = await self._authenticate(email, password, client.ip)
        if self.second_factor is not None:
            pending = await self.second_factor.challenge(
                user,
                app.id,
                ip=client.ip[:64],
                user_agent=client.user_agent[:MAX_FIELD_CHARS],
                device_name=client.device_name[:MAX_FIELD_CHARS],
            )
            if pending is not None:
                return pending
        return await self.open_session(user, app.id, client, amr=("pwd",))

    async def open_session(
        self, user: User, app_id: int, client: ClientInfo, *, amr: Sequence[str]
    ) -> IssuedTokens:
        """A new session and its first token pair for an authenticated user."""
        now = self.clock()
        session = NewSession(
            id=self.opaque.new_session_id(),
            user_id=user.id,
            app_id=app_id,
            user_agent=client.user_agent[:MAX_FIELD_CHARS],
            ip=client.ip[:64],
            device_name=client.device_name[:MAX_FIELD_CHARS],
            created_at=now,
            expires_at=now + self.policy.refresh_absolute_ttl,
            amr=tuple(amr),
        )
        refresh = self.opaque.new_refresh_token()
        refresh_expires = min(now + self.policy.refresh_idle_ttl, session.expires_at)
        await self.sessions.create(session, self.opaque.hash(refresh), refresh_expires)
        await self.events.emit(  # login history and new-device notices (sso.domain.history)
            SecurityEvent.SESSION_CREATED,
            user_id=user.id,
            target=session_ref(session.id),
            details={
                "app_id": app_id,
                "user_agent": session.user_agent,
                "device_name": session.device_name,
            },
        )
        return self._issue(user, session.id, app_id, refresh, refresh_expires, now, amr=amr)

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
            await self.events.emit(
                SecurityEvent.TOKEN_REUSE,
                user_id=session.user_id,
                target=session_ref(session.id),
                outcome="failure",
                details={"action": "session_revoked"},
            )
            raise TokenReused()
        user: User | None = None
        failure: TokenError | None = None
        expires = outcome.successor_expires_at
        if status is RotationStatus.EXPIRED:
            failure = TokenExpired()
        elif status is RotationStatus.REVOKED:
            failure = TokenRevoked()
        elif session is None or expires is None:
            failure = TokenError()
        else:
            # The rotation returns the user it joined; only a repository that does not
            # (or a user that is gone) costs a second lookup.
            user = outcome.user
            if user is None:
                user = await self.users.get_by_id(session.user_id)
            failure = TokenRevoked() if user is None else None
        if failure is not None or session is None or user is None or expires is None:
            await self.events.emit(
                SecurityEvent.TOKEN_INVALID,
                user_id=session.user_id if session is not None else None,
                target=session_ref(session.id) if session is not None else None,
                outcome="failure",
                details={"token": "refresh", "status": status.value},
            )
            raise failure or TokenError()
        await self.events.emit(
            SecurityEvent.TOKEN_REFRESHED,
            user_id=user.id,
            target=session_ref(session.id),
            details={"grace": status is RotationStatus.GRACE},
        )
        return self._issue(
            user,
            session.id,
            session.app_id,
            successor,
            expires,
            now,
            amr=session.amr,  # how the login that opened the session authenticated
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
        await self.events.emit(
            SecurityEvent.LOGOUT, user_id=session.user_id, target=session_ref(session.id)
        )
        return True

    async def end_sessions(self, session_ids: Sequence[str], now: datetime) -> None:
        """Denylist sessions so their outstanding access tokens fail at once."""
        until = now + self.policy.access_ttl + timedelta(seconds=60)
        for sid in session_ids:
            await self.denylist.add(sid, until)

    async def revoke_all_sessions(
        self, user_id: int, *, reason: str, keep: str | None = None
    ) -> int:
        """Revoke every live session of a user but `keep` and denylist them; how many ended.

        No event: each caller audits the revocation in its own words.
        """
        now = self.clock()
        revoked = await self.sessions.revoke_all(user_id, reason=reason, now=now, keep=keep)
        await self.end_sessions([s.id for s in revoked], now)
        return len(revoked)
