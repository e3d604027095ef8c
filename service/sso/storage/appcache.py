"""The shared app cache: app rows in Redis, and pub/sub so every process forgets a changed app.

Why this module exists: every Login looks its app up. Each process keeps the
apps it read for `tokens.app_cache_ttl` (`AuthService.app`); with Redis
configured, two things are added here:

- `RedisAppCache` wraps `SqlAppRepository`: `get()` reads `{prefix}app:{id}`
  (the row as stored, secrets still encrypted: Redis never holds a usable
  secret) before the database, with `redis_app_ttl` as its lifetime. A miss
  reads the *primary* and fills the key only if the app's generation counter
  `{prefix}app-gen:{id}` has not moved since the read began (one Lua script),
  so a fill racing an update can never put the old row back. Update, secret
  rotation and deletion go to the database first, then bump the generation,
  delete the key and publish the app id on `{prefix}apps` (one pipeline).
- `AppInvalidations` subscribes to `{prefix}apps` in every process and calls
  its callback (the composition root passes `AuthService.forget_apps`) for
  each message, and once more after every (re)subscription since messages
  sent while it was disconnected are lost.

Bound: another process stops using a changed app after the publish latency
(milliseconds); while Redis is down, after `tokens.app_cache_ttl` at most
(its in-process copy expires) and Redis-cached rows are not read (errors fall
through to the database). Embedded mode (no Redis) uses none of this.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import RedisError

from sso.domain.admin import AppInfo
from sso.domain.models import App
from sso.storage.apps import SqlAppRepository

log = logging.getLogger("sso.appcache")

# KEYS: value, generation. ARGV: generation seen before the read, value, ttl ms.
_FILL = """
local gen = redis.call('GET', KEYS[2]) or '0'
if gen == ARGV[1] then
  redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
  return 1
end
return 0
"""


class RedisAppCache:
    """`SqlAppRepository` with a Redis layer for `get()` and invalidation on every change."""

    def __init__(
        self, repo: SqlAppRepository, redis: Redis, prefix: str = "sso:", *, ttl: float = 300.0
    ) -> None:
        self.repo = repo
        self._redis = redis
        self._prefix = prefix
        self.channel = f"{prefix}apps"
        self._ttl_ms = max(1, int(ttl * 1000))
        self._fill = redis.register_script(_FILL)
        self._warned = False

    def _keys(self, app_id: int) -> tuple[str, str]:
        return f"{self._prefix}app:{app_id}", f"{self._prefix}app-gen:{app_id}"

    def _redis_failed(self, exc: BaseException) -> None:
        if not self._warned:  # once per outage
            self._warned = True
            log.warning(
                "app cache: Redis unavailable, reading apps from the database",
                extra={"error": type(exc).__name__},
            )

    async def get(self, app_id: int) -> App | None:
        key, gen_key = self._keys(app_id)
        try:
            value, gen = await self._redis.mget(key, gen_key)
        except (RedisError, OSError) as exc:
            self._redis_failed(exc)
            return await self.repo.get(app_id)  # a replica when healthy
        self._warned = False
        seen = gen.decode() if isinstance(gen, bytes) else str(gen or "0")
        if value is not None:
            sealed = json.loads(value)
            if str(sealed.pop("gen", "")) == seen:
                return self.repo.unseal(sealed)
        sealed = await self.repo.get_sealed(app_id)
        if sealed is None:
            return None  # not cached: an app created a moment later is found at once
        payload = json.dumps({**sealed, "gen": seen})
        with contextlib.suppress(RedisError, OSError):
            await self._fill(keys=[key, gen_key], args=[seen, payload, self._ttl_ms])
        return self.repo.unseal(sealed)

    async def invalidate(self, app_id: int) -> None:
        """Every process forgets `app_id` now (best effort: on Redis errors the TTLs bound it)."""
        key, gen_key = self._keys(app_id)
        try:
            async with self._redis.pipeline(transaction=True) as pipe:
                pipe.incr(gen_key)
                pipe.delete(key)
                pipe.publish(self.channel, str(app_id).encode())
                await pipe.execute()
        except (RedisError, OSError) as exc:
            self._redis_failed(exc)

    # -- writes: the database, then the invalidation ----------------------------------------

    async def update(
        self,
        app_id: int,
        *,
        display_name: str | None = None,
        redirect_uris: Sequence[str] | None = None,
        login_rate_limit_per_minute: int | None = None,
    ) -> AppInfo | None:
        info = await self.repo.update(
            app_id,
            display_name=display_name,
            redirect_uris=redirect_uris,
            login_rate_limit_per_minute=login_rate_limit_per_minute,
        )
        await self.invalidate(app_id)
        return info

    async def rotate_secret(
        self, app_id: int, new_secret: str, *, previous_until: datetime, now: datetime
    ) -> AppInfo | None:
        info = await self.repo.rotate_secret(
            app_id, new_secret, previous_until=previous_until, now=now
        )
        await self.invalidate(app_id)
        return info

    async def delete(self, app_id: int, *, now: datetime) -> Sequence[str] | None:
        live = await self.repo.delete(app_id, now=now)
        await self.invalidate(app_id)
        return live

    # -- everything else as the repository does it (get_info: admin reads, a replica) -------

    async def create(self, name: str, secret: str, **fields: Any) -> App:
        return await self.repo.create(name, secret, **fields)

    async def create_info(self, name: str, secret: str, **fields: Any) -> AppInfo:
        return await self.repo.create_info(name, secret, **fields)

    async def get_info(self, app_id: int) -> AppInfo | None:
        return await self.repo.get_info(app_id)

    async def get_by_name(self, name: str) -> App | None:
        return await self.repo.get_by_name(name)

    async def list(self) -> Sequence[App]:
        return await self.repo.list()

    async def page(self, *, after_id: int, limit: int) -> Sequence[AppInfo]:
        return await self.repo.page(after_id=after_id, limit=limit)

    async def count(self) -> int:
        return await self.repo.count()


class AppInvalidations:
    """Follows `{prefix}apps`; `on_change(app_id)` per message, `on_change(0)` after (re)connect."""

    def __init__(
        self,
        redis: Redis,
        channel: str,
        on_change: Callable[[int], None],
        *,
        retry_delay: float = 0.5,
    ) -> None:
        self._redis = redis
        self._channel = channel
        self._on_change = on_change
        self._retry_delay = retry_delay
        self._task: asyncio.Task[None] | None = None
        self.subscribed = asyncio.Event()

    async def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._follow(), name="app-invalidations")

    async def close(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

    async def _follow(self) -> None:
        while True:
            pubsub = self._redis.pubsub()
            try:
                await pubsub.subscribe(self._channel)
                self._on_change(0)  # whatever was published while we were not listening
                self.subscribed.set()
                while True:
                    message = await pubsub.get_message(timeout=5.0)
                    if message is None:
                        await pubsub.ping()  # a dead connection raises here
                        continue
                    if message.get("type") == "message":
                        data = message["data"]
                        self._on_change(int(data) if data.isdigit() else 0)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if self.subscribed.is_set():
                    log.warning("app cache: subscription lost", extra={"error": type(exc).__name__})
            finally:
                self.subscribed.clear()
                with contextlib.suppress(Exception):
                    await pubsub.aclose()  # type: ignore[no-untyped-call]
            await asyncio.sleep(self._retry_delay)
