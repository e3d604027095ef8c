"""What a new user does after `make run`: real `sso` processes, embedded mode, from a terminal.

Starts `sso migrate`, `sso keys ensure`, `sso apps ensure-demo` and `sso serve`
as subprocesses in a scratch directory, then walks every flow with
`sso client …`, and checks that SIGTERM stops the server cleanly.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

SSO = [sys.executable, "-m", "sso"]
PASSWORD = "tall violet harbour 7291"  # not the --hint example: the log check below is real


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_port(port: int, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise AssertionError(f"port {port} never opened")


class Workdir:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.port, self.http_port = free_port(), free_port()
        self.env = {
            **os.environ,
            "SSO_SERVER__PORT": str(self.port),
            "SSO_SERVER__HTTP_PORT": str(self.http_port),
            "SSO_PASSWORDS__MEMORY_KIB": "8192",
            "SSO_PASSWORDS__TIME_COST": "1",
            "SSO_TARGET": f"127.0.0.1:{self.port}",
        }

    def run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [*SSO, *args], cwd=self.path, env=self.env, capture_output=True, text=True, timeout=60
        )
        if check:
            assert result.returncode == 0, (args, result.stdout, result.stderr)
        return result

    def client(self, *args: str, check: bool = True) -> dict[str, object]:
        result = self.run("client", *args, check=check)
        text = result.stdout if result.returncode == 0 else result.stderr
        return json.loads(text) if text.strip() else {}

    def serve(self, *args: str) -> subprocess.Popen[str]:
        proc = subprocess.Popen(
            [*SSO, "serve", *args],
            cwd=self.path,
            env=self.env,
            text=True,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        wait_port(self.port)
        return proc


@pytest.fixture
def workdir(tmp_path: Path) -> Iterator[Workdir]:
    yield Workdir(tmp_path)


def test_make_run_walkthrough(workdir: Workdir) -> None:
    assert "database at revision" in workdir.run("migrate").stdout
    workdir.run("keys", "ensure")
    demo = json.loads(workdir.run("apps", "ensure-demo").stdout)
    assert demo["app_id"] == 1 and len(demo["secret"]) >= 32
    again = workdir.run("apps", "ensure-demo").stdout  # idempotent: same app, secret not shown
    assert "app_id=1" in again and demo["secret"] not in again
    server = workdir.serve("--hint")
    try:
        reg = workdir.client("register", "alice@example.com", "--password", PASSWORD)
        assert int(str(reg["user_id"])) > 0
        login = workdir.client(
            "login", "alice@example.com", "--password", PASSWORD, "--app-id", "1"
        )
        tokens = login["tokens"]
        assert isinstance(tokens, dict) and tokens["session_id"]
        assert (workdir.path / ".sso" / "client-session.json").stat().st_mode & 0o077 == 0
        claims = workdir.client("validate")["claims"]
        assert isinstance(claims, dict) and claims["email"] == "alice@example.com"
        refreshed = workdir.client("refresh")["tokens"]
        assert isinstance(refreshed, dict) and refreshed["refresh_token"] != tokens["refresh_token"]
        sessions = workdir.client("sessions")["sessions"]
        assert isinstance(sessions, list) and len(sessions) == 1 and sessions[0]["current"]
        legacy = workdir.client("legacy-login", "alice@example.com", "--password", PASSWORD)
        assert str(legacy["token"]).count(".") == 2
        assert "keys" in workdir.client("jwks")
        bad = workdir.client(
            "login", "alice@example.com", "--password", "wrong password!!", check=False
        )
        assert bad == {
            "code": "UNAUTHENTICATED",
            "message": "invalid email or password",
            "reason": "INVALID_CREDENTIALS",
        }
        assert workdir.client("logout")["success"] is True
    finally:
        server.send_signal(signal.SIGTERM)
        output, _ = server.communicate(timeout=30)
    assert server.returncode == 0, output
    assert "sso client register" in output  # the --hint text
    assert PASSWORD not in output


def test_serve_with_two_workers_shares_the_port(workdir: Workdir) -> None:
    workdir.run("migrate")
    workdir.run("keys", "ensure")
    workdir.run("apps", "ensure-demo")
    server = workdir.serve("--workers", "2")
    try:
        workdir.client("register", "bob@example.com", "--password", PASSWORD)
        for _ in range(6):
            workdir.client("login", "bob@example.com", "--password", PASSWORD)
        children = subprocess.run(
            ["pgrep", "-P", str(server.pid)], capture_output=True, text=True, check=False
        ).stdout.split()
        assert len(children) == 2
    finally:
        server.send_signal(signal.SIGTERM)
        server.communicate(timeout=30)
    assert server.returncode == 0
