"""Real PostgreSQL and Redis servers for the test run, started by the run itself.

No Docker here (DESIGN.md §4): `bench.servers` starts the Debian packages'
binaries in temp directories on free 127.0.0.1 ports, once per session, and
tears them down at the end. If a server cannot start the run fails with its
log: a storage test that silently skips is worse than a red build. The servers
are children of pytest that die with it (PR_SET_PDEATHSIG) even when no
finalizer runs (pytest-timeout, kill -9); data dirs such a run leaves behind are
swept by the next one. PostgreSQL lives in /dev/shm when available (fsync is off
anyway).

Fixtures for every test directory:
- `postgres_server`: `.url(dbname)` → `postgresql+asyncpg://...`; `.dsn(dbname)`
  for plain asyncpg; `.create_database(name, template=...)`, `.drop_database(name)`
  and `.execute(sql)` (synchronous, usable with or without a running loop).
- `redis_server`: the URL of a session Redis; `redis_factory()` starts an extra
  private one (`.url`, `.stop()`, `.process`), e.g. to kill or freeze it in an outage
  test.
- `pg_url` / `pg_empty_url`: a fresh database per test, at head / empty
  (cloned from a template migrated once per session, which costs ~20 ms instead
  of a migration run per test).
- `sqlite_url` / `sqlite_empty_url`: the same on a temp file.
- `db_url`: parametrised over ("postgres", "sqlite"): a test using it runs on both.
"""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import threading
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import asyncpg
import pytest

from bench.servers import PostgresServer, RedisServer
from sso.storage import migrate

PG_SUPERUSER = "sso"


class SessionPostgres(PostgresServer):
    """`bench.servers.PostgresServer` with admin statements over asyncpg instead of psql.

    `pg_url` creates and drops a database for every test: a connection costs less
    than starting a psql process. Returns asyncpg's command status, not rows.
    """

    def execute(self, sql: str, dbname: str = "postgres") -> str:
        status: list[str] = []

        async def run() -> None:
            conn = await asyncpg.connect(self.dsn(dbname), timeout=10)
            try:
                status.append(await conn.execute(sql))
            finally:
                await conn.close()

        _in_thread(lambda: asyncio.run(run()))
        return status[0]


def _in_thread(fn: Callable[[], object]) -> None:
    """Run `fn` on a fresh thread, so fixtures work whether or not a loop is running here."""
    errors: list[BaseException] = []

    def target() -> None:
        try:
            fn()
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=target)
    thread.start()
    thread.join()
    if errors:
        raise errors[0]


class PrivateRedis(RedisServer):
    """`bench.servers.RedisServer` plus its process, for tests that stop or freeze it."""

    @property
    def process(self) -> subprocess.Popen[bytes]:
        if self._process is None:
            raise RuntimeError("redis-server is not running")
        return self._process


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    server = SessionPostgres(superuser=PG_SUPERUSER, settings={"shared_buffers": "64MB"})
    with server:
        yield server


@pytest.fixture(scope="session")
def redis_server() -> Iterator[str]:
    with RedisServer() as server:
        yield server.url


@pytest.fixture
def redis_factory() -> Iterator[Callable[[], PrivateRedis]]:
    """Start private Redis servers (stopped after the test, if the test did not)."""
    started: list[PrivateRedis] = []

    def start() -> PrivateRedis:
        server = PrivateRedis().start()
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


def _unique(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:12]}"


@pytest.fixture(scope="session")
def pg_template(postgres_server: PostgresServer) -> str:
    """A database migrated to head once per session, cloned by `pg_url`."""
    name = _unique("sso_template")
    postgres_server.create_database(name)
    migrate.upgrade(postgres_server.url(name))
    return name


# The database fixtures are synchronous on purpose: they can then be requested
# from sync and async tests and fixtures alike, including via getfixturevalue()
# inside an async fixture (pytest-asyncio cannot nest async fixture setup).
@pytest.fixture
def pg_url(postgres_server: PostgresServer, pg_template: str) -> Iterator[str]:
    """A fresh database at head (a copy of the session template), dropped afterwards."""
    name = _unique("sso_test")
    postgres_server.create_database(name, template=pg_template)
    yield postgres_server.url(name)
    postgres_server.drop_database(name)


@pytest.fixture
def pg_empty_url(postgres_server: PostgresServer) -> Iterator[str]:
    """A fresh empty database (no migrations applied), dropped afterwards."""
    name = _unique("sso_empty")
    postgres_server.create_database(name)
    yield postgres_server.url(name)
    postgres_server.drop_database(name)


def _sqlite_url(path: Path) -> str:
    return f"sqlite+aiosqlite:///{path}"


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("sqlite-template") / "template.db"
    migrate.upgrade(_sqlite_url(path))
    return path


@pytest.fixture
def sqlite_url(tmp_path: Path, sqlite_template: Path) -> str:
    path = tmp_path / "sso.db"
    shutil.copyfile(sqlite_template, path)
    return _sqlite_url(path)


@pytest.fixture
def sqlite_empty_url(tmp_path: Path) -> str:
    return _sqlite_url(tmp_path / "empty" / "sso.db")


@pytest.fixture(
    params=[pytest.param("postgres", marks=pytest.mark.postgres), pytest.param("sqlite")]
)
def db_url(request: pytest.FixtureRequest) -> str:
    """A migrated database URL; the test runs once on PostgreSQL and once on SQLite."""
    name = "pg_url" if request.param == "postgres" else "sqlite_url"
    return str(request.getfixturevalue(name))
