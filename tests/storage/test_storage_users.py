"""SqlUserRepository on PostgreSQL and SQLite, including the K6 registration race."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import pytest
from sqlalchemy import func, select
from sqlalchemy.exc import StatementError
from sqlalchemy.ext.asyncio import AsyncEngine

from sso.config import DatabaseSettings
from sso.errors import AlreadyExists, InvalidArgument, NotFound
from sso.storage.db import create_engine
from sso.storage.tables import users
from sso.storage.users import SqlUserRepository


def _engine(url: str, **overrides: object) -> AsyncEngine:
    return create_engine(DatabaseSettings(url=url, **overrides))  # type: ignore[arg-type]


@pytest.fixture
async def engine(db_url: str) -> AsyncIterator[AsyncEngine]:
    engine = _engine(db_url)
    yield engine
    await engine.dispose()


async def test_create_get_update(engine: AsyncEngine) -> None:
    repo = SqlUserRepository(engine)
    user = await repo.create("alice@example.com", "hash-1")
    assert user.id > 0 and user.email == "alice@example.com"
    assert (user.is_admin, user.email_verified, user.tokens_valid_after) == (False, False, None)
    assert user.created_at.tzinfo is UTC
    assert abs((datetime.now(UTC) - user.created_at).total_seconds()) < 60

    assert await repo.get_by_email("alice@example.com") == user
    assert await repo.get_by_id(user.id) == user
    assert await repo.get_by_email("bob@example.com") is None
    assert await repo.get_by_id(user.id + 1000) is None

    await repo.update_password_hash(user.id, "hash-2")
    assert (await repo.get_by_id(user.id)).password_hash == "hash-2"  # type: ignore[union-attr]
    with pytest.raises(NotFound):
        await repo.update_password_hash(user.id + 1000, "x")

    assert await repo.set_admin(user.id, True) is True
    assert (await repo.get_by_id(user.id)).is_admin is True  # type: ignore[union-attr]
    assert await repo.set_admin(user.id + 1000, True) is False

    admin = await repo.create("root@example.com", "h", is_admin=True)
    assert admin.is_admin and admin.id != user.id


async def test_duplicate_email_is_already_exists(engine: AsyncEngine) -> None:
    repo = SqlUserRepository(engine)
    await repo.create("dup@example.com", "h")
    with pytest.raises(AlreadyExists) as info:
        await repo.create("dup@example.com", "other")
    assert "dup@example.com" not in str(info.value)
    assert info.value.__cause__ is None  # decided by ON CONFLICT, no driver error involved


async def _race(url: str, attempts: int) -> tuple[int, int, list[BaseException], float]:
    engine = _engine(url, pool_size=20, max_overflow=10, pool_timeout=60)
    try:
        repo = SqlUserRepository(engine)
        started = time.perf_counter()
        results = await asyncio.gather(
            *(repo.create("race@example.com", f"h{i}") for i in range(attempts)),
            return_exceptions=True,
        )
        elapsed = time.perf_counter() - started
        async with engine.connect() as conn:
            rows = (
                await conn.execute(select(func.count()).where(users.c.email == "race@example.com"))
            ).scalar_one()
    finally:
        await engine.dispose()
    created = sum(1 for r in results if not isinstance(r, BaseException))
    duplicates = sum(1 for r in results if isinstance(r, AlreadyExists))
    others = [
        r for r in results if isinstance(r, BaseException) and not isinstance(r, AlreadyExists)
    ]
    assert rows == 1
    return created, duplicates, others, elapsed


@pytest.mark.postgres
async def test_1000_concurrent_creates_same_email_postgres(pg_url: str) -> None:
    created, duplicates, others, elapsed = await _race(pg_url, 1000)
    print(f"\n1000 concurrent creates on PostgreSQL: {elapsed * 1000:.0f} ms")
    assert (created, duplicates, others) == (1, 999, [])


async def test_200_concurrent_creates_same_email_sqlite(sqlite_url: str) -> None:
    created, duplicates, others, elapsed = await _race(sqlite_url, 200)
    print(f"\n200 concurrent creates on SQLite: {elapsed * 1000:.0f} ms")
    assert (created, duplicates, others) == (1, 199, [])


@pytest.mark.postgres
async def test_nul_byte_in_email_is_invalid_argument_postgres(pg_url: str) -> None:
    engine = _engine(pg_url)
    try:
        repo = SqlUserRepository(engine)
        with pytest.raises(InvalidArgument) as info:
            await repo.create("a\x00b@example.com", "h")
        assert "example.com" not in str(info.value)
        with pytest.raises(InvalidArgument):
            await repo.get_by_email("a\x00b@example.com")
        # The connection that saw the error is still usable.
        assert await repo.get_by_email("nobody@example.com") is None
    finally:
        await engine.dispose()


async def test_naive_datetimes_are_refused(engine: AsyncEngine) -> None:
    repo = SqlUserRepository(engine, clock=lambda: datetime(2030, 1, 1))
    with pytest.raises(StatementError, match="naive datetime"):  # a bug: not translated
        await repo.create("naive@example.com", "h")
