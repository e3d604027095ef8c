"""Brute-force rules, kept pure: rate-limit rules, the lockout schedule, client addresses.

Why this module exists: the numbers that stop password guessing (SECURITY_CHECKLIST
C1-C3, decisions 1 and 5) are policy, and policy should be readable and
testable without Redis or a database. The adapters (`sso.storage.ratelimit`,
`sso.storage.users.SqlLoginAttempts`) implement the ports declared here and
take their arithmetic from here:

- `LimitRule` + the `RateLimiter` port: "at most `limit` hits per sliding
  `window` per key", answered with a retry hint (`sliding_window`).
- `LockoutPolicy`: from `threshold` consecutive failures every further failure
  locks the account, for `base_delay` doubled every `threshold` failures up to
  `max_delay` (5th → 30 s, 10th → 60 s, … capped at 15 min); at `hard_limit`
  it stays locked until an unlock; a failure more than `reset_after` after the
  previous one counts as the first.
- `client_address`: the caller's IP, honouring `x-forwarded-for` only when the
  transport peer is a trusted proxy (otherwise anyone could pick their rate key).
- `LatencyMimic`: how long password checks take lately, so a locked account
  answers as slowly as a wrong password without burning a hash (B1): it waits
  for a duration drawn from recent checks, so even the distribution matches.
"""

from __future__ import annotations

import hashlib
import ipaddress
import secrets
from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Protocol

from sso.config import LockoutSettings, RateLimitSettings

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

# -- rate limits ------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class LimitRule:
    """At most `limit` hits per sliding `window`, counted per key under `name`."""

    name: str
    limit: int
    window: timedelta


@dataclass(frozen=True, slots=True)
class LimitDecision:
    allowed: bool
    # Seconds until a retry can succeed (0 when allowed).
    retry_after: float = 0.0
    # Decided by the in-process fallback because the shared store was unreachable.
    degraded: bool = False


class RateLimiter(Protocol):
    async def hit(self, rule: LimitRule, key: str) -> LimitDecision:
        """Count one hit of `key` under `rule` unless that would exceed it (atomic)."""


class NoLimits:
    """A limiter that allows everything (rate limits switched off)."""

    async def hit(self, rule: LimitRule, key: str) -> LimitDecision:
        return LimitDecision(True)


@dataclass(frozen=True, slots=True)
class RequestLimits:
    """The rules the auth use cases apply; None switches one off."""

    login_ip: LimitRule | None = None
    login_email: LimitRule | None = None
    register_ip: LimitRule | None = None

    @classmethod
    def from_settings(cls, s: RateLimitSettings) -> RequestLimits:
        if not s.enabled:
            return cls()
        return cls(
            login_ip=LimitRule("login_ip", s.login_per_ip, s.login_per_ip_window),
            login_email=LimitRule("login_email", s.login_per_email, s.login_per_email_window),
            register_ip=LimitRule("register_ip", s.register_per_ip, s.register_per_ip_window),
        )


def sliding_window(
    limit: int, window: float, elapsed: float, current: int, previous: int
) -> tuple[bool, float]:
    """Decide one hit with the sliding-window counter; (allowed, seconds to wait).

    The count over the last `window` seconds is estimated as the current fixed
    window's count plus the previous window's count weighted by how much of it
    still overlaps (`elapsed` seconds into the current window). The hit is
    allowed when that estimate plus one stays within `limit`.
    """
    weight = max(0.0, (window - elapsed) / window)
    if previous * weight + current + 1 <= limit:
        return True, 0.0
    if current + 1 <= limit and previous > 0:
        # The previous window's share shrinks until the estimate fits.
        needed = window * (1 - (limit - 1 - current) / previous)
        return False, max(needed - elapsed, 0.001)
    # Wait for the next window, where this window's count becomes "previous".
    wait = window - elapsed
    if current > 0 and limit - 1 < current:
        wait += window * (1 - (limit - 1) / current)
    return False, max(wait, 0.001)


def key_digest(value: str) -> str:
    """A stable, non-reversible key for an identifier (emails never sit in Redis)."""
    return hashlib.sha256(value.encode("utf-8")).hexdigest()[:32]


