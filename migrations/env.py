"""Alembic environment for the SSO schema, on PostgreSQL (asyncpg) and SQLite (aiosqlite).

Why it looks like this:
- The target metadata is `sso.storage.tables.metadata`, the one declaration of
  the schema, compared with the options of `sso.storage.migrate.
  autogenerate_options()`, so `alembic revision --autogenerate` and the
  models-match-migrations test see the same differences.
- The URL comes from `config.attributes["url"]` (sso.storage.migrate), then
  `-x url=...`, then the service's own settings (`SSO_DATABASE__URL`), so the
  same migrations run from `sso migrate`, the operator's Job and plain alembic.
- The drivers are async, so the online run opens an async engine (NullPool: a
  migration is one connection, once) and hands its sync facade to Alembic.
- SQLite cannot ALTER most things: `render_as_batch` makes autogenerate emit
  copy-and-move batch operations. Migrations run with SQLite foreign keys OFF
  (the default; the service's engine turns them on) because batch mode drops
  and recreates tables, which would otherwise cascade deletes.
- On PostgreSQL a transaction-scoped advisory lock serialises concurrent
  migrators (two rollouts at once): the second waits, then finds nothing to do.
"""

from __future__ import annotations

import asyncio
from logging.config import fileConfig
from typing import Any

from alembic import context
from sqlalchemy import pool, text
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import create_async_engine

from sso.storage.db import ensure_sqlite_dir, ensure_sqlite_wal, sqlite_file
from sso.storage.migrate import autogenerate_options

# Arbitrary constant identifying "the SSO schema migration" among advisory locks.
MIGRATION_LOCK_KEY = 0x550_0001

config = context.config

if config.config_file_name is not None and config.attributes.get("configure_logger", True):
    fileConfig(config.config_file_name, disable_existing_loggers=False)


def database_url() -> str:
    url = config.attributes.get("url") or context.get_x_argument(as_dictionary=True).get("url")
    if url:
        return str(url)
    from sso.config import Settings

    return Settings().database.url.get_secret_value()


def _configure(dialect_name: str, **kwargs: Any) -> None:
    context.configure(**autogenerate_options(dialect_name), **kwargs)


def run_migrations_offline() -> None:
    """Emit SQL to stdout (`alembic upgrade head --sql`) without a database."""
    url = database_url()
    _configure(
        "sqlite" if url.startswith("sqlite") else "postgresql",
        url=url,
        literal_binds=True,
        dialect_opts={"paramstyle": "named"},
        render_as_batch=url.startswith("sqlite"),
    )
    with context.begin_transaction():
        context.run_migrations()


def do_run_migrations(connection: Connection) -> None:
    name = connection.dialect.name
    _configure(name, connection=connection, render_as_batch=name == "sqlite")
    with context.begin_transaction():
        if connection.dialect.name == "postgresql":
            connection.execute(
                text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK_KEY}
            )
        context.run_migrations()


async def run_async_migrations(url: str) -> None:
    if url.startswith("sqlite"):
        ensure_sqlite_dir(url)
        path = sqlite_file(url)
        if path is not None:
            # WAL belongs to the file: set it once here, where the file is created,
            # so no pool ever has to switch it (sso.storage.db, ensure_sqlite_wal).
            ensure_sqlite_wal(path)
    engine = create_async_engine(url, poolclass=pool.NullPool, hide_parameters=True)
    try:
        async with engine.connect() as connection:
            await connection.run_sync(do_run_migrations)
    finally:
        await engine.dispose()


def run_migrations_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:  # a caller lent us a (sync facade) connection
        do_run_migrations(connection)
        return
    asyncio.run(run_async_migrations(database_url()))


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
