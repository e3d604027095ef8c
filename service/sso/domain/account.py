"""Account lifecycle use cases: email verification, password reset and change.

Why this module exists: these flows hand out bearer links by mail, so they are
where enumeration, token theft and mail bombing are won or lost
(SECURITY_CHECKLIST B2, B4, C4, C6, D1-D6, E5). The rules:

- Link tokens: 256 random bits from `secrets`, stored as SHA-256 only, bound
  to one user and one purpose, single use (compare-and-swap in storage),
  24 h (verification) / 30 min (reset) by default; a newer token of the same
  purpose supersedes the older one, a password change voids reset tokens.
- RequestPasswordReset and ResendVerification answer the same, in the same
  time, whatever the address: after a syntax check and the per-IP limit the
  RPC returns at once and the lookup, the per-account mail limit and the mail
  run in the background (`Background`). The mail goes only to the address
  stored for the account found by the normalised address, never to the typed one.
- ResetPassword applies the policy, sets the password, revokes every session
  (refresh tokens fail, access tokens are denylisted), lifts a lockout, mails
  a notice and returns no tokens; it does not touch two-factor state.
- ChangePassword needs the current password (through the login guard:
  throttled and counted like a login) and keeps only the caller's session.
"""

from __future__ import annotations

import asyncio
import contextvars
import hashlib
import logging
import secrets
from collections.abc import Callable, Coroutine, Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, NoReturn

from sso.config import AccountSettings
from sso.domain.account_models import Mail, MailKind, Purpose
from sso.domain.auth import MAX_TOKEN_CHARS, AccessClaims, AuthService, require_text
from sso.domain.emails import normalise_email_syntax
from sso.domain.events import Detail, SecurityEvent
from sso.domain.limits import LimitRule, key_digest
from sso.domain.ports import AccountTokenRepository, Mailer
from sso.errors import NotFound, TokenError, Unauthenticated
from sso.logs import client_ip_var

log = logging.getLogger("sso.account")

LINK_TOKEN_BYTES = 32  # 256 bits; D1 asks for >= 128


def new_link_token() -> str:
    """Never starting with `-`: it is pasted into `sso client verify-email TOKEN`, where
    that would read as an option (as `sso.security.opaque.url_token`)."""
    while (token := secrets.token_urlsafe(LINK_TOKEN_BYTES)).startswith("-"):
        pass
    return token


def hash_link_token(token: str) -> bytes:
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).digest()


