"""Fixtures for the two-factor tests: the real service on SQLite and PostgreSQL (+ Redis).

The in-process harness lives with the API tests (`tests/api/sso_harness.py`); its
directory goes on `sys.path` so this directory also runs on its own. The per-email
login limit is raised (these tests log one account in dozens of times, e.g. 50
challenges for the concurrency test); everything else is the production composition.
"""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

_API = Path(__file__).resolve().parent.parent / "api"
if str(_API) not in sys.path:
    sys.path.append(str(_API))

from sso_harness import Running, make_settings, start, stop  # noqa: E402
from tf_helpers import FakeClock  # noqa: E402


@pytest.fixture(
    params=[
        pytest.param("sqlite"),
        pytest.param("postgres", marks=pytest.mark.postgres),
        pytest.param("postgres+redis", marks=[pytest.mark.postgres, pytest.mark.redis]),
    ]
)
def tf_backend(request: pytest.FixtureRequest) -> tuple[str, str | None]:
    if request.param == "sqlite":
        return str(request.getfixturevalue("sqlite_url")), None
    redis = str(request.getfixturevalue("redis_server")) if "redis" in request.param else None
    return str(request.getfixturevalue("pg_url")), redis


@pytest.fixture(
    params=[pytest.param("sqlite"), pytest.param("postgres", marks=pytest.mark.postgres)]
)
def tf_db(request: pytest.FixtureRequest) -> str:
    """SQLite and PostgreSQL (no Redis): for the heavier tests."""
    name = "sqlite_url" if request.param == "sqlite" else "pg_url"
    return str(request.getfixturevalue(name))


async def _start(tmp_path: Path, db: str, redis: str | None) -> Running:
    settings = make_settings(tmp_path, db, redis)
    settings.ratelimit.login_per_email = 100_000
    # Mail (sent by registration and reset) goes to a file outbox in the test's directory.
    settings.mail.mode, settings.mail.outbox_dir = "outbox", tmp_path / "outbox"
    running = await start(settings)
    # The clock the domain already takes: TOTP steps and challenge expiry move with it.
    running.container.auth.clock = FakeClock()
    return running


@pytest.fixture
async def tf_server(tmp_path: Path, tf_backend: tuple[str, str | None]) -> AsyncIterator[Running]:
    running = await _start(tmp_path, *tf_backend)
    yield running
    await stop(running)


@pytest.fixture
async def tf_server_db(tmp_path: Path, tf_db: str) -> AsyncIterator[Running]:
    running = await _start(tmp_path, tf_db, None)
    yield running
    await stop(running)
