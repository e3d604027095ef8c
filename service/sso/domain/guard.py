"""The login guard: throttling, lockout and timing parity around one password check.

Why this module exists: `AuthService.authenticate` should read as the story of
a login (throttle → look up → reserve → verify → clear), not as the mechanics of
each defence. The guard holds those mechanics and their adapters: the shared
rate limiter (per IP, per email, per IP for Register), the durable per-account
counter (`LoginAttempts`, reserve-before-verify), how long a password check
takes lately (a locked account waits that long instead of hashing, B1), and an
admission bound: at most `max_checks` logins and registrations between their
first lookup and their hash at once, the rest refused at once with OVERLOADED
(A6), so a flood neither queues on the database pool nor holds memory. The
rules themselves are in `sso.domain.limits`.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from typing import TypeVar

from sso.domain.events import Detail, EventSink, SecurityEvent
from sso.domain.limits import (
    LatencyMimic,
    LimitRule,
    LockoutPolicy,
    LoginAttempts,
    NoLimits,
    RateLimiter,
    RequestLimits,
    Reservation,
)
from sso.errors import Overloaded, RateLimited

T = TypeVar("T")
# Ids start at 1: reserving for this id matches no row (an unknown user's stand-in).
NO_USER = 0
# Denials announced (one event per rule and key per window) are remembered up to this
# many keys, so a flood of rejected calls does not become a flood of audit rows.
MAX_DENIALS_TRACKED = 10_000
OPEN = Reservation(granted=True)


@dataclass
class LoginGuard:
    limiter: RateLimiter = field(default_factory=NoLimits)
    limits: RequestLimits = field(default_factory=RequestLimits)
    # Durable per-account failure counters; None switches lockout off.
    attempts: LoginAttempts | None = None
    policy: LockoutPolicy = field(default_factory=LockoutPolicy)
    verify_time: LatencyMimic = field(default_factory=LatencyMimic)
    # Password checks (lookup to hash) in progress at once; None = unbounded.
    max_checks: int | None = None
    _checks: int = field(default=0, repr=False)
    _denials: dict[tuple[str, str], float] = field(default_factory=dict, repr=False)

    @contextmanager
    def admitted(self) -> Iterator[None]:
        """Hold one password-check slot; `Overloaded` at once when none is free."""
        if self.max_checks is not None and self._checks >= self.max_checks:
            raise Overloaded(retry_after=1.0)
        self._checks += 1
        try:
            yield
        finally:
            self._checks -= 1

    async def throttle(self, rule: LimitRule | None, key: str, events: EventSink) -> None:
        """Count one hit against `rule`; `RateLimited` (with a retry hint) when over it."""
        if rule is None:
            return
        key = key or "unknown"
        decision = await self.limiter.hit(rule, key)
        if decision.allowed:
            return
        now = time.monotonic()
        announced = self._denials.get((rule.name, key))
        if announced is None or now - announced > rule.window.total_seconds():
            if len(self._denials) >= MAX_DENIALS_TRACKED:
                self._denials.clear()
            self._denials[(rule.name, key)] = now
            await events.emit(
                SecurityEvent.RATE_LIMITED,
                target=rule.name,
                outcome="failure",
                details={
                    "retry_after_ms": round(decision.retry_after * 1000),
                    "local": decision.degraded,
                },
            )
        raise RateLimited(retry_after=decision.retry_after)

    async def reserve(self, user_id: int, now: datetime) -> Reservation:
        """Count this attempt as a failure before checking it; not granted = locked."""
        if self.attempts is None:
            return OPEN
        return await self.attempts.reserve(user_id, now=now, policy=self.policy)

    async def release(self, user_id: int, reservation: Reservation, now: datetime) -> None:
        """The password was never checked (overload): give the attempt back."""
        if self.attempts is not None:
            await self.attempts.release(user_id, reservation, now=now)

    async def succeeded(self, user_id: int) -> None:
        if self.attempts is not None:
            await self.attempts.clear(user_id)

    async def wait_like_a_check(self, spent: float) -> None:
        """Sleep as long as a recent password check took, less `spent` seconds already used."""
        await asyncio.sleep(max(0.0, self.verify_time.sample() - spent))

    async def timed(self, work: Awaitable[T]) -> T:
        """Await a password check and remember how long it took."""
        started = time.perf_counter()
        result = await work
        self.verify_time.record(time.perf_counter() - started)
        return result

    def failure(
        self, reservation: Reservation, now: datetime, *, known: bool
    ) -> tuple[SecurityEvent, dict[str, Detail]]:
        """The event (and its details) for a failed login."""
        if not known:
            return SecurityEvent.LOGIN_FAIL, {"reason": "unknown_user"}
        if not reservation.granted:
            return SecurityEvent.LOGIN_FAIL, {"reason": "locked"}
        details: dict[str, Detail] = {"failures": reservation.failures}
        if reservation.hard_locked:
            return SecurityEvent.LOGIN_FAIL_MAX, details
        if reservation.locked_until is not None:
            details["locked_seconds"] = max(
                0, round((reservation.locked_until - now).total_seconds())
            )
            return SecurityEvent.LOGIN_LOCK, details
        return SecurityEvent.LOGIN_FAIL, details
