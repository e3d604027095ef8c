"""Fixtures: the SSO service in-process over SQLite, PostgreSQL, and PostgreSQL + Redis."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sso_harness import Running, make_settings, start, stop


@pytest.fixture(
    params=[
        pytest.param("sqlite"),
        pytest.param("postgres", marks=pytest.mark.postgres),
        pytest.param("postgres+redis", marks=[pytest.mark.postgres, pytest.mark.redis]),
    ]
)
def backend(request: pytest.FixtureRequest) -> tuple[str, str | None]:
    """(database URL, Redis URL or None): embedded SQLite, PostgreSQL, PostgreSQL + Redis."""
    if request.param == "sqlite":
        return str(request.getfixturevalue("sqlite_url")), None
    redis = str(request.getfixturevalue("redis_server")) if "redis" in request.param else None
    return str(request.getfixturevalue("pg_url")), redis


@pytest.fixture
async def sso_server(tmp_path: Path, backend: tuple[str, str | None]) -> AsyncIterator[Running]:
    """The service on each backend; every API test runs on all three."""
    running = await start(make_settings(tmp_path, *backend))
    yield running
    await stop(running)


@pytest.fixture
async def sso_pg_redis(tmp_path: Path, pg_url: str, redis_server: str) -> AsyncIterator[Running]:
    """The production shape: PostgreSQL + Redis."""
    running = await start(make_settings(tmp_path, pg_url, redis_server))
    yield running
    await stop(running)
