"""The revocation denylist: session ids whose access tokens must fail at once.

Access tokens are verified offline and live a few minutes; when a session is
revoked (logout, reuse detection, admin action) its id is denylisted until the
last access token it could have produced expires, so `ValidateToken` rejects
them immediately (SECURITY_CHECKLIST E2). Entries expire by themselves.

- `RedisDenylist`: shared by every replica; `SET key 1 PX <ms left>` and
  `EXISTS`. Redis failures become `Unavailable` (via `redis_errors()`).
- `ReplicatedDenylist`: `RedisDenylist` plus a per-process copy kept current
  by pub/sub, so `contains()` is a dict lookup (what `sso serve` uses).
- `MemoryDenylist`: one process (embedded mode, tests); a dict of deadlines,
  pruned lazily.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
from datetime import datetime, timedelta

from redis.asyncio import Redis

from sso.errors import Unavailable
from sso.storage._sql import Clock, utc_now
from sso.storage.errors import redis_errors

log = logging.getLogger("sso.denylist")


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


class ReplicatedDenylist:
    """`RedisDenylist` plus a copy of the whole denylist in this process, kept by pub/sub.

    `ValidateToken` is the hottest call and its only I/O was the `EXISTS`; here
    it is a dict lookup while the copy is known to be complete:

    - `add()`: the entry goes into the local copy first (this process rejects
      the session at once), then `SET ... PX` and `PUBLISH {prefix}deny` in one
      pipeline; every other process applies the message within milliseconds.
    - `start()` runs a follower task: SUBSCRIBE, then SCAN `{prefix}deny:*`
      (subscribing first, so nothing published during the scan is lost), then
      apply messages. Only then is the copy `synced`.
    - `contains()`: a local hit is always revoked. Otherwise, while synced, the
      answer is "not revoked"; while the subscription is down (Redis restarting,
      reconnecting), the per-call `EXISTS` decides, as `RedisDenylist` does.
    - Redis unreachable altogether: `EXISTS` fails, and once the copy has been
      complete at least once the copy answers (logged); nothing can be added to
      Redis meanwhile anyway (`add()` raises `Unavailable`, so a revocation made
      during the outage is known to the revoking process only). Before the first
      sync, `Unavailable` as before.
    - A silent Redis (no reply to a PING within `PING_TIMEOUT`) is treated as
      a lost subscription.
    """

    IDLE_BEFORE_PING = 5.0
    PING_TIMEOUT = 2.0
    SCAN_COUNT = 1000

    def __init__(
        self,
        redis: Redis,
        prefix: str = "sso:",
        *,
        clock: Clock = utc_now,
        retry_delay: float = 0.5,
    ) -> None:
        self._redis = redis
        self._remote = RedisDenylist(redis, prefix, clock=clock)
        self._key_prefix = f"{prefix}deny:"
        self._channel = f"{prefix}deny"
        self._clock = clock
        self._local = MemoryDenylist(clock=clock)
        self._retry_delay = retry_delay
        self._task: asyncio.Task[None] | None = None
        self._ever_synced = False
        self._warned = False
        # True while subscribed and loaded: the local copy is the whole denylist.
        self.synced = False

    async def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._follow(), name="denylist-follower")

    async def close(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self.synced = False

    async def add(self, session_id: str, until: datetime) -> None:
        await self._local.add(session_id, until)
        ttl_ms = _ms_until(until, self._clock())
        if ttl_ms <= 0:
            return
        with redis_errors():
            async with self._redis.pipeline(transaction=True) as pipe:
                pipe.set(self._key_prefix + session_id, b"1", px=ttl_ms)
                pipe.publish(self._channel, f"{ttl_ms} {session_id}".encode())
                await pipe.execute()

    async def contains(self, session_id: str) -> bool:
        if await self._local.contains(session_id):
            return True
        if self.synced:
            return False
        try:
            return await self._remote.contains(session_id)
        except Unavailable:
            if not self._ever_synced:
                raise
            if not self._warned:  # once per outage, not once per call
                self._warned = True
                log.warning("denylist: Redis unreachable, answering from the local copy")
            return False

    async def _apply(self, data: bytes, received: datetime) -> None:
        ttl, _, session_id = data.decode("utf-8", "replace").partition(" ")
        if session_id and ttl.isdigit():
            await self._local.add(session_id, received + timedelta(milliseconds=int(ttl)))

    async def _load(self) -> None:
        now = self._clock()
        cursor: int = 0
        prefix = self._key_prefix.encode()
        while True:
            cursor, keys = await self._redis.scan(
                cursor, match=self._key_prefix + "*", count=self.SCAN_COUNT
            )
            if keys:
                async with self._redis.pipeline(transaction=False) as pipe:
                    for key in keys:
                        pipe.pttl(key)
                    ttls = await pipe.execute()
                for key, ttl in zip(keys, ttls, strict=True):
                    if isinstance(ttl, int) and ttl > 0:
                        raw = key if isinstance(key, bytes) else key.encode()
                        session_id = raw[len(prefix) :].decode()
                        await self._local.add(session_id, now + timedelta(milliseconds=ttl))
            if not cursor:
                return

    async def _follow(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            pubsub = self._redis.pubsub()
            try:
                await pubsub.subscribe(self._channel)
                await self._load()
                self.synced = self._ever_synced = True
                self._warned = False
                log.info("denylist: local copy synced")
                heard = loop.time()
                pinged: float | None = None
                while True:
                    message = await pubsub.get_message(timeout=1.0)
                    now = loop.time()
                    if message is not None:
                        heard, pinged = now, None
                        if message.get("type") == "message":
                            await self._apply(message["data"], self._clock())
                        continue
                    if pinged is not None and now - pinged > self.PING_TIMEOUT:
                        raise TimeoutError("Redis did not answer the subscription's PING")
                    if pinged is None and now - heard > self.IDLE_BEFORE_PING:
                        await pubsub.ping()
                        pinged = now
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if self.synced:
                    log.warning("denylist: subscription lost", extra={"error": type(exc).__name__})
            finally:
                self.synced = False
                with contextlib.suppress(Exception):
                    await pubsub.aclose()  # type: ignore[no-untyped-call]
            await asyncio.sleep(self._retry_delay)
