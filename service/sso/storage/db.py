"""Engines for PostgreSQL (asyncpg) and SQLite (aiosqlite), tuned for this service.

One function turns `DatabaseSettings` into an `AsyncEngine`, so every process
(server, CLI, tests) talks to the database with the same pool, timeouts and
connection settings:

- PostgreSQL: a bounded pool (`pool_timeout` → `Unavailable` rather than an
  unbounded queue), `statement_timeout` and a leaked-transaction guard set per
  connection through asyncpg `server_settings`, a connect timeout, a client-side
  command timeout slightly above the server's, and the prepared-statement cache
  of the SQLAlchemy asyncpg dialect (every statement here is prepared once per
  connection and reused).
- SQLite: WAL (readers never block the writer), `busy_timeout` (writers queue
  instead of failing at once), `foreign_keys=ON` (SQLite ignores FKs otherwise:
  no ON DELETE CASCADE) and `synchronous=NORMAL` (durable at checkpoints; safe
  with WAL), set on every new connection. WAL is a property of the file, and
  switching a file into it needs the file to itself: the busy timeout does not
  cover the switch, so two processes (or two engines) opening a database still in
  rollback mode at once made one fail with "database is locked" (one CI run in
  a few dozen). `ensure_sqlite_wal` therefore switches the file once, on one
  connection, retrying while another holds it, before any pool opens it; the
  migrations do it when they create the file.

`hide_parameters=True` keeps bound values (emails, hashes) out of the text of
SQLAlchemy exceptions and logs.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from pathlib import Path
from typing import Any

from pydantic import SecretStr
from sqlalchemy import event, text
from sqlalchemy.engine import URL, make_url
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.pool import StaticPool

from sso.config import DatabaseSettings
from sso.storage.errors import translate_errors
from sso.storage.replicas import ReadRouter

# Statements per pooled connection kept prepared; the service issues a few dozen.
PREPARED_STATEMENT_CACHE_SIZE = 256
SQLITE_BUSY_TIMEOUT_MS = 5000
# A transaction left open (a bug, a stuck task) holds row locks; PostgreSQL ends it.
IDLE_IN_TRANSACTION_TIMEOUT_MS = 60_000


def is_sqlite_url(url: str | URL) -> bool:
    return make_url(url).get_backend_name() == "sqlite"


def ensure_sqlite_dir(url: str | URL) -> None:
    """Create the parent directory of a file-backed SQLite database."""
    path = sqlite_file(url)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)


def sqlite_file(url: str | URL) -> Path | None:
    """The file behind a SQLite URL; None for in-memory and `file:` URI databases."""
    parsed = make_url(url)
    database = parsed.database
    if not database or database == ":memory:" or database.startswith("file:"):
        return None
    return Path(database)


def ensure_sqlite_wal(path: Path, *, timeout_ms: int = SQLITE_BUSY_TIMEOUT_MS) -> None:
    """Put the SQLite database at `path` in WAL mode (creating the file if missing).

    The switch takes an exclusive lock that SQLite's busy handler does not wait
    for, so it is retried here, for up to `timeout_ms`, while another connection
    holds the file. A file already in WAL mode costs one read of its header.
    """
    deadline = time.monotonic() + timeout_ms / 1000
    conn = sqlite3.connect(path, timeout=timeout_ms / 1000)
    try:
        while True:
            try:
                mode = conn.execute("PRAGMA journal_mode=WAL").fetchone()
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) or time.monotonic() >= deadline:
                    raise
                time.sleep(0.01)
                continue
            if mode and str(mode[0]).lower() == "wal":
                return
            raise sqlite3.OperationalError(f"SQLite kept journal mode {mode!r}, not WAL")
    finally:
        conn.close()


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA journal_mode")
        row = cursor.fetchone()
        if row and str(row[0]).lower() not in ("wal", "memory"):
            # A file that arrived in rollback mode after the engine was made (a restored
            # copy): switch it if nobody else holds it; if somebody does, the next new
            # connection tries again, and the file works meanwhile in rollback mode.
            try:
                cursor.execute("PRAGMA journal_mode=WAL")
            except Exception as exc:  # the driver's OperationalError: "database is locked"
                if "locked" not in str(exc):
                    raise
        cursor.execute("PRAGMA synchronous=NORMAL")
    finally:
        cursor.close()


def _postgres_engine(url: URL, settings: DatabaseSettings) -> AsyncEngine:
    server_settings = {"application_name": "sso", "jit": "off"}
    command_timeout: float | None = None
    if settings.statement_timeout_ms:
        server_settings["statement_timeout"] = str(settings.statement_timeout_ms)
        server_settings["idle_in_transaction_session_timeout"] = str(
            max(IDLE_IN_TRANSACTION_TIMEOUT_MS, settings.statement_timeout_ms * 2)
        )
        # Client-side bound for a server that stopped answering (network partition).
        command_timeout = settings.statement_timeout_ms / 1000 + 1.0
    return create_async_engine(
        url,
        echo=settings.echo,
        hide_parameters=True,
        pool_size=settings.pool_size,
        max_overflow=settings.max_overflow,
        pool_timeout=settings.pool_timeout,
        pool_recycle=settings.pool_recycle,
        pool_pre_ping=settings.pool_pre_ping,
        connect_args={
            "timeout": settings.connect_timeout,
            "command_timeout": command_timeout,
            "server_settings": server_settings,
            "prepared_statement_cache_size": PREPARED_STATEMENT_CACHE_SIZE,
        },
    )


def _sqlite_engine(url: URL, settings: DatabaseSettings) -> AsyncEngine:
    ensure_sqlite_dir(url)
    path = sqlite_file(url)
    if path is not None and path.exists():
        # Not for a missing file: `sso serve` must still find an unmigrated database
        # missing, not create it; the migrations switch the file they create.
        ensure_sqlite_wal(path)
    options: dict[str, Any] = {}
    if url.database in (None, "", ":memory:"):
        # One shared connection, or every checkout would see its own empty database.
        options["poolclass"] = StaticPool
    else:
        options.update(
            pool_size=settings.pool_size,
            max_overflow=settings.max_overflow,
            pool_timeout=settings.pool_timeout,
            pool_recycle=settings.pool_recycle,
        )
    engine = create_async_engine(
        url,
        echo=settings.echo,
        hide_parameters=True,
        connect_args={"timeout": SQLITE_BUSY_TIMEOUT_MS / 1000},
        **options,
    )
    event.listen(engine.sync_engine, "connect", _sqlite_pragmas)
    return engine


def create_engine(settings: DatabaseSettings) -> AsyncEngine:
    """The service's engine for `settings.url` (PostgreSQL via asyncpg, or SQLite)."""
    url = make_url(settings.url.get_secret_value())
    if url.get_backend_name() == "sqlite":
        return _sqlite_engine(url, settings)
    if url.get_backend_name() == "postgresql":
        return _postgres_engine(url, settings)
    raise ValueError(f"unsupported database backend: {url.get_backend_name()}")


