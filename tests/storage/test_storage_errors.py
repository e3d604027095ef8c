"""Driver errors become `sso.errors` in one place, with messages free of SQL and values."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

import pytest
from sqlalchemy import exc as sa_exc
from sqlalchemy import text

from sso.config import DatabaseSettings
from sso.errors import Conflict, InvalidArgument, SSOError, Unavailable
from sso.storage.db import Database, create_engine
from sso.storage.errors import map_db_error, translate_errors


def _settings(url: str, **overrides: object) -> DatabaseSettings:
    return DatabaseSettings(url=url, **overrides)  # type: ignore[arg-type]


def _closed_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def test_unreachable_postgres_is_unavailable_fast() -> None:
    db = Database.from_settings(
        _settings(f"postgresql+asyncpg://sso@127.0.0.1:{_closed_port()}/x", connect_timeout=1)
    )
    started = time.perf_counter()
    with pytest.raises(Unavailable) as info:
        await db.ping()
    assert time.perf_counter() - started < 1.0
    assert str(info.value) == "database unavailable"
    await db.dispose()


@pytest.mark.postgres
async def test_missing_database_is_unavailable(postgres_server: object) -> None:
    url = postgres_server.url("does_not_exist")  # type: ignore[attr-defined]
    db = Database.from_settings(_settings(url))
    with pytest.raises(Unavailable):
        await db.ping()
    await db.dispose()


@pytest.mark.postgres
async def test_statement_timeout_is_unavailable(pg_url: str) -> None:
    engine = create_engine(_settings(pg_url, statement_timeout_ms=100))
    try:
        with pytest.raises(Unavailable) as info, translate_errors():
            async with engine.connect() as conn:
                await conn.execute(text("SELECT pg_sleep(2)"))
        assert "pg_sleep" not in str(info.value) and "SELECT" not in str(info.value)
        await Database(engine).ping()  # the pool recovered
    finally:
        await engine.dispose()


@pytest.mark.postgres
async def test_pool_timeout_is_unavailable(pg_url: str) -> None:
    engine = create_engine(_settings(pg_url, pool_size=1, max_overflow=0, pool_timeout=0.2))
    try:
        async with engine.connect():
            started = time.perf_counter()
            with pytest.raises(Unavailable):
                await Database(engine).ping()
            assert time.perf_counter() - started < 1.0
    finally:
        await engine.dispose()


@pytest.mark.postgres
async def test_serialization_failure_is_conflict(pg_url: str) -> None:
    engine = create_engine(_settings(pg_url))
    try:
        async with engine.begin() as conn:
            await conn.execute(text("CREATE TABLE t (id int PRIMARY KEY, v int)"))
            await conn.execute(text("INSERT INTO t VALUES (1, 0)"))
        first = await engine.connect()
        try:
            await first.execution_options(isolation_level="REPEATABLE READ")
            await first.begin()
            await first.execute(text("SELECT v FROM t WHERE id = 1"))
            async with engine.begin() as second:
                await second.execute(text("UPDATE t SET v = 2 WHERE id = 1"))
            with pytest.raises(Conflict), translate_errors():
                await first.execute(text("UPDATE t SET v = 3 WHERE id = 1"))
        finally:
            await first.close()
    finally:
        await engine.dispose()


@pytest.mark.postgres
async def test_out_of_range_value_is_invalid_argument(pg_url: str) -> None:
    engine = create_engine(_settings(pg_url))
    try:
        with pytest.raises(InvalidArgument), translate_errors():
            async with engine.connect() as conn:
                await conn.execute(text("SELECT CAST(:v AS int)"), {"v": "12345678901"})
    finally:
        await engine.dispose()


def test_sqlite_locked_is_conflict(tmp_path: Path) -> None:
    path = tmp_path / "locked.db"
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("CREATE TABLE t (x)")
    holder.execute("BEGIN IMMEDIATE")
    other = sqlite3.connect(path, timeout=0)
    try:
        other.execute("INSERT INTO t VALUES (1)")
    except sqlite3.OperationalError as raw:
        wrapped = sa_exc.OperationalError("INSERT INTO t VALUES (?)", (1,), raw)
        assert isinstance(map_db_error(wrapped), Conflict)
    else:  # pragma: no cover
        pytest.fail("expected 'database is locked'")
    finally:
        other.close()
        holder.close()


def test_sqlite_unopenable_file_is_unavailable(tmp_path: Path) -> None:
    with pytest.raises(sqlite3.OperationalError) as info:
        sqlite3.connect(tmp_path / "no" / "such" / "dir.db")
    wrapped = sa_exc.OperationalError("connect", None, info.value)
    assert isinstance(map_db_error(wrapped), Unavailable)


@pytest.mark.parametrize(
    ("sqlstate", "expected"),
    [
        ("23505", "AlreadyExists"),
        ("23503", "NotFound"),
        ("40001", "Conflict"),
        ("40P01", "Conflict"),
        ("22021", "InvalidArgument"),
        ("22P05", "InvalidArgument"),
        ("57014", "Unavailable"),
        ("08006", "Unavailable"),
        ("53300", "Unavailable"),
        ("57P01", "Unavailable"),
        ("42601", None),  # syntax error: a bug, re-raised
        ("23514", None),  # check violation: a bug, re-raised
    ],
)
def test_sqlstate_table(sqlstate: str, expected: str | None) -> None:
    class DriverError(Exception):
        def __init__(self) -> None:
            super().__init__("boom: value 'secret@example.com'")
            self.sqlstate = sqlstate

    wrapped = sa_exc.DBAPIError("SELECT 1", None, DriverError())
    mapped = map_db_error(wrapped)
    assert (type(mapped).__name__ if mapped else None) == expected
    if mapped is not None:
        assert "secret" not in str(mapped) and "SELECT" not in str(mapped)


def test_unmapped_errors_pass_through() -> None:
    with pytest.raises(KeyError), translate_errors():
        raise KeyError("x")
    with pytest.raises(SSOError), translate_errors():
        raise Conflict()
