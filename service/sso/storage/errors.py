"""The one place where database and Redis driver errors become `sso.errors`.

Repositories wrap their bodies in `translate_errors()` (or decorate methods
with `@translated`); the Redis adapters use `redis_errors()`. Nothing above
`sso.storage` ever sees a SQLAlchemy, asyncpg, sqlite3 or redis exception.

The mapping (DESIGN.md §5; SECURITY_CHECKLIST J2, K6):

- unique violation (SQLSTATE 23505, SQLite UNIQUE/PRIMARY KEY) → `AlreadyExists`
- foreign key violation (23503): the referenced row is gone → `NotFound`
- serialization failure, deadlock, lock timeout (40001, 40P01, 55P03), SQLite
  busy / "database is locked" → `Conflict`
- data exception (class 22: NUL byte 22021, 22P05, out of range ...) → `InvalidArgument`
- connection refused or lost, pool or client timeout, statement timeout
  (57014), server shutting down, too many connections, bad credentials or
  missing database, SQLite I/O → `Unavailable`
- anything else (a bug: syntax error, missing column ...) → re-raised unchanged

Messages are fixed strings: never SQL, never a value. Client errors
(`AlreadyExists`, `NotFound`, `InvalidArgument`) drop the driver exception from
the chain (its text may quote the offending value); backend failures keep it as
`__cause__` for the operator's traceback (engines use `hide_parameters=True`).
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable, Coroutine, Iterator
from contextlib import contextmanager
from typing import Any, ParamSpec, TypeVar

import asyncpg
import redis.exceptions as redis_exc
from sqlalchemy import exc as sa_exc

from sso.errors import (
    AlreadyExists,
    Conflict,
    InvalidArgument,
    NotFound,
    SSOError,
    Unavailable,
)

P = ParamSpec("P")
T = TypeVar("T")

_DB_DOWN = "database unavailable"
_REDIS_DOWN = "cache unavailable"

# SQLSTATE classes/codes, https://www.postgresql.org/docs/current/errcodes-appendix.html
_PG_CONFLICT = {"40001", "40P01", "55P03"}
_PG_UNAVAILABLE_CODES = {
    "57014",  # query_canceled: statement_timeout
    "57P01",  # admin_shutdown
    "57P02",  # crash_shutdown
    "57P03",  # cannot_connect_now (starting up, recovery)
    "57P04",  # database_dropped
    "57P05",  # idle_session_timeout
    "25006",  # read_only_sql_transaction: we reached a replica (failover in progress)
    "3D000",  # invalid_catalog_name: the database does not exist
    "XX000",  # internal_error
}
_PG_UNAVAILABLE_CLASSES = {"08", "28", "53", "58"}  # connection, auth, resources, system

_SQLITE_CONFLICT = {"SQLITE_BUSY", "SQLITE_LOCKED"}
_SQLITE_UNAVAILABLE = {
    "SQLITE_IOERR",
    "SQLITE_FULL",
    "SQLITE_CANTOPEN",
    "SQLITE_READONLY",
    "SQLITE_NOTADB",
    "SQLITE_CORRUPT",
    "SQLITE_PROTOCOL",
    "SQLITE_NOMEM",
}


def _sqlstate(exc: BaseException) -> str | None:
    """The PostgreSQL SQLSTATE carried anywhere in the exception chain."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        code = getattr(current, "sqlstate", None) or getattr(current, "pgcode", None)
        if isinstance(code, str) and len(code) == 5:
            return code
        orig = getattr(current, "orig", None)
        current = orig if isinstance(orig, BaseException) else current.__cause__
    return None


def _sqlite_error(exc: BaseException) -> tuple[str, str] | None:
    """(primary error name, message) for an error raised by sqlite3, else None."""
    orig = getattr(exc, "orig", exc)
    name = getattr(orig, "sqlite_errorname", None)
    if not isinstance(name, str):
        return None
    # Extended codes such as SQLITE_BUSY_SNAPSHOT share the primary prefix.
    primary = "_".join(name.split("_")[:2])
    return name if name.startswith("SQLITE_CONSTRAINT") else primary, str(orig)


def _from_sqlstate(code: str) -> SSOError | None:
    if code == "23505":
        return AlreadyExists()
    if code == "23503":
        return NotFound()
    if code in _PG_CONFLICT:
        return Conflict()
    if code.startswith("22"):
        return InvalidArgument("invalid value")
    if code in _PG_UNAVAILABLE_CODES or code[:2] in _PG_UNAVAILABLE_CLASSES:
        return Unavailable(_DB_DOWN)
    return None


