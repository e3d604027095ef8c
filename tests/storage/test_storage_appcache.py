"""The shared app cache (sso.storage.appcache) on real PostgreSQL + Redis, two real services.

Two service instances share one database and one Redis prefix, as two pods do.
A secret rotation, an update or a deletion made through one is seen by the other
within the publish latency (asserted against a bound far below the 30 s
in-process TTL), the Redis copy never holds a usable secret, a fill racing an
invalidation cannot put the old row back, and with Redis stopped lookups still
work from the database, changes then bounded by the in-process TTL. Embedded
mode (SQLite, no Redis) keeps the plain repository.
"""

from __future__ import annotations

import asyncio
import secrets
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import timedelta
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "api"))
from sso_harness import Running, make_settings, start, stop

from sso.config import RedisSettings
from sso.domain.admin_records import Actor
from sso.errors import NotFound
from sso.storage.appcache import RedisAppCache
from sso.storage.apps import SqlAppRepository

ADMIN = Actor("test")
# Publish latency on one machine is milliseconds; the in-process TTL is 30 s. A second
# leaves room for a loaded box while still proving the message, not the TTL, did it.
BOUND = 1.0


async def within(check: Callable[[], Awaitable[bool]], bound: float) -> float:
    start = time.monotonic()
    while time.monotonic() - start < bound:
        if await check():
            return time.monotonic() - start
        await asyncio.sleep(0.005)
    raise AssertionError(f"not seen within {bound}s")


async def two(tmp: Path, pg_url: str, redis_url: str, ttl: float = 30.0) -> list[Running]:
    prefix = f"sso-{secrets.token_hex(4)}:"
    out: list[Running] = []
    for name in ("a", "b"):
        settings = make_settings(
            tmp / name, pg_url, redis_url, app_cache_ttl=timedelta(seconds=ttl)
        )
        # One deployment: the same Redis prefix, data key and signing keys in both pods.
        shared = {"redis": RedisSettings(url=redis_url, key_prefix=prefix)}
        if out:
            shared |= {"data_key": out[0].settings.data_key, "keys": out[0].settings.keys}
        out.append(await start(settings.model_copy(update=shared)))
    return out


@pytest.fixture
async def pair(tmp_path: Path, pg_url: str, redis_server: str) -> AsyncIterator[list[Running]]:
    running = await two(tmp_path, pg_url, redis_server)
    yield running
    for r in running:
        await stop(r)


@pytest.mark.postgres
@pytest.mark.redis
async def test_rotation_update_delete_reach_the_other_instance(pair: list[Running]) -> None:
    a, b = pair
    app_id = a.app.id
    assert isinstance(b.container.auth.apps, RedisAppCache)
    old = (await b.container.auth.app(app_id)).secret  # cached in b's process and in Redis
    assert old == a.app.secret

    _, new = await a.container.bundle.admin.rotate_app_secret(ADMIN, app_id, 1)

    async def rotated() -> bool:
        return (await b.container.auth.app(app_id)).secret == new

    seen = await within(rotated, BOUND)
    assert (await b.container.auth.app(app_id)).previous_secret == old

    await a.container.bundle.admin.update_app(
        ADMIN, app_id, ["login_rate_limit_per_minute"], login_rate_limit_per_minute=7
    )

    async def updated() -> bool:
        return (await b.container.auth.app(app_id)).login_rate_limit_per_minute == 7

    seen = max(seen, await within(updated, BOUND))

    await a.container.bundle.admin.delete_app(ADMIN, app_id)

    async def deleted() -> bool:
        try:
            await b.container.auth.app(app_id)
        except NotFound:
            return True
        return False

    seen = max(seen, await within(deleted, BOUND))
    assert seen < BOUND


@pytest.mark.postgres
@pytest.mark.redis
async def test_redis_holds_only_the_encrypted_row(pair: list[Running], redis_server: str) -> None:
    a, _ = pair
    cache = a.container.auth.apps
    assert isinstance(cache, RedisAppCache)
    app = await cache.get(a.app.id)
    assert app is not None and app.secret == a.app.secret
    key = f"{a.settings.redis.key_prefix}app:{a.app.id}"
    raw = await cache._redis.get(key)  # the stored value, as an operator would see it
    assert raw is not None and a.app.secret.encode() not in raw
    ttl = await cache._redis.pttl(key)
    assert 0 < ttl <= a.settings.redis.app_cache_ttl * 1000


@pytest.mark.postgres
@pytest.mark.redis
async def test_fill_racing_an_invalidation_is_dropped(pair: list[Running]) -> None:
    a, _ = pair
    cache = a.container.auth.apps
    assert isinstance(cache, RedisAppCache)
    key, gen_key = cache._keys(a.app.id)
    await cache.invalidate(a.app.id)  # generation 1
    seen_before = "1"
    await cache.invalidate(a.app.id)  # a change lands while a reader was at the database
    stored = await cache._fill(keys=[key, gen_key], args=[seen_before, '{"old": 1}', 10_000])
    assert stored == 0 and await cache._redis.get(key) is None
    # The next lookup fills with the current generation and is served from Redis after.
    assert (await cache.get(a.app.id)) is not None
    assert await cache._redis.get(key) is not None


@pytest.mark.postgres
@pytest.mark.redis
async def test_redis_down_lookups_work_and_ttl_bounds_changes(
    tmp_path: Path, pg_url: str, redis_factory: Callable[[], object]
) -> None:
    redis = redis_factory()
    a, b = await two(tmp_path, pg_url, redis.url, ttl=1.0)  # type: ignore[attr-defined]
    try:
        app_id = a.app.id
        await b.container.auth.app(app_id)
        redis.stop()  # type: ignore[attr-defined]
        # 20 concurrent lookups with Redis gone: all answered from the database.
        apps = await asyncio.gather(*(b.container.auth.apps.get(app_id) for _ in range(20)))
        assert all(x is not None and x.id == app_id for x in apps)
        _, new = await a.container.bundle.admin.rotate_app_secret(ADMIN, app_id, 1)

        async def rotated() -> bool:
            return (await b.container.auth.app(app_id)).secret == new

        # No message can arrive: the in-process TTL (1 s here) is the bound.
        await within(rotated, 1.0 + 2.0)
    finally:
        for r in (a, b):
            await stop(r)


async def test_embedded_mode_keeps_the_plain_repository(tmp_path: Path, sqlite_url: str) -> None:
    running = await start(make_settings(tmp_path, sqlite_url))
    try:
        assert type(running.container.auth.apps) is SqlAppRepository
        _, new = await running.container.bundle.admin.rotate_app_secret(ADMIN, running.app.id, 1)
        assert (await running.container.auth.app(running.app.id)).secret == new
    finally:
        await stop(running)
