"""Prebuilt statements, and the fast way to run them on PostgreSQL.

Why this module exists: on the hot paths (Login, Refresh) SQLAlchemy's own
work per statement was most of the service's CPU outside the password hash.
Building a Core statement per call (operators, bind parameters, the cache key)
and executing it through the asyncio adapter cost ~200 us of CPU per statement
on this machine; the same statement on the asyncpg connection under the pool
costs ~70 us (a Login runs six or seven of them). So the hot statements are
built once at import time with named `bindparam`s, and `Prebuilt` runs them:

- PostgreSQL: compiled once for the asyncpg dialect (`$n` placeholders, the
  bind types' processors, e.g. `UtcDateTime`'s refusal of naive datetimes), then
  sent with `fetchrow`/`execute` on the driver connection of a pooled
  connection (asyncpg's own statement cache prepares it once per connection).
  The pool, its size, timeouts and `statement_timeout` stay SQLAlchemy's; a
  connection-level failure invalidates the pooled connection as SQLAlchemy
  would.
- SQLite (the embedded default): the same statement object through SQLAlchemy
  (no per-call construction either).

Each raw statement is timed and traced like any other
(`sso.storage.instrumentation.observed_statement`). Errors surface as
driver exceptions and are translated by the caller's `@translated`, as before.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol, cast

from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.sql import ClauseElement, Executable
from sqlalchemy.sql.compiler import Compiled

from sso.storage._sql import autocommit
from sso.storage.errors import connection_lost
from sso.storage.instrumentation import observed_statement


class Row(Protocol):
    """What both paths return: a row readable by column name."""

    def __getitem__(self, key: str) -> Any: ...


@dataclass(frozen=True)
class _Compiled:
    sql: str
    names: tuple[str, ...]
    processors: tuple[Callable[[Any], Any] | None, ...]
    fixed: Mapping[str, Any]  # the values of literals the statement was built with

    def args(self, params: Mapping[str, Any]) -> list[Any]:
        values = [params[n] if n in params else self.fixed[n] for n in self.names]
        return [
            value if proc is None else proc(value)
            for value, proc in zip(values, self.processors, strict=True)
        ]


class Prebuilt:
    """Runs module-level statements with named parameters on one engine (see module doc)."""

    def __init__(self, engine: AsyncEngine) -> None:
        self._base = engine  # instrumentation is registered on the engine, not on views
        self._engine = autocommit(engine)
        self.is_pg = engine.dialect.name == "postgresql"
        self._compiled: dict[Executable, _Compiled] = {}  # statements hash by identity

    def _compile(self, stmt: Executable) -> _Compiled:
        found = self._compiled.get(stmt)
        if found is not None:
            return found
        dialect = self._engine.dialect
        compiled: Compiled = cast(ClauseElement, stmt).compile(dialect=dialect)
        names = tuple(getattr(compiled, "positiontup", None) or ())
        binds = getattr(compiled, "binds", {})
        processors = tuple(binds[name].type.bind_processor(dialect) for name in names)
        fixed = {n: binds[n].effective_value for n in names if not binds[n].required}
        entry = _Compiled(str(compiled), names, processors, fixed)
        self._compiled[stmt] = entry
        return entry

    async def first(self, stmt: Executable, params: Mapping[str, Any]) -> Row | None:
        """The first row of `stmt` (or None), in its own implicit transaction."""
        if not self.is_pg:
            async with self._engine.connect() as conn:
                row = (await conn.execute(stmt, dict(params))).first()
            return None if row is None else row._mapping
        record: Row | None = await self._send(stmt, params, "fetchrow")
        return record

    async def run(self, stmt: Executable, params: Mapping[str, Any]) -> None:
        """Execute `stmt` for its effect, in its own implicit transaction."""
        if not self.is_pg:
            async with self._engine.connect() as conn:
                await conn.execute(stmt, dict(params))
            return
        await self._send(stmt, params, "execute")

    async def _send(self, stmt: Executable, params: Mapping[str, Any], method: str) -> Any:
        """`method` (`fetchrow` / `execute`) of the driver connection of a pooled connection."""
        c = self._compile(stmt)
        async with self._engine.connect() as conn:
            driver = (await conn.get_raw_connection()).driver_connection
            with observed_statement(self._base, c.sql):
                try:
                    return await getattr(driver, method)(c.sql, *c.args(params))
                except BaseException as exc:
                    if connection_lost(exc) or isinstance(exc, asyncio.CancelledError):
                        # Never hand a dead (or mid-statement, when cancelled) connection
                        # to the next request; SQLAlchemy does the same for its own.
                        await conn.invalidate()
                    raise
