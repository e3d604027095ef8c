"""The revocation denylist: session ids whose access tokens must fail at once.

Access tokens are verified offline and live a few minutes; when a session is
revoked (logout, reuse detection, admin action) its id is denylisted until the
last access token it could have produced expires, so `ValidateToken` rejects
them immediately (SECURITY_CHECKLIST E2). Entries expire by themselves.

- `RedisDenylist`: shared by every replica; `SET key 1 PX <ms left>` and
  `EXISTS`. Redis failures become `Unavailable` (via `redis_errors()`).
- `MemoryDenylist`: one process (embedded mode, tests); a dict of deadlines,
  pruned lazily.
"""

from __future__ import annotations

import math
from datetime import datetime

from redis.asyncio import Redis

from sso.storage._sql import Clock, utc_now
from sso.storage.errors import redis_errors


def _ms_until(until: datetime, now: datetime) -> int:
    return math.ceil((until - now).total_seconds() * 1000)


class RedisDenylist:
    """Denylist in Redis under `{prefix}deny:{session_id}`."""

    def __init__(self, redis: Redis, prefix: str = "sso:", *, clock: Clock = utc_now) -> None:
        self._redis = redis
        self._prefix = f"{prefix}deny:"
        self._clock = clock

    def _key(self, session_id: str) -> str:
        return self._prefix + session_id

    async def add(self, session_id: str, until: datetime) -> None:
        ttl_ms = _ms_until(until, self._clock())
        if ttl_ms <= 0:
            return  # every token of the session has expired already
        with redis_errors():
            await self._redis.set(self._key(session_id), b"1", px=ttl_ms)

    async def contains(self, session_id: str) -> bool:
        with redis_errors():
            return bool(await self._redis.exists(self._key(session_id)))


class MemoryDenylist:
    """Denylist in a dict of deadlines; expired entries are dropped lazily.

    A full sweep runs when the dict has doubled since the last one, so the
    cost of pruning is amortised O(1) per `add` and memory stays bounded by
    about twice the number of live entries.
    """

    _MIN_SWEEP = 1024

    def __init__(self, *, clock: Clock = utc_now) -> None:
        self._until: dict[str, datetime] = {}
        self._clock = clock
        self._sweep_at = self._MIN_SWEEP

    async def add(self, session_id: str, until: datetime) -> None:
        now = self._clock()
        if until <= now:
            return
        current = self._until.get(session_id)
        if current is None or until > current:
            self._until[session_id] = until
        if len(self._until) >= self._sweep_at:
            self._prune(now)

    async def contains(self, session_id: str) -> bool:
        until = self._until.get(session_id)
        if until is None:
            return False
        if until <= self._clock():
            del self._until[session_id]
            return False
        return True

    def _prune(self, now: datetime) -> None:
        self._until = {k: v for k, v in self._until.items() if v > now}
        self._sweep_at = max(self._MIN_SWEEP, 2 * len(self._until))

    def __len__(self) -> int:
        return len(self._until)
