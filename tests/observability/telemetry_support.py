"""Helpers of the metrics, tracing and health tests: scrapes, `sso serve`, a private PostgreSQL.

- `scrape` / `Samples`: fetch `/metrics` and read values by name and labels
  (`prometheus_client`'s own parser, so the test reads what Prometheus reads).
- `ServeProcess`: the real `sso serve` as a subprocess, configured only through
  the environment, as a Deployment would.
- `PrivatePostgres`: a PostgreSQL cluster of the test's own, which the test may
  stop and restart (the session server in `tests/conftest.py` is shared and
  must stay up). It is started the way that conftest starts the session one.
"""

from __future__ import annotations

import asyncio
import contextlib
import glob
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

TESTS = Path(__file__).resolve().parent.parent
if str(TESTS / "api") not in sys.path:
    sys.path.append(str(TESTS / "api"))

from sso_harness import Running, make_settings, start, stop  # noqa: E402

__all__ = [
    "PASSWORD",
    "PrivatePostgres",
    "Running",
    "Samples",
    "ServeProcess",
    "embedded_env",
    "fetch",
    "free_port",
    "make_settings",
    "scrape",
    "start",
    "stop",
]
PASSWORD = "correct horse battery staple"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_port(port: int, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise AssertionError(f"port {port} never opened")


# -- scraping ------------------------------------------------------------------------------


def fetch(url: str) -> tuple[str, str]:
    """(body, content type) of a GET, synchronously."""
    with urllib.request.urlopen(url, timeout=10) as response:  # noqa: S310 (loopback only)
        return response.read().decode(), str(response.headers.get("Content-Type"))


async def scrape(http: str) -> Samples:
    body, _ = await asyncio.to_thread(fetch, f"{http}/metrics")
    return Samples(body)


class Samples:
    """Every sample of one exposition, looked up by name and (a subset of) labels."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.rows: list[tuple[str, dict[str, str], float]] = []
        self.types: dict[str, str] = {}
        for family in text_string_to_metric_families(text):
            self.types[family.name] = family.type
            for sample in family.samples:
                self.rows.append((sample.name, dict(sample.labels), float(sample.value)))

    def value(self, name: str, **labels: str) -> float:
        """The sum of the samples called `name` whose labels include `labels` (0 if none)."""
        return sum(
            v
            for n, lab, v in self.rows
            if n == name and all(lab.get(k) == x for k, x in labels.items())
        )

    def has(self, name: str, **labels: str) -> bool:
        return any(
            n == name and all(lab.get(k) == x for k, x in labels.items()) for n, lab, _ in self.rows
        )

    def labels(self, name: str) -> list[dict[str, str]]:
        return [lab for n, lab, _ in self.rows if n == name]


# -- the real service ----------------------------------------------------------------------


@dataclass
class ServeProcess:
    """`sso serve` (or `--workers N`) in `cwd`, configured by `env`."""

    cwd: Path
    env: dict[str, str]
    args: tuple[str, ...] = ()
    port: int = field(default_factory=free_port)
    http_port: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = None

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def http(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    def full_env(self) -> dict[str, str]:
        return {
            **os.environ,
            "SSO_SERVER__PORT": str(self.port),
            "SSO_SERVER__HTTP_PORT": str(self.http_port),
            **self.env,
        }

    def cli(self, *args: str) -> str:
        """Run another `sso` subcommand with the same environment; its stdout."""
        result = subprocess.run(
            [sys.executable, "-m", "sso", *args],
            cwd=self.cwd,
            env=self.full_env(),
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert result.returncode == 0, (args, result.stdout, result.stderr)
        return result.stdout

    def start(self) -> ServeProcess:
        log = (self.cwd / "serve.log").open("wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "sso", "serve", *self.args],
            cwd=self.cwd,
            env=self.full_env(),
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        wait_port(self.port)
        wait_port(self.http_port)
        return self

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def wait(self, timeout: float) -> int:
        assert self.proc is not None
        return int(self.proc.wait(timeout=timeout))

    def output(self) -> str:
        path = self.cwd / "serve.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def children(self) -> list[int]:
        assert self.proc is not None
        out = subprocess.run(
            ["pgrep", "-P", str(self.proc.pid)], capture_output=True, text=True, check=False
        ).stdout
        return [int(pid) for pid in out.split()]

    def stop(self, timeout: float = 30.0) -> int:
        if self.proc is None:
            return 0
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        return int(self.proc.returncode)


def embedded_env(home: Path, **extra: str) -> dict[str, str]:
    """Embedded mode (SQLite) in `home`, cheap argon2, generous rate limits."""
    return {
        "SSO_HOME": str(home / ".sso"),
        "SSO_DATABASE__URL": f"sqlite+aiosqlite:///{home}/.sso/sso.db",
        "SSO_KEYS__DIR": str(home / ".sso" / "keys"),
        "SSO_PASSWORDS__MEMORY_KIB": "8192",
        "SSO_PASSWORDS__TIME_COST": "1",
        "SSO_RATELIMIT__LOGIN_PER_EMAIL": "10000",
        "SSO_RATELIMIT__LOGIN_PER_IP": "10000",
        "SSO_RATELIMIT__REGISTER_PER_IP": "10000",
        **extra,
    }


# -- a PostgreSQL of the test's own -----------------------------------------------------------


def _spawn(argv: list[str], log: Path) -> subprocess.Popen[bytes]:
    """Start `argv` as the `postgres` user, dying with this process (like the session servers).

    Through `posix_spawn`, never fork(): this process runs gRPC threads, and a
    forked child (gRPC's fork handlers, or Python code before exec) can crash
    before it ever execs. So: no preexec_fn, no user= (setpriv switches user
    and sets the parent-death signal), close_fds=False (our fds are CLOEXEC).
    """
    prefix = ["/usr/bin/setpriv", "--pdeathsig", "KILL"]
    if os.geteuid() == 0:
        prefix += ["--reuid=postgres", "--regid=postgres", "--clear-groups"]
    with log.open("ab") as out:
        return subprocess.Popen(
            [*prefix, "--", *argv], stdout=out, stderr=subprocess.STDOUT, close_fds=False
        )


class PrivatePostgres:
    """initdb once; `start()`, `stop()` and `start()` again on the same port and data."""

    user = "sso"

    def __init__(self) -> None:
        bins = sorted(
            glob.glob("/usr/lib/postgresql/*/bin"), key=lambda p: int(Path(p).parent.name)
        )
        assert bins, "PostgreSQL binaries not found"
        self.bin = Path(bins[-1])
        parent = "/dev/shm" if os.access("/dev/shm", os.W_OK) else None
        self.root = Path(tempfile.mkdtemp(prefix="sso-pg-private-", dir=parent))
        self.data = self.root / "data"
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None
        if os.geteuid() == 0:
            shutil.chown(self.root, "postgres", "postgres")
        os.chmod(self.root, 0o700)
        initdb = [str(self.bin / "initdb"), "-D", str(self.data), "-U", self.user, "--auth=trust"]
        initdb += ["-E", "UTF8", "--locale=C", "--no-sync", "--no-instructions"]
        self.log = self.root / "postgres.log"
        self.log.touch()
        if os.geteuid() == 0:
            shutil.chown(self.log, "postgres", "postgres")
        code = _spawn(initdb, self.log).wait(timeout=60)
        assert code == 0, self.log.read_text(errors="replace")

    def url(self, dbname: str = "postgres") -> str:
        return f"postgresql+asyncpg://{self.user}@127.0.0.1:{self.port}/{dbname}"

    def start(self) -> None:
        settings = {
            "port": str(self.port),
            "unix_socket_directories": str(self.root),
            "listen_addresses": "127.0.0.1",
            "fsync": "off",
            "max_connections": "100",
        }
        argv = [str(self.bin / "postgres"), "-D", str(self.data)]
        argv += [arg for k, v in settings.items() for arg in ("-c", f"{k}={v}")]
        self.process = _spawn(argv, self.log)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and self.process.poll() is None:
            with contextlib.suppress(OSError):
                lines = (self.data / "postmaster.pid").read_text().splitlines()
                if len(lines) >= 8 and lines[7].strip() == "ready":
                    return
            time.sleep(0.02)
        tail = self.log.read_text(errors="replace")[-3000:]
        raise AssertionError(f"private PostgreSQL did not start ({self.process.poll()}):\n{tail}")

    def stop(self) -> None:
        """Fast shutdown: sessions are ended, the port closes (what an outage looks like)."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)  # PostgreSQL's "fast" shutdown
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
        self.process = None

    def destroy(self) -> None:
        self.stop()
        shutil.rmtree(self.root, ignore_errors=True)
