"""Run the Alembic migrations from code: `sso migrate`, the operator's Job, tests.

Alembic's commands are synchronous and our `env.py` drives the async drivers
with `asyncio.run()`, which cannot nest inside a running event loop. So each
function here runs Alembic on the calling thread when no loop is running there,
and on a worker thread (blocking until done) when one is: `upgrade(url)` works
from a CLI, from `async def main()` and from an async test fixture alike. The
`a*` coroutines are the non-blocking variants for async callers.

The migrations directory is found, in order, from `SSO_MIGRATIONS_DIR`, next to
the source tree (`<repo>/migrations`, for editable installs and tests), or at
`/app/migrations` (where the container image copies it).
"""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal, TypeVar

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Identity, pool
from sqlalchemy.engine import Connection, make_url
from sqlalchemy.ext.asyncio import create_async_engine

from sso.storage.tables import UtcDateTime, metadata

T = TypeVar("T")

CONTAINER_MIGRATIONS_DIR = Path("/app/migrations")


def migrations_dir() -> Path:
    """The directory holding env.py and versions/ (see the module docstring)."""
    configured = os.environ.get("SSO_MIGRATIONS_DIR")
    candidates = [Path(configured)] if configured else []
    candidates += [Path(__file__).resolve().parents[3] / "migrations", CONTAINER_MIGRATIONS_DIR]
    for candidate in candidates:
        if (candidate / "env.py").is_file():
            return candidate
    tried = ", ".join(str(c) for c in candidates)
    raise FileNotFoundError(f"no Alembic migrations directory found (tried {tried})")


def alembic_config(url: str) -> Config:
    """An Alembic `Config` for `url` that does not touch the process's logging."""
    config = Config()
    config.set_main_option("script_location", str(migrations_dir()))
    config.attributes["url"] = url
    config.attributes["configure_logger"] = False
    return config


def _compare_server_default(
    context: MigrationContext,
    inspected_column: Any,
    metadata_column: Any,
    inspected_default: str | None,
    metadata_default: Any,
    rendered_metadata_default: str | None,
) -> bool | None:
    """SQLite has no IDENTITY (its INTEGER PRIMARY KEY is the rowid): not a difference."""
    if isinstance(metadata_default, Identity):
        return False
    return None  # Alembic's own comparison


def _render_item(type_: str, obj: Any, autogen_context: Any) -> str | Literal[False]:
    """Render `UtcDateTime` as the type it wraps: migrations never import the models."""
    if type_ == "type" and isinstance(obj, UtcDateTime):
        return "sa.DateTime(timezone=True)"
    return False


def autogenerate_options(dialect_name: str) -> dict[str, Any]:
    """`context.configure()` options for comparing `tables.metadata` with a database.

    Shared by migrations/env.py and the models-match-migrations test. The
    SQLite-only comparator hook is not used on PostgreSQL, where Alembic's own
    identity comparison applies (and a hook would trip over reflected IDENTITY).
    """
    return {
        "target_metadata": metadata,
        "compare_type": True,
        "compare_server_default": (_compare_server_default if dialect_name == "sqlite" else True),
        "render_item": _render_item,
    }


def _off_loop(fn: Callable[[], T]) -> T:
    """Call `fn` here, or on a fresh thread if this thread runs an event loop."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return fn()
    result: list[T] = []
    errors: list[BaseException] = []

    def target() -> None:
        try:
            result.append(fn())
        except BaseException as exc:  # re-raised on the caller's thread
            errors.append(exc)

    thread = threading.Thread(target=target, name="sso-migrate")
    thread.start()
    thread.join()
    if errors:
        raise errors[0]
    return result[0]


def upgrade(url: str, revision: str = "head") -> None:
    """Migrate the database at `url` up to `revision`."""
    _off_loop(lambda: command.upgrade(alembic_config(url), revision))


def downgrade(url: str, revision: str = "base") -> None:
    """Migrate the database at `url` down to `revision` (`base` = empty)."""
    _off_loop(lambda: command.downgrade(alembic_config(url), revision))


async def _current(url: str) -> str | None:
    engine = create_async_engine(url, poolclass=pool.NullPool, hide_parameters=True)
    try:
        async with engine.connect() as conn:

            def read(sync_conn: Connection) -> str | None:
                return MigrationContext.configure(sync_conn).get_current_revision()

            return await conn.run_sync(read)
    finally:
        await engine.dispose()


def current(url: str) -> str | None:
    """The revision the database at `url` is at; None for an unmigrated database."""
    parsed = make_url(url)
    database = parsed.database or ""
    on_disk = database not in ("", ":memory:") and not database.startswith("file:")
    if parsed.get_backend_name() == "sqlite" and on_disk and not Path(database).exists():
        return None  # do not create the file just to look into it
    return _off_loop(lambda: asyncio.run(_current(url)))


def head() -> str | None:
    """The newest revision in the migrations directory."""
    from alembic.script import ScriptDirectory

    return ScriptDirectory.from_config(alembic_config("")).get_current_head()


async def aupgrade(url: str, revision: str = "head") -> None:
    await asyncio.to_thread(upgrade, url, revision)


async def adowngrade(url: str, revision: str = "base") -> None:
    await asyncio.to_thread(downgrade, url, revision)


async def acurrent(url: str) -> str | None:
    return await asyncio.to_thread(current, url)
