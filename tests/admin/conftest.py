"""Fixtures of the Admin API tests: the real service on SQLite and PostgreSQL, admin token set."""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from admin_support import AdminEnv, admin_settings, make_settings, start, stop


@pytest.fixture(
    params=[pytest.param("sqlite"), pytest.param("postgres", marks=pytest.mark.postgres)]
)
def admin_db(request: pytest.FixtureRequest) -> str:
    name = "sqlite_url" if request.param == "sqlite" else "pg_url"
    return str(request.getfixturevalue(name))


@pytest.fixture
async def env(tmp_path: Path, admin_db: str) -> AsyncIterator[AdminEnv]:
    """The service with one admin token, on SQLite and on PostgreSQL."""
    token = secrets.token_urlsafe(32)
    running = await start(admin_settings(make_settings(tmp_path, admin_db), token))
    yield AdminEnv(running, token)
    await stop(running)
