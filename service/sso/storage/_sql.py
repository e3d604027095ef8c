"""Small helpers shared by the SQL repositories (dialect choice, clock, autocommit, locks).

Single-statement operations run on an AUTOCOMMIT view of the engine: on
asyncpg a plain `engine.connect()` sends BEGIN and ROLLBACK/COMMIT as separate
round trips around the one statement, which triples the cost of a primary-key
lookup. A single statement is atomic on its own; multi-statement work uses
`engine.begin()`.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from datetime import UTC, datetime

from sqlalchemy import Insert, Table
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncEngine

Clock = Callable[[], datetime]


def utc_now() -> datetime:
    return datetime.now(UTC)


def autocommit(engine: AsyncEngine) -> AsyncEngine:
    """A view of `engine` (same pool) running each statement in its own transaction."""
    return engine.execution_options(isolation_level="AUTOCOMMIT")


def insert_or_nothing(engine: AsyncEngine, table: Table, *conflict_columns: str) -> Insert:
    """`INSERT ... ON CONFLICT (conflict_columns) DO NOTHING` in the engine's dialect.

    With `.returning(...)` this is an atomic "insert unless taken": no row back
    means the unique value exists (or a concurrent insert of it just won).
    """
    columns = list(conflict_columns)
    if engine.dialect.name == "postgresql":
        return postgresql.insert(table).on_conflict_do_nothing(index_elements=columns)
    if engine.dialect.name == "sqlite":
        return sqlite.insert(table).on_conflict_do_nothing(index_elements=columns)
    raise ValueError(f"unsupported dialect {engine.dialect.name}")  # pragma: no cover


def sqlite_writer(engine: AsyncEngine) -> AbstractAsyncContextManager[None]:
    """A lock for this process's writers on SQLite (one writer anyway: queue here instead
    of busy-polling the file lock); a no-op on PostgreSQL. Reusable: keep one per repository.
    """
    if engine.dialect.name == "sqlite":
        return asyncio.Lock()
    return contextlib.nullcontext()