def _from_sqlite(name: str, message: str) -> SSOError | None:
    if name in {"SQLITE_CONSTRAINT_UNIQUE", "SQLITE_CONSTRAINT_PRIMARYKEY"}:
        return AlreadyExists()
    if name == "SQLITE_CONSTRAINT_FOREIGNKEY":
        return NotFound()
    if name in _SQLITE_CONFLICT or "database is locked" in message:
        return Conflict()
    if name == "SQLITE_TOOBIG":
        return InvalidArgument("invalid value")
    if name in _SQLITE_UNAVAILABLE:
        return Unavailable(_DB_DOWN)
    return None


def _asyncpg_unencodable(exc: BaseException) -> bool:
    """asyncpg could not encode a parameter (its client-side DataError is a ValueError)."""
    return isinstance(exc, asyncpg.InterfaceError) and isinstance(exc, ValueError)


def connection_lost(exc: BaseException) -> bool:
    """An asyncpg failure after which the connection is unusable (prebuilt.py drops it)."""
    if isinstance(exc, asyncpg.PostgresConnectionError | OSError):
        return True
    return isinstance(exc, asyncpg.InterfaceError) and not _asyncpg_unencodable(exc)


def map_db_error(exc: BaseException) -> SSOError | None:
    """The domain error for a database driver error, or None to re-raise it as is."""
    if isinstance(exc, SSOError):
        return None
    if isinstance(exc, sa_exc.TimeoutError):  # no free pooled connection in pool_timeout
        return Unavailable(_DB_DOWN)
    code = _sqlstate(exc)
    if code is not None:
        mapped = _from_sqlstate(code)
        if mapped is not None:
            return mapped
    sqlite = _sqlite_error(exc)
    if sqlite is not None:
        mapped = _from_sqlite(*sqlite)
        if mapped is not None:
            return mapped
    if isinstance(exc, sa_exc.DBAPIError) and exc.connection_invalidated:
        return Unavailable(_DB_DOWN)
    if isinstance(exc, sa_exc.DataError | OverflowError):
        return InvalidArgument("invalid value")
    # asyncpg's client-side errors, raised directly by the prebuilt statements
    # (prebuilt.py): a parameter it cannot encode, then connection failures.
    if _asyncpg_unencodable(exc):
        return InvalidArgument("invalid value")
    # asyncpg client-side failures (connection closed, protocol) without a SQLSTATE.
    if isinstance(exc, sa_exc.InterfaceError | sa_exc.DisconnectionError | asyncpg.InterfaceError):
        return Unavailable(_DB_DOWN)
    if isinstance(exc, sa_exc.OperationalError) and sqlite is None:
        return Unavailable(_DB_DOWN)
    # Connection refused/reset, and TimeoutError (== asyncio.TimeoutError), an OSError.
    if isinstance(exc, OSError):
        return Unavailable(_DB_DOWN)
    return None


def map_redis_error(exc: BaseException) -> SSOError | None:
    """The domain error for a redis-py error, or None to re-raise it as is."""
    if isinstance(
        exc,
        redis_exc.ConnectionError
        | redis_exc.TimeoutError
        | redis_exc.ReadOnlyError
        | redis_exc.OutOfMemoryError
        | redis_exc.ClusterDownError
        | redis_exc.TryAgainError
        | OSError,  # includes TimeoutError
    ):
        return Unavailable(_REDIS_DOWN)
    if isinstance(exc, redis_exc.ResponseError) and str(exc).startswith(("LOADING", "BUSY")):
        return Unavailable(_REDIS_DOWN)
    return None


def _raise_mapped(exc: Exception, mapped: SSOError) -> None:
    if isinstance(mapped, Unavailable | Conflict):
        raise mapped from exc
    # The driver's text may quote the offending value: keep it out of tracebacks.
    raise mapped from None


@contextmanager
def translate_errors() -> Iterator[None]:
    """Translate database driver errors raised inside the block (see the module table)."""
    try:
        yield
    except Exception as exc:
        mapped = map_db_error(exc)
        if mapped is None:
            raise
        _raise_mapped(exc, mapped)


@contextmanager
def redis_errors() -> Iterator[None]:
    """Translate redis-py errors raised inside the block into `Unavailable`."""
    try:
        yield
    except Exception as exc:
        mapped = map_redis_error(exc)
        if mapped is None:
            raise
        _raise_mapped(exc, mapped)


def translated(
    fn: Callable[P, Awaitable[T]],
) -> Callable[P, Coroutine[Any, Any, T]]:
    """Decorate an async repository method so its driver errors are translated.

    (A `@contextmanager` used as a decorator would only wrap the creation of the
    coroutine, not its execution; hence this wrapper.)
    """

    @functools.wraps(fn)
    async def wrapper(*args: P.args, **kwargs: P.kwargs) -> T:
        with translate_errors():
            return await fn(*args, **kwargs)

    return wrapper
