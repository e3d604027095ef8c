"""Throwaway PostgreSQL and Redis servers for benchmarks and tests.

Why this module exists: the benchmark and the test suite both need a real
PostgreSQL and a real Redis that start in about a second, belong to nobody else,
listen only on 127.0.0.1 and vanish without a trace, even when the process that
started them is killed. This is the one implementation of that: `bench.run`
uses it, and the test fixtures can import it (its API is a superset of what
tests/conftest.py provides).

* `PostgresServer`: `initdb` into a fresh directory (in /dev/shm when there is
  one: CREATE DATABASE copies ~8 MB), durability off (fsync,
  synchronous_commit, full_page_writes), trust authentication on loopback
  only, TCP on a free port of 127.0.0.1 and the unix socket inside the
  directory. PostgreSQL refuses to run as root, so when we are root `initdb`
  and `pg_ctl` run as the `postgres` system user (`runuser -u postgres --`)
  and the postmaster is started as that user. The postmaster is our own child,
  not daemonised, so it can die with us (`die_with_parent`, PR_SET_PDEATHSIG);
  `stop()` is `pg_ctl stop -m immediate`. Admin statements (`execute`,
  `create_database`, `drop_database`) go through `psql`: synchronous, and
  callable with or without a running event loop.
* `RedisServer`: `redis-server` on a free port of 127.0.0.1 with persistence
  off (`--save '' --appendonly no`), its working directory temporary too.

Both are context managers (`with PostgresServer() as pg: pg.url()`) and also
work with explicit `start()` / `stop()`; `stop()` is idempotent and always
removes the directory. A port taken between choosing and binding it is retried
with another. Only the standard library is used: no database driver needed.

`die_with_parent` ties a server to the *thread* that started it (that is how
PR_SET_PDEATHSIG works): start servers from a thread that outlives them, as
pytest's main thread and `bench.run` do.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import Self

__all__ = [
    "PostgresServer",
    "RedisServer",
    "ServerStartError",
    "find_pg_bindir",
    "free_port",
    "sweep_stale_clusters",
]

LOOPBACK = "127.0.0.1"
# Tries with a fresh free port when the one picked was taken before the server bound it.
_PORT_ATTEMPTS = 3
_PR_SET_PDEATHSIG = 1
_SIGKILL = 9
_PREFIX_PG = "sso-pg-"
_PREFIX_REDIS = "sso-redis-"


class ServerStartError(RuntimeError):
    """A server did not come up; the message carries the tail of its log."""


def free_port(host: str = LOOPBACK) -> int:
    """A TCP port that was free a moment ago (the kernel picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


def find_pg_bindir() -> Path:
    """The directory holding `initdb`, `postgres`, `pg_ctl` and `psql`.

    $PG_BINDIR when set, else the newest /usr/lib/postgresql/*/bin (Debian), else
    wherever `pg_ctl` on PATH really lives (symlinks resolved).
    """
    if env := os.environ.get("PG_BINDIR"):
        return Path(env)
    candidates = sorted(
        (p.parent for p in Path("/usr/lib/postgresql").glob("*/bin/initdb")),
        key=lambda d: int(d.parent.name) if d.parent.name.isdigit() else 0,
    )
    if candidates:
        return candidates[-1]
    found = shutil.which("pg_ctl")
    if found:
        return Path(found).resolve().parent
    raise FileNotFoundError("PostgreSQL server binaries not found (apt-get install postgresql)")


def default_parent_dir() -> Path:
    """/dev/shm when writable (fsync is off anyway, and tmpfs is fast), else the temp dir."""
    shm = Path("/dev/shm")
    if shm.is_dir() and os.access(shm, os.W_OK):
        return shm
    return Path(tempfile.gettempdir())


def _die_with_parent() -> None:
    """preexec_fn: SIGKILL the child when the thread that started it dies.

    Runs in the child after the uid switch of `Popen(user=...)`, which would
    otherwise clear the setting.
    """
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, _SIGKILL)


def _alive(pid: int) -> bool:
    try:  # "pid (comm) S ...": a zombie is as dead as a missing process
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def sweep_stale_clusters(parent: Path | None = None, min_age: float = 30.0) -> int:
    """Remove data directories left by killed runs (their postmaster is gone).

    A directory younger than `min_age` seconds is left alone: it may be one that
    another process is setting up right now. Returns how many were removed.
    """
    removed = 0
    for root in (parent or default_parent_dir()).glob(f"{_PREFIX_PG}*"):
        with contextlib.suppress(OSError, ValueError, IndexError):
            pid_file = root / "data" / "postmaster.pid"
            if pid_file.exists() and _alive(int(pid_file.read_text().split()[0])):
                continue
            if time.time() - root.stat().st_mtime > min_age:
                shutil.rmtree(root, ignore_errors=True)
                removed += 1
    return removed


def _tail(path: Path, chars: int = 4000) -> str:
    try:
        return path.read_text(errors="replace")[-chars:]
    except OSError:
        return "(no log)"


def _stop_process(process: subprocess.Popen[bytes], timeout: float = 10.0) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            process.kill()
    process.wait(timeout=timeout)


