"""SQLite's WAL switch under real concurrency: several engines opening one file at once.

Switching a file into WAL takes an exclusive lock that SQLite's busy timeout does
not wait for. Before `ensure_sqlite_wal`, every new pooled connection ran the
switch, and engines that opened a database still in rollback mode at the same
time failed one connection in ~40 with "database is locked" (the legacy-import
test that runs two importers at once failed in CI this way). These tests open a
rollback-mode file from several engines at once, many rounds over, and write.
"""

from __future__ import annotations

import asyncio
import shutil
import sqlite3
from pathlib import Path

import pytest
from sqlalchemy import text

from sso.config import DatabaseSettings
from sso.storage import migrate
from sso.storage.db import create_engine, ensure_sqlite_wal

ENGINES = 4
ROUNDS = 60  # without the fix: ~6 failed connections in 60 rounds of 4 engines


def _journal_mode(path: Path) -> str:
    conn = sqlite3.connect(path)
    try:
        return str(conn.execute("PRAGMA journal_mode").fetchone()[0])
    finally:
        conn.close()


def _rollback_mode_template(path: Path) -> Path:
    conn = sqlite3.connect(path)
    try:
        conn.execute("PRAGMA journal_mode=DELETE")
        conn.execute("CREATE TABLE t (x INTEGER)")
        conn.commit()
    finally:
        conn.close()
    assert _journal_mode(path) == "delete"
    return path


def _fresh_copy(template: Path, path: Path) -> None:
    for suffix in ("", "-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)
    shutil.copyfile(template, path)


async def _write_from_engines(path: Path, *, copy_from: Path | None = None) -> list[BaseException]:
    """Open ENGINES engines on `path`, then write three rows from each at once."""
    url = f"sqlite+aiosqlite:///{path}"
    engines = [create_engine(DatabaseSettings(url=url)) for _ in range(ENGINES)]
    if copy_from is not None:  # the file arrives after the engines were made
        _fresh_copy(copy_from, path)

    async def write(engine_index: int) -> None:
        for _ in range(3):
            async with engines[engine_index].begin() as conn:
                await conn.execute(text("INSERT INTO t VALUES (1)"))

    try:
        results = await asyncio.gather(*(write(i) for i in range(ENGINES)), return_exceptions=True)
    finally:
        for engine in engines:
            await engine.dispose()
    return [r for r in results if isinstance(r, BaseException)]


async def test_engines_opening_a_rollback_mode_file_at_once_all_write(tmp_path: Path) -> None:
    template = _rollback_mode_template(tmp_path / "template.db")
    path = tmp_path / "sso.db"
    failures: list[BaseException] = []
    for _ in range(ROUNDS):
        _fresh_copy(template, path)
        failures += await _write_from_engines(path)
        assert _journal_mode(path) == "wal"
    assert failures == []
    conn = sqlite3.connect(path)
    try:
        assert conn.execute("SELECT COUNT(*) FROM t").fetchone()[0] == ENGINES * 3
    finally:
        conn.close()


async def test_a_rollback_mode_file_that_arrives_after_the_engines_is_switched(
    tmp_path: Path,
) -> None:
    """The per-connection fallback: the engines were made before the file existed."""
    template = _rollback_mode_template(tmp_path / "template.db")
    path = tmp_path / "sso.db"
    failures: list[BaseException] = []
    for _ in range(ROUNDS):
        for suffix in ("", "-wal", "-shm"):
            Path(f"{path}{suffix}").unlink(missing_ok=True)
        failures += await _write_from_engines(path, copy_from=template)
        assert _journal_mode(path) == "wal"
    assert failures == []


def test_migrations_create_the_file_in_wal_mode(tmp_path: Path) -> None:
    path = tmp_path / "new" / "sso.db"
    migrate.upgrade(f"sqlite+aiosqlite:///{path}")
    assert _journal_mode(path) == "wal"


def test_ensure_wal_waits_for_a_holder_and_then_switches(tmp_path: Path) -> None:
    path = _rollback_mode_template(tmp_path / "held.db")
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")
    try:
        with pytest.raises(sqlite3.OperationalError, match="locked"):
            ensure_sqlite_wal(path, timeout_ms=200)  # gives up after its timeout
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    ensure_sqlite_wal(path, timeout_ms=200)
    assert _journal_mode(path) == "wal"