async def ping(engine: AsyncEngine, *, seconds: float = 2.0) -> None:
    """Run `SELECT 1`; `Unavailable` when the database cannot answer within `seconds`."""
    with translate_errors():
        async with asyncio.timeout(seconds):
            async with engine.connect() as conn:
                await conn.execute(text("SELECT 1"))


def create_engine_for(url: str, settings: DatabaseSettings) -> AsyncEngine:
    """An engine for another URL (a replica) with the pool and timeouts of `settings`."""
    return create_engine(settings.model_copy(update={"url": SecretStr(url)}))


class Database:
    """The engines of one process: the primary, and the router for lag-tolerant reads.

    `primary` takes every write and every read that decides security; the `reads`
    router's `first/all/scalar/run` serve reads that may be a few seconds stale from a
    healthy replica (docs/architecture.md, read routing).
    """

    def __init__(self, primary: AsyncEngine, reads: ReadRouter | None = None) -> None:
        self.primary = primary
        self.reads = reads or ReadRouter(primary)

    @classmethod
    def from_settings(cls, settings: DatabaseSettings) -> Database:
        primary = create_engine(settings)
        replicas = [
            create_engine_for(u.get_secret_value(), settings) for u in settings.replica_urls
        ]
        return cls(primary, ReadRouter(primary, replicas, max_lag=settings.max_replica_lag))

    @property
    def engine(self) -> AsyncEngine:
        return self.primary

    @property
    def is_sqlite(self) -> bool:
        return self.primary.dialect.name == "sqlite"

    async def ping(self, *, seconds: float = 2.0) -> None:
        """Readiness check: `Unavailable` unless the primary answers in time."""
        await ping(self.primary, seconds=seconds)

    async def dispose(self) -> None:
        await self.reads.dispose()
        await self.primary.dispose()