def describe(delta: timedelta) -> str:
    minutes = int(delta.total_seconds() // 60)
    if minutes % 60 == 0:
        hours = minutes // 60
        return f"{hours} hour{'s' if hours != 1 else ''}"
    return f"{minutes} minutes"


class Background:
    """Work done after the RPC answered: bounded, logged on failure, awaitable in tests."""

    def __init__(
        self, limit: int = 1000, *, context: Callable[[], contextvars.Context] | None = None
    ) -> None:
        self._tasks: set[asyncio.Task[None]] = set()
        self._limit = limit
        # The context each task runs in: by default a copy of the caller's (request id and
        # client address stay on its audit rows); the composition root drops the trace span.
        self._context = context or contextvars.copy_context
        self.dropped = 0

    def spawn(self, work: Coroutine[Any, Any, None], what: str) -> bool:
        if len(self._tasks) >= self._limit:
            work.close()
            self.dropped += 1
            log.warning("background queue full, dropped", extra={"work": what})
            return False
        task = asyncio.create_task(self._guarded(work, what), context=self._context())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return True

    @staticmethod
    async def _guarded(work: Coroutine[Any, Any, None], what: str) -> None:
        try:
            await work
        except Exception:
            log.exception("background work failed", extra={"work": what})

    async def drain(self) -> None:
        """Wait for everything spawned so far (and what it spawns)."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    async def close(self, grace: float = 2.0) -> None:
        """Give running work `grace` seconds to finish, then cancel what is left."""
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=grace)
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*list(self._tasks), return_exceptions=True)


@dataclass(frozen=True, slots=True)
class AccountPolicy:
    verification_ttl: timedelta = timedelta(hours=24)
    reset_ttl: timedelta = timedelta(minutes=30)
    reset_mails_per_hour: int = 3
    verification_mails_per_hour: int = 3
    # Per client IP, RequestPasswordReset + ResendVerification together; None = no limit.
    mail_requests_ip: LimitRule | None = None
    notify_new_device: bool = True

    @classmethod
    def from_settings(cls, s: AccountSettings, *, ip_limits: bool = True) -> AccountPolicy:
        rule = LimitRule("account_mail_ip", s.mail_requests_per_ip, s.mail_requests_per_ip_window)
        return cls(
            verification_ttl=s.verification_ttl,
            reset_ttl=s.reset_ttl,
            reset_mails_per_hour=s.reset_mails_per_hour,
            verification_mails_per_hour=s.verification_mails_per_hour,
            mail_requests_ip=rule if ip_limits else None,
            notify_new_device=s.notify_new_device,
        )


@dataclass
class AccountService:
    auth: AuthService
    tokens: AccountTokenRepository
    mailer: Mailer
    policy: AccountPolicy = field(default_factory=AccountPolicy)
    background: Background = field(default_factory=Background)

    # -- the event sink: a registration mails its verification link ---------------------

    async def emit(
        self,
        event: SecurityEvent,
        *,
        user_id: int | None = None,
        target: str | None = None,
        outcome: str = "success",
        details: Mapping[str, Detail] | None = None,
    ) -> None:
        if event is SecurityEvent.USER_CREATED and user_id is not None:
            self.background.spawn(self._registered(user_id), "verification_mail")

    async def _registered(self, user_id: int) -> None:
        await self.send_verification(user_id)

    # -- email verification ------------------------------------------------------------

    async def send_verification(self, user_id: int) -> bool:
        """Issue a verification link and mail it to the stored address (registration, resend)."""
        user = await self.auth.users.get_by_id(user_id)
        if user is None or user.email_verified:
            return False
        token, now = new_link_token(), self.auth.clock()
        issued = await self.tokens.issue(
            user.id,
            Purpose.VERIFY_EMAIL,
            hash_link_token(token),
            now=now,
            expires_at=now + self.policy.verification_ttl,
            max_per_hour=self.policy.verification_mails_per_hour,
        )
        if issued:
            ttl = describe(self.policy.verification_ttl)
            values = {"email": user.email, "token": token, "ttl": ttl}
            self.mailer.submit(Mail(MailKind.VERIFY_EMAIL, user.email, values))
        await self.auth.events.emit(
            SecurityEvent.VERIFICATION_SENT,
            user_id=user.id,
            outcome="success" if issued else "failure",
            details={"mail": "sent" if issued else "account_limit"},
        )
        return issued

    async def verify_email(self, token: str) -> None:
        require_text(token, "token", max_chars=MAX_TOKEN_CHARS)
        user_id = await self.tokens.verify_email(hash_link_token(token), self.auth.clock())
        if user_id is None:
            await self.auth.events.emit(SecurityEvent.EMAIL_VERIFY_FAIL, outcome="failure")
            raise TokenError("invalid or expired link", reason="LINK_INVALID")
        await self.auth.events.emit(SecurityEvent.EMAIL_VERIFIED, user_id=user_id)

    async def resend_verification(self, email: str) -> None:
        """Same answer for every address; the work happens after the answer."""
        normalised = await self._mail_request(email)
        self.background.spawn(self._resend(normalised), "resend_verification")

    async def _resend(self, email: str) -> None:
        user = await self.auth.users.get_by_email(email)
        if user is None or user.email_verified:
            await self.auth.events.emit(
                SecurityEvent.VERIFICATION_SENT,
                user_id=None if user is None else user.id,
                target=None if user is not None else f"email:{key_digest(email)[:16]}",
                outcome="failure",
                details={"mail": "unknown_user" if user is None else "already_verified"},
            )
            return
        await self.send_verification(user.id)

    # -- password reset ----------------------------------------------------------------

    async def request_password_reset(self, email: str) -> None:
        """Same answer, bytes and time for every address; lookup and mail in the background."""
        normalised = await self._mail_request(email)
        self.background.spawn(self._reset_request(normalised), "password_reset_request")

    async def _mail_request(self, email: str) -> str:
        normalised = normalise_email_syntax(email)  # syntax only: no DNS, no lookup
        guard = self.auth.guard
        await guard.throttle(self.policy.mail_requests_ip, client_ip_var.get(), self.auth.events)
        return normalised

    async def _reset_request(self, email: str) -> None:
        user = await self.auth.users.get_by_email(email)
        target = f"email:{key_digest(email)[:16]}"
        if user is None:
            await self.auth.events.emit(
                SecurityEvent.PASSWORD_RESET_REQUESTED,
                target=target,
                outcome="failure",
                details={"mail": "unknown_user"},
            )
            return
        token, now = new_link_token(), self.auth.clock()
        issued = await self.tokens.issue(
            user.id,
            Purpose.RESET_PASSWORD,
            hash_link_token(token),
            now=now,
            expires_at=now + self.policy.reset_ttl,
            max_per_hour=self.policy.reset_mails_per_hour,
        )
        if issued:  # to the stored address, never the one typed (B2)
            values = {"email": user.email, "token": token, "ttl": describe(self.policy.reset_ttl)}
            self.mailer.submit(Mail(MailKind.PASSWORD_RESET, user.email, values))
        await self.auth.events.emit(
            SecurityEvent.PASSWORD_RESET_REQUESTED,
            user_id=user.id,
            outcome="success" if issued else "failure",
            details={"mail": "sent" if issued else "account_limit"},
        )

    async def reset_password(self, token: str, new_password: str) -> int:
        """Set a new password with a reset link; returns how many sessions were ended."""
        require_text(token, "token", max_chars=MAX_TOKEN_CHARS)
        require_text(new_password, "new_password", max_chars=1024)
        digest, now = hash_link_token(token), self.auth.clock()
        user_id = await self.tokens.peek(digest, Purpose.RESET_PASSWORD, now)
        user = None if user_id is None else await self.auth.users.get_by_id(user_id)
        if user is None:
            await self._reset_failed()
        # The policy before the token is spent: a rejected password leaves the link usable.
        self.auth.rules.check(new_password, context_words=(user.email.split("@", 1)[0],))
        password_hash = await self.auth.hasher.hash(new_password)
        now = self.auth.clock()
        if await self.tokens.reset_password(digest, now, password_hash) is None:
            await self._reset_failed()  # spent (or superseded, or expired) meanwhile
        revoked = await self._end_sessions(user.id, keep=None, reason="password_reset")
        await self.auth.events.emit(
            SecurityEvent.PASSWORD_RESET, user_id=user.id, details={"sessions_revoked": revoked}
        )
        self._notify_changed(user.email, "by a reset link", revoked)
        return revoked

    async def _reset_failed(self) -> NoReturn:
        await self.auth.events.emit(SecurityEvent.PASSWORD_RESET_FAIL, outcome="failure")
        raise TokenError("invalid or expired link", reason="LINK_INVALID")

    # -- password change -----------------------------------------------------------------

    async def change_password(
        self, caller: AccessClaims, current_password: str, new_password: str
    ) -> int:
        """Change the caller's password; every other session ends. Returns how many did."""
        require_text(current_password, "current_password", max_chars=1024)
        require_text(new_password, "new_password", max_chars=1024)
        user = await self.auth.users.get_by_id(caller.user_id)
        if user is None:
            raise NotFound("user not found", reason="USER_NOT_FOUND")
        try:
            await self.auth.authenticate(user.email, current_password)
        except Unauthenticated:
            await self.auth.events.emit(
                SecurityEvent.PASSWORD_CHANGE_FAIL, user_id=user.id, outcome="failure"
            )
            raise
        self.auth.rules.check(new_password, context_words=(user.email.split("@", 1)[0],))
        password_hash = await self.auth.hasher.hash(new_password)
        await self.tokens.change_password(user.id, password_hash, self.auth.clock())
        revoked = await self._end_sessions(
            user.id, keep=caller.session_id, reason="password_changed"
        )
        await self.auth.events.emit(
            SecurityEvent.PASSWORD_CHANGED, user_id=user.id, details={"sessions_revoked": revoked}
        )
        self._notify_changed(user.email, "by you, with the current password", revoked)
        return revoked

    async def _end_sessions(self, user_id: int, *, keep: str | None, reason: str) -> int:
        revoked = await self.auth.revoke_all_sessions(user_id, reason=reason, keep=keep)
        if revoked:
            await self.auth.events.emit(
                SecurityEvent.SESSION_REVOKED,
                user_id=user_id,
                details={"reason": reason, "count": revoked},
            )
        return revoked

    def _notify_changed(self, email: str, how: str, revoked: int) -> None:
        values = {
            "email": email,
            "how": how,
            "when": self.auth.clock().strftime("%Y-%m-%d %H:%M UTC"),
            "ip": client_ip_var.get() or "unknown",
            "sessions": str(revoked),
        }
        self.mailer.submit(Mail(MailKind.PASSWORD_CHANGED, email, values))
