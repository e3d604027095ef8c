"""Denylist on a real Redis and in memory; a dead or silent Redis is `Unavailable`, quickly."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import AsyncIterator, Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from redis.asyncio import Redis

from sso.config import RedisSettings
from sso.errors import Unavailable
from sso.storage.denylist import MemoryDenylist, RedisDenylist, ReplicatedDenylist
from sso.storage.redis import create_redis, ping

TIMEOUT = 0.25


def _redis(url: str) -> Redis:
    return create_redis(RedisSettings(url=url, timeout=TIMEOUT))  # type: ignore[arg-type]


@pytest.fixture
async def redis(redis_server: str) -> AsyncIterator[Redis]:
    client = _redis(redis_server)
    yield client
    await client.aclose()


@pytest.mark.redis
async def test_redis_denylist_add_contains_and_expiry(redis: Redis) -> None:
    deny = RedisDenylist(redis, "test:")
    now = datetime.now(UTC)
    assert not await deny.contains("s1")
    await deny.add("s1", now + timedelta(milliseconds=300))
    await deny.add("s2", now + timedelta(minutes=5))
    await deny.add("s3", now - timedelta(seconds=1))  # already over: nothing to store
    assert await deny.contains("s1") and await deny.contains("s2")
    assert not await deny.contains("s3")
    assert 0 < await redis.pttl("test:deny:s2") <= 300_000
    await asyncio.sleep(0.45)
    assert not await deny.contains("s1")
    assert await deny.contains("s2")
    await ping(redis)


async def test_memory_denylist_expiry_and_pruning() -> None:
    clock = [datetime(2030, 1, 1, tzinfo=UTC)]
    deny = MemoryDenylist(clock=lambda: clock[0])
    await deny.add("a", clock[0] + timedelta(minutes=5))
    await deny.add("b", clock[0] - timedelta(seconds=1))
    assert await deny.contains("a") and not await deny.contains("b")
    await deny.add("a", clock[0] + timedelta(minutes=1))  # never shortens
    clock[0] += timedelta(minutes=2)
    assert await deny.contains("a")
    clock[0] += timedelta(minutes=4)
    assert not await deny.contains("a") and len(deny) == 0

    for i in range(5000):  # short-lived entries are swept as the dict grows
        await deny.add(f"s{i}", clock[0] + timedelta(seconds=1))
        clock[0] += timedelta(milliseconds=10)
    assert len(deny) < 2 * 1024 + 200


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def _timed(fn: Callable[[], Any]) -> float:
    started = time.perf_counter()
    with pytest.raises(Unavailable) as info:
        await fn()
    assert str(info.value) == "cache unavailable"
    return time.perf_counter() - started


async def test_closed_port_is_unavailable() -> None:
    client = _redis(f"redis://127.0.0.1:{_closed_port()}/0")
    try:
        deny = RedisDenylist(client)
        assert await _timed(lambda: deny.contains("s")) < TIMEOUT
        assert await _timed(lambda: deny.add("s", datetime.now(UTC) + timedelta(minutes=1))) < 1
        assert await _timed(lambda: ping(client)) < TIMEOUT
    finally:
        await client.aclose()


@pytest.mark.redis
async def test_redis_killed_mid_use_is_unavailable(redis_factory: Callable[[], Any]) -> None:
    server = redis_factory()
    client = _redis(server.url)
    try:
        deny = RedisDenylist(client)
        await deny.add("s", datetime.now(UTC) + timedelta(minutes=1))
        assert await deny.contains("s")  # a pooled connection now exists
        server.stop()
        assert await _timed(lambda: deny.contains("s")) < TIMEOUT
    finally:
        await client.aclose()


@pytest.fixture
def silent_server() -> Iterator[int]:
    """A TCP port that accepts connections and never answers (a hung Redis)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(16)
        yield int(sock.getsockname()[1])


async def test_silent_redis_is_unavailable_within_the_timeout(silent_server: int) -> None:
    client = _redis(f"redis://127.0.0.1:{silent_server}/0")
    try:
        elapsed = await _timed(lambda: RedisDenylist(client).contains("s"))
        assert TIMEOUT * 0.8 < elapsed < TIMEOUT * 2
    finally:
        await client.aclose()


@pytest.mark.redis
async def test_replicated_denylist_copies_follow_each_other(redis_server: str) -> None:
    prefix = f"test-{time.monotonic_ns()}:"
    first_client, second_client = _redis(redis_server), _redis(redis_server)
    now = datetime.now(UTC)
    await RedisDenylist(first_client, prefix).add("before", now + timedelta(minutes=5))
    first = ReplicatedDenylist(first_client, prefix)
    second = ReplicatedDenylist(second_client, prefix)
    try:
        await first.start()
        await second.start()
        deadline = time.monotonic() + 5
        while not (first.synced and second.synced):
            assert time.monotonic() < deadline
            await asyncio.sleep(0.01)
        assert await second.contains("before")  # loaded by SCAN
        assert not await second.contains("s1")
        await first.add("s1", now + timedelta(minutes=5))
        assert await first.contains("s1")  # the adding process: at once
        deadline = time.monotonic() + 1
        while not await second.contains("s1"):
            assert time.monotonic() < deadline
            await asyncio.sleep(0.005)
        assert 0 < await first_client.pttl(f"{prefix}deny:s1") <= 300_000
    finally:
        await first.close()
        await second.close()
        await first_client.aclose()
        await second_client.aclose()


async def test_replicated_denylist_never_synced_is_unavailable_without_redis() -> None:
    client = _redis("redis://127.0.0.1:1/0")
    deny = ReplicatedDenylist(client, "test:")
    try:
        await deny.start()
        with pytest.raises(Unavailable):
            await deny.contains("s1")
    finally:
        await deny.close()
        await client.aclose()