# -- lockout -----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class LockoutPolicy:
    threshold: int = 5
    base_delay: timedelta = timedelta(seconds=30)
    max_delay: timedelta = timedelta(minutes=15)
    hard_limit: int = 100
    reset_after: timedelta = timedelta(hours=12)

    @classmethod
    def from_settings(cls, s: LockoutSettings) -> LockoutPolicy:
        return cls(s.threshold, s.base_delay, s.max_delay, s.hard_limit, s.failure_reset)

    def delay_for(self, failures: int) -> timedelta:
        """How long the account stays locked after its `failures`-th consecutive failure."""
        if failures < self.threshold:
            return timedelta(0)
        doublings = failures // self.threshold - 1
        if doublings >= 32:
            return self.max_delay
        return min(self.base_delay * (1 << doublings), self.max_delay)

    def steps(self) -> list[tuple[int, timedelta]]:
        """(first failure count, delay) for each distinct delay, ascending, ending at the cap.

        A storage adapter turns this into one `CASE` so the lock is computed in
        the same statement that counts the failure.
        """
        out: list[tuple[int, timedelta]] = []
        count = self.threshold
        while True:
            delay = self.delay_for(count)
            out.append((count, delay))
            if delay >= self.max_delay or len(out) >= 32:
                return out
            count += self.threshold


@dataclass(frozen=True, slots=True)
class Reservation:
    """The outcome of counting one login attempt as a failure before checking it."""

    # False: the account is locked; do not check the password at all.
    granted: bool
    # Consecutive failures including this attempt (when granted).
    failures: int = 0
    locked_until: datetime | None = None
    hard_locked: bool = False


@dataclass(frozen=True, slots=True)
class LockState:
    failures: int
    last_failed_at: datetime | None
    locked_until: datetime | None
    hard_locked: bool


class LoginAttempts(Protocol):
    """Durable per-account failure counters (the source of truth for lockout)."""

    async def reserve(self, user_id: int, *, now: datetime, policy: LockoutPolicy) -> Reservation:
        """Atomically: unless locked at `now`, count a failure and set the resulting lock."""

    async def release(self, user_id: int, reservation: Reservation, *, now: datetime) -> None:
        """Undo a granted reservation whose password was never checked (overload)."""

    async def clear(self, user_id: int) -> bool:
        """Zero the counter and lift any lock (a success, a password reset, an admin unlock)."""

    async def state(self, user_id: int) -> LockState | None: ...


# -- client address ----------------------------------------------------------------


def parse_networks(cidrs: Iterable[str]) -> tuple[IPNetwork, ...]:
    return tuple(ipaddress.ip_network(c, strict=False) for c in cidrs)


def _ip(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    text = text.strip().strip('"')
    if text.startswith("[") and "]" in text:  # [v6]:port
        text = text[1 : text.index("]")]
    elif text.count(":") == 1:  # v4:port
        text = text.split(":", 1)[0]
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return None


def _trusted(
    addr: ipaddress.IPv4Address | ipaddress.IPv6Address, nets: Sequence[IPNetwork]
) -> bool:
    return any(addr.version == net.version and addr in net for net in nets)


def client_address(peer: str, forwarded_for: str, trusted: Sequence[IPNetwork]) -> str:
    """The client's IP: `peer`, or the nearest untrusted hop of `forwarded_for`.

    `x-forwarded-for` is only believed when the transport peer is a trusted
    proxy; hops are read right to left (nearest first), skipping further
    trusted proxies. A malformed hop ends the walk at the last trusted address.
    """
    peer_addr = _ip(peer)
    if not trusted or peer_addr is None or not _trusted(peer_addr, trusted):
        return peer
    client = str(peer_addr)
    for hop in reversed([h for h in forwarded_for.split(",") if h.strip()]):
        addr = _ip(hop)
        if addr is None:
            break
        client = str(addr)
        if not _trusted(addr, trusted):
            break
    return client


# -- timing parity -----------------------------------------------------------------


class LatencyMimic:
    """Durations of recent password checks; a locked account waits one of them."""

    def __init__(self, default: float = 0.03, samples: int = 64) -> None:
        self._samples: deque[float] = deque(maxlen=samples)
        self._default = default

    def record(self, seconds: float) -> None:
        self._samples.append(seconds)

    def sample(self) -> float:
        """A recent check's duration, drawn at random (`default` before the first check)."""
        return secrets.choice(self._samples) if self._samples else self._default
