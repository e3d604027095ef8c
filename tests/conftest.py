"""Real PostgreSQL and Redis servers for the test run, started by the run itself.

No Docker here (DESIGN.md §4): the Debian packages' binaries are started in
temp directories on free 127.0.0.1 ports, once per session, and torn down at
the end. If a server cannot start the run fails with its log: a storage test
that silently skips is worse than a red build. The servers are children of
pytest that die with it (PR_SET_PDEATHSIG) even when no finalizer runs
(pytest-timeout, kill -9); data dirs such a run leaves behind are swept by the
next one. PostgreSQL lives in /dev/shm when available (fsync is off anyway).

Fixtures for every test directory:
- `postgres_server`: `.url(dbname)` → `postgresql+asyncpg://...`; `.dsn(dbname)`
  for plain asyncpg; `.create_database(name, template=...)`, `.drop_database(name)`
  and `.execute(sql)` (synchronous, usable with or without a running loop).
- `redis_server`: the URL of a session Redis; `redis_factory()` starts an extra
  private one (`.url`, `.stop()`), e.g. to kill it in an outage test.
- `pg_url` / `pg_empty_url`: a fresh database per test, at head / empty
  (cloned from a template migrated once per session, which costs ~20 ms instead
  of a migration run per test).
- `sqlite_url` / `sqlite_empty_url`: the same on a temp file.
- `db_url`: parametrised over ("postgres", "sqlite"): a test using it runs on both.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import glob
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import asyncpg
import pytest

from sso.storage import migrate

PG_SUPERUSER = "sso"
PR_SET_PDEATHSIG = 1
STARTUP_TIMEOUT = 15.0


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _fast_tmp() -> str | None:
    """tmpfs when there is one: CREATE DATABASE copies ~8 MB; ~12 ms here vs ~500 ms on disk."""
    shm = Path("/dev/shm")
    return str(shm) if shm.is_dir() and os.access(shm, os.W_OK) else None


def _pg_bin_dir() -> Path:
    candidates = sorted(
        glob.glob("/usr/lib/postgresql/*/bin"), key=lambda p: int(Path(p).parent.name)
    )
    if not candidates:
        raise RuntimeError("PostgreSQL binaries not found under /usr/lib/postgresql/*/bin")
    return Path(candidates[-1])


def _as_postgres_user(argv: list[str]) -> list[str]:
    """initdb/postgres refuse to run as root: drop to the Debian `postgres` user."""
    if os.geteuid() != 0:
        return argv
    return ["runuser", "-u", "postgres", "--", *argv]


def _run(argv: list[str], what: str, log: Path | None = None) -> None:
    proc = subprocess.run(argv, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        tail = log.read_text(errors="replace")[-4000:] if log and log.exists() else ""
        raise RuntimeError(f"{what} failed ({proc.returncode}):\n{proc.stdout}{proc.stderr}{tail}")


@dataclass
class PostgresServer:
    port: int
    root: Path
    bin_dir: Path
    user: str = PG_SUPERUSER
    host: str = "127.0.0.1"

    def url(self, dbname: str = "postgres") -> str:
        return f"postgresql+asyncpg://{self.user}@{self.host}:{self.port}/{dbname}"

    def dsn(self, dbname: str = "postgres") -> str:
        return f"postgresql://{self.user}@{self.host}:{self.port}/{dbname}"

    def execute(self, sql: str) -> None:
        """Run one admin statement (on a private thread and loop: callable from anywhere)."""

        async def run() -> None:
            conn = await asyncpg.connect(self.dsn(), timeout=10)
            try:
                await conn.execute(sql)
            finally:
                await conn.close()

        _in_thread(lambda: asyncio.run(run()))

    def create_database(self, name: str, template: str | None = None) -> None:
        tmpl = f' TEMPLATE "{template}"' if template else ""
        self.execute(f'CREATE DATABASE "{name}"{tmpl}')

    def drop_database(self, name: str) -> None:
        self.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


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


def _die_with_parent() -> None:
    """preexec_fn: the server gets SIGKILL if pytest dies without tearing down.

    (pytest-timeout and a second Ctrl-C end the process without running
    fixture finalizers; a server left behind in tmpfs would hold its RAM.)
    Runs after the uid switch, which would otherwise clear the setting.
    """
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


def _alive(pid: int) -> bool:
    try:  # "pid (comm) S ...": a zombie (Z) is as dead as a missing process
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def _sweep_stale_clusters(parent: str | None) -> None:
    """Remove data dirs of earlier runs whose postmaster is gone (killed runs)."""
    for root in Path(parent or tempfile.gettempdir()).glob("sso-pg-*"):
        pid_file = root / "data" / "postmaster.pid"
        with contextlib.suppress(OSError, ValueError):
            pid = int(pid_file.read_text().split()[0]) if pid_file.exists() else None
            if pid is not None and _alive(pid):
                continue
            if time.time() - root.stat().st_mtime > 30:  # not one being set up right now
                shutil.rmtree(root, ignore_errors=True)


def _wait_ready(process: subprocess.Popen[bytes], data: Path, log: Path) -> None:
    """Wait as `pg_ctl -w` does: line 8 of postmaster.pid says "ready"."""
    deadline = time.monotonic() + STARTUP_TIMEOUT
    while time.monotonic() < deadline and process.poll() is None:
        with contextlib.suppress(OSError):
            lines = (data / "postmaster.pid").read_text().splitlines()
            if len(lines) >= 8 and lines[7].strip() == "ready":
                return
        time.sleep(0.02)
    process.kill()
    tail = log.read_text(errors="replace")[-4000:] if log.exists() else ""
    raise RuntimeError(f"PostgreSQL did not start (exit {process.poll()}):\n{tail}")


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    bin_dir = _pg_bin_dir()
    tmp_parent = _fast_tmp()
    _sweep_stale_clusters(tmp_parent)
    root = Path(tempfile.mkdtemp(prefix="sso-pg-", dir=tmp_parent))
    data, log = root / "data", root / "postgres.log"
    as_root = os.geteuid() == 0
    if as_root:
        shutil.chown(root, "postgres", "postgres")
    os.chmod(root, 0o700)
    server = PostgresServer(port=_free_port(), root=root, bin_dir=bin_dir)
    initdb = [str(bin_dir / "initdb"), "-D", str(data), "-U", PG_SUPERUSER]
    initdb += ["--auth=trust", "-E", "UTF8", "--locale=C", "--no-sync", "--no-instructions"]
    _run(_as_postgres_user(initdb), "initdb")
    settings = {
        "port": str(server.port),
        "unix_socket_directories": str(root),
        "listen_addresses": "127.0.0.1",
        "fsync": "off",
        "full_page_writes": "off",
        "synchronous_commit": "off",
        "max_connections": "300",
        "shared_buffers": "64MB",
    }
    argv = [str(bin_dir / "postgres"), "-D", str(data)]
    argv += [arg for key, value in settings.items() for arg in ("-c", f"{key}={value}")]
    # The postmaster is our child (not daemonised by pg_ctl) so it can die with us.
    with log.open("wb") as log_file:
        process = subprocess.Popen(
            argv,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            user="postgres" if as_root else None,
            group="postgres" if as_root else None,
            extra_groups=[] if as_root else None,
            preexec_fn=_die_with_parent,
        )
    if as_root:
        shutil.chown(log, "postgres", "postgres")
    try:
        _wait_ready(process, data, log)
        yield server
    finally:
        stop = [str(bin_dir / "pg_ctl"), "-D", str(data), "-m", "immediate", "-w", "stop"]
        subprocess.run(_as_postgres_user(stop), capture_output=True, check=False)
        if process.poll() is None:
            process.kill()
        process.wait(timeout=10)
        shutil.rmtree(root, ignore_errors=True)


@dataclass
class RedisServer:
    port: int
    root: Path
    process: subprocess.Popen[bytes] = field(repr=False)

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=10)
        shutil.rmtree(self.root, ignore_errors=True)


def _start_redis() -> RedisServer:
    binary = shutil.which("redis-server")
    if binary is None:
        raise RuntimeError("redis-server not found (apt-get install redis-server)")
    root = Path(tempfile.mkdtemp(prefix="sso-redis-"))
    port = _free_port()
    argv = [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly"]
    argv += ["no", "--dir", str(root), "--logfile", str(root / "redis.log")]
    process = subprocess.Popen(
        argv,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        preexec_fn=_die_with_parent,
    )
    server = RedisServer(port=port, root=root, process=process)
    deadline = time.monotonic() + STARTUP_TIMEOUT
    while time.monotonic() < deadline:
        if process.poll() is not None:
            break
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2) as s:
            s.sendall(b"PING\r\n")
            if s.recv(16).startswith(b"+PONG"):
                return server
        time.sleep(0.02)
    log = root / "redis.log"
    detail = log.read_text(errors="replace")[-4000:] if log.exists() else ""
    server.stop()
    raise RuntimeError(f"redis-server did not start on port {port}:\n{detail}")


@pytest.fixture(scope="session")
def redis_server() -> Iterator[str]:
    server = _start_redis()
    try:
        yield server.url
    finally:
        server.stop()


@pytest.fixture
def redis_factory() -> Iterator[Callable[[], RedisServer]]:
    """Start private Redis servers (stopped after the test, if the test did not)."""
    started: list[RedisServer] = []

    def start() -> RedisServer:
        server = _start_redis()
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
