"""Migrations: empty → head → base on both backends, and the models match the migrations."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import inspect, pool, text
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import create_async_engine

from sso.storage import migrate

TABLES = {"users", "apps", "sessions", "refresh_tokens", "audit_events"}
NOW = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)


@pytest.fixture(params=[pytest.param("postgres", marks=pytest.mark.postgres), "sqlite"])
def empty_url(request: pytest.FixtureRequest) -> str:
    name = "pg_empty_url" if request.param == "postgres" else "sqlite_empty_url"
    return str(request.getfixturevalue(name))


async def _run_sync(url: str, fn: Any) -> Any:
    engine = create_async_engine(url, poolclass=pool.NullPool)
    try:
        async with engine.connect() as conn:
            return await conn.run_sync(fn)
    finally:
        await engine.dispose()


def _tables(conn: Connection) -> set[str]:
    return set(inspect(conn).get_table_names())


def _diff(conn: Connection) -> list[Any]:
    options = migrate.autogenerate_options(conn.dialect.name)
    ctx = MigrationContext.configure(conn, opts=options)
    return list(compare_metadata(ctx, options["target_metadata"]))


async def test_upgrade_from_empty_then_downgrade_to_base(empty_url: str) -> None:
    assert migrate.current(empty_url) is None
    await migrate.aupgrade(empty_url)
    head = migrate.head()
    assert head is not None and head >= "0005"
    assert migrate.current(empty_url) == head
    assert await _run_sync(empty_url, _tables) >= TABLES

    migrate.downgrade(empty_url, "base")
    assert migrate.current(empty_url) is None
    assert not TABLES & await _run_sync(empty_url, _tables)

    await migrate.aupgrade(empty_url)  # and up again: downgrade left nothing behind
    assert await migrate.acurrent(empty_url) == head


async def test_models_match_migrations(db_url: str) -> None:
    assert await _run_sync(db_url, _diff) == []


def test_upgrade_from_sync_code(sqlite_empty_url: str) -> None:
    migrate.upgrade(sqlite_empty_url)
    assert migrate.current(sqlite_empty_url) == migrate.head()


def test_migrations_dir_from_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Any) -> None:
    (tmp_path / "env.py").write_text("")
    monkeypatch.setenv("SSO_MIGRATIONS_DIR", str(tmp_path))
    assert migrate.migrations_dir() == tmp_path
    monkeypatch.delenv("SSO_MIGRATIONS_DIR")
    assert (migrate.migrations_dir() / "versions" / "0001_initial.py").is_file()


async def test_comparison_is_not_vacuous(db_url: str) -> None:
    """A schema drift (a dropped index) is reported, so the empty diff above means something."""

    def drop_index(conn: Connection) -> None:
        conn.exec_driver_sql("DROP INDEX ix_sessions_expires_at")
        conn.commit()

    await _run_sync(db_url, drop_index)
    diff = await _run_sync(db_url, _diff)
    assert [d[0] for d in diff] == ["add_index"]


async def test_0006_gives_existing_sessions_pwd_as_their_amr(empty_url: str) -> None:
    # A session opened before 0006 had no amr; its refreshed tokens said `pwd`, and so
    # does the column now. A downgrade drops the column and keeps the session.
    await migrate.aupgrade(empty_url, "0005_admin")

    def seed(conn: Connection) -> None:
        conn.execute(
            text(
                "INSERT INTO users (email, password_hash, is_admin, email_verified, created_at,"
                " updated_at) VALUES ('a@example.com', 'x', false, false, :t, :t)"
            ),
            {"t": NOW},
        )
        conn.execute(
            text("INSERT INTO apps (name, secret_encrypted, created_at) VALUES ('a', :s, :t)"),
            {"s": "x", "t": NOW},
        )
        conn.execute(
            text(
                "INSERT INTO sessions (id, user_id, app_id, user_agent, ip, device_name,"
                " created_at, last_used_at, expires_at)"
                " SELECT 's-old', users.id, apps.id, 'ua', '127.0.0.1', 'd', :t, :t, :t"
                " FROM users, apps"
            ),
            {"t": NOW},
        )
        conn.commit()

    await _run_sync(empty_url, seed)
    await migrate.aupgrade(empty_url)

    def amr(conn: Connection) -> list[Any]:
        return list(conn.execute(text("SELECT id, amr FROM sessions")).all())

    assert [tuple(r) for r in await _run_sync(empty_url, amr)] == [("s-old", "pwd")]
    migrate.downgrade(empty_url, "0005_admin")

    def columns(conn: Connection) -> set[str]:
        return {c["name"] for c in inspect(conn).get_columns("sessions")}

    assert "amr" not in await _run_sync(empty_url, columns)