class _Managed:
    """Context-manager plumbing shared by both servers."""

    def start(self) -> Self:
        raise NotImplementedError

    def stop(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


class PostgresServer(_Managed):
    """A private PostgreSQL cluster in a throwaway directory, on 127.0.0.1:`port`."""

    def __init__(
        self,
        *,
        port: int | None = None,
        bindir: Path | None = None,
        superuser: str = "postgres",
        system_user: str = "postgres",
        parent_dir: Path | None = None,
        max_connections: int = 300,
        settings: dict[str, str] | None = None,
        die_with_parent: bool = True,
        start_timeout: float = 30.0,
    ) -> None:
        self._port_fixed = port is not None
        self.port = port or free_port()
        self.host = LOOPBACK
        self.user = superuser
        self.bin_dir = bindir or find_pg_bindir()
        self._system_user = system_user
        self._parent = parent_dir
        self._max_connections = max_connections
        self._extra = dict(settings or {})
        self._die_with_parent = die_with_parent
        self._start_timeout = start_timeout
        self._root: Path | None = None
        self._process: subprocess.Popen[bytes] | None = None

    # -- where it is -------------------------------------------------------------------

    @property
    def root(self) -> Path:
        if self._root is None:
            raise RuntimeError("PostgresServer is not started")
        return self._root

    @property
    def data_dir(self) -> Path:
        return self.root / "data"

    @property
    def log_file(self) -> Path:
        return self.root / "postgres.log"

    @property
    def pid(self) -> int | None:
        """The postmaster's process id while it runs."""
        return self._process.pid if self._process and self._process.poll() is None else None

    def url(self, dbname: str = "postgres", driver: str = "postgresql+asyncpg") -> str:
        """An SQLAlchemy URL (the service's SSO_DATABASE__URL)."""
        return f"{driver}://{self.user}@{self.host}:{self.port}/{dbname}"

    def dsn(self, dbname: str = "postgres") -> str:
        """A libpq / asyncpg DSN."""
        return self.url(dbname, driver="postgresql")

    # -- administration ------------------------------------------------------------------

    def execute(self, sql: str, dbname: str = "postgres") -> str:
        """Run SQL through psql as the superuser; returns psql's output (unaligned)."""
        result = subprocess.run(
            [
                str(self.bin_dir / "psql"),
                "-X",
                "-q",
                "-A",
                "-t",
                "-v",
                "ON_ERROR_STOP=1",
                "-h",
                self.host,
                "-p",
                str(self.port),
                "-U",
                self.user,
                "-d",
                dbname,
                "-c",
                sql,
            ],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        if result.returncode != 0:
            raise RuntimeError(f"psql failed ({result.returncode}): {result.stderr.strip()}")
        return result.stdout

    def create_database(self, name: str, template: str | None = None) -> str:
        """Create a database (optionally cloned from `template`); returns its URL."""
        clause = f" TEMPLATE {_ident(template)}" if template else ""
        self.execute(f"CREATE DATABASE {_ident(name)}{clause}")
        return self.url(name)

    def drop_database(self, name: str) -> None:
        self.execute(f"DROP DATABASE IF EXISTS {_ident(name)} WITH (FORCE)")

    # -- lifecycle -------------------------------------------------------------------------

    def _as_owner(self, argv: list[str]) -> list[str]:
        if os.geteuid() == 0:
            return ["runuser", "-u", self._system_user, "--", *argv]
        return argv

    def _run_as_owner(self, argv: list[str], timeout: float) -> None:
        result = subprocess.run(
            self._as_owner(argv),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            timeout=timeout,
            check=False,
        )
        if result.returncode != 0:
            raise ServerStartError(
                f"{Path(argv[0]).name} failed ({result.returncode}):\n{result.stdout}"
            )

    def _settings(self) -> dict[str, str]:
        return {
            "listen_addresses": self.host,
            "port": str(self.port),
            "unix_socket_directories": str(self.root),
            "max_connections": str(self._max_connections),
            "fsync": "off",
            "synchronous_commit": "off",
            "full_page_writes": "off",
            # Segments as files in the data directory, not in /dev/shm: nothing outlives
            # a cluster that is stopped with -m immediate or killed.
            "dynamic_shared_memory_type": "mmap",
            **self._extra,
        }

    def start(self) -> Self:
        if self._root is not None:
            return self
        parent = self._parent or default_parent_dir()
        sweep_stale_clusters(parent)
        self._root = root = Path(tempfile.mkdtemp(prefix=_PREFIX_PG, dir=parent))
        try:
            if os.geteuid() == 0:
                shutil.chown(root, user=self._system_user, group=self._system_user)
            initdb = [str(self.bin_dir / "initdb"), "-D", str(self.data_dir), "-U", self.user]
            initdb += ["--auth-local=trust", "--auth-host=trust", "--encoding=UTF8"]
            initdb += ["--locale=C", "--no-sync", "--no-instructions"]
            self._run_as_owner(initdb, timeout=120)
            for attempt in range(1, _PORT_ATTEMPTS + 1):
                try:
                    self._launch()
                    break
                except ServerStartError as error:
                    # Someone took the port between free_port() and the bind: pick another.
                    taken = "could not bind" in str(error) or "already in use" in str(error)
                    if not taken or self._port_fixed or attempt == _PORT_ATTEMPTS:
                        raise
                    self.port = free_port()
        except BaseException:
            self.stop()
            raise
        return self

    def _launch(self) -> None:
        argv = [str(self.bin_dir / "postgres"), "-D", str(self.data_dir)]
        argv += [arg for key, value in self._settings().items() for arg in ("-c", f"{key}={value}")]
        as_root = os.geteuid() == 0
        preexec: Callable[[], None] | None = _die_with_parent if self._die_with_parent else None
        with self.log_file.open("ab") as log:
            process = subprocess.Popen(
                argv,
                stdout=log,
                stderr=subprocess.STDOUT,
                user=self._system_user if as_root else None,
                group=self._system_user if as_root else None,
                extra_groups=[] if as_root else None,
                preexec_fn=preexec,
            )
        self._process = process
        deadline = time.monotonic() + self._start_timeout
        pid_file = self.data_dir / "postmaster.pid"
        while process.poll() is None and time.monotonic() < deadline:
            with contextlib.suppress(OSError):
                lines = pid_file.read_text().splitlines()
                if len(lines) >= 8 and lines[7].strip() == "ready":  # what `pg_ctl -w` waits for
                    return
            time.sleep(0.02)
        _stop_process(process)
        self._process = None
        raise ServerStartError(
            f"PostgreSQL did not start on port {self.port} (exit {process.returncode}):\n"
            + _tail(self.log_file)
        )

    def stop(self) -> None:
        root, self._root = self._root, None
        process, self._process = self._process, None
        if root is None:
            return
        try:
            if process is not None and process.poll() is None:
                stop = [str(self.bin_dir / "pg_ctl"), "stop", "-m", "immediate", "-w"]
                subprocess.run(
                    self._as_owner([*stop, "-D", str(root / "data")]),
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                    timeout=30,
                    check=False,
                )
                _stop_process(process)
        finally:
            shutil.rmtree(root, ignore_errors=True)


def _ident(name: str) -> str:
    """A quoted SQL identifier; refuses anything but letters, digits and underscores."""
    if not name or not name.replace("_", "").isalnum() or not name.isascii():
        raise ValueError(f"unsafe database name {name!r}")
    return f'"{name}"'


class RedisServer(_Managed):
    """A private, non-persistent redis-server on 127.0.0.1:`port`."""

    def __init__(
        self,
        *,
        port: int | None = None,
        binary: str | None = None,
        die_with_parent: bool = True,
        start_timeout: float = 15.0,
        extra_args: list[str] | None = None,
    ) -> None:
        self._port_fixed = port is not None
        self.port = port or free_port()
        self.host = LOOPBACK
        self.binary = binary or shutil.which("redis-server") or "/usr/bin/redis-server"
        self._die_with_parent = die_with_parent
        self._start_timeout = start_timeout
        self._extra = list(extra_args or [])
        self._root: Path | None = None
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """redis://127.0.0.1:port/0 (the service's SSO_REDIS__URL)."""
        return f"redis://{self.host}:{self.port}/0"

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process and self._process.poll() is None else None

    def ping(self, timeout: float = 1.0) -> bool:
        """True when the server answers PING (raw RESP, no client library needed)."""
        try:
            with socket.create_connection((self.host, self.port), timeout=timeout) as sock:
                sock.sendall(b"PING\r\n")
                return sock.recv(64).startswith(b"+PONG")
        except OSError:
            return False

    def start(self) -> Self:
        if self._process is not None:
            return self
        self._root = Path(tempfile.mkdtemp(prefix=_PREFIX_REDIS))
        for attempt in range(1, _PORT_ATTEMPTS + 1):
            try:
                self._launch()
                return self
            except ServerStartError as error:
                taken = "already in use" in str(error) or "bind" in str(error).lower()
                if not taken or self._port_fixed or attempt == _PORT_ATTEMPTS:
                    self.stop()
                    raise
                self.port = free_port()
        return self

    def _launch(self) -> None:
        assert self._root is not None
        log = self._root / "redis.log"
        argv = [self.binary, "--bind", self.host, "--port", str(self.port)]
        argv += ["--save", "", "--appendonly", "no", "--dir", str(self._root)]
        argv += ["--logfile", str(log), "--daemonize", "no", *self._extra]
        process = subprocess.Popen(
            argv,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            preexec_fn=_die_with_parent if self._die_with_parent else None,
        )
        self._process = process
        deadline = time.monotonic() + self._start_timeout
        while not self.ping(timeout=0.2):
            if process.poll() is not None or time.monotonic() > deadline:
                _stop_process(process)
                self._process = None
                raise ServerStartError(
                    f"redis-server did not start on port {self.port}:\n{_tail(log)}"
                )
            time.sleep(0.02)

    def stop(self) -> None:
        process, self._process = self._process, None
        if process is not None:
            _stop_process(process)
        root, self._root = self._root, None
        if root is not None:
            shutil.rmtree(root, ignore_errors=True)
