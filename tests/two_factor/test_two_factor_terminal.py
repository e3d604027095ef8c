"""docs/two-factor.md "From a terminal", for real: `sso serve` as a process in embedded mode
(SQLite, real clock) and the documented `sso client` commands, in order.

With the real clock the confirming code spends the current 30 s step, so the next
login uses the code of the following step (the ±1 window allows it) and the later
steps use backup codes: no sleeping for a step to pass.
"""

from __future__ import annotations

import base64
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from sso.security.totp import hotp

SSO = [sys.executable, "-m", "sso"]
PASSWORD = "tall violet harbour 7291"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_documented_terminal_walkthrough(tmp_path: Path) -> None:
    port = free_port()
    env = {
        **os.environ,
        "SSO_SERVER__PORT": str(port),
        "SSO_SERVER__HTTP_PORT": str(free_port()),
        "SSO_PASSWORDS__MEMORY_KIB": "8192",
        "SSO_PASSWORDS__TIME_COST": "1",
        "SSO_TARGET": f"127.0.0.1:{port}",
    }

    def sso(*args: str, ok: bool = True) -> str:
        result = subprocess.run(
            [*SSO, *args], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60
        )
        assert (result.returncode == 0) == ok, (args, result.stdout, result.stderr)
        return result.stdout + result.stderr

    sso("migrate")
    sso("keys", "ensure")
    sso("apps", "ensure-demo")
    server = subprocess.Popen(
        [*SSO, "serve"], cwd=tmp_path, env=env, text=True,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 20
        while True:
            with socket.socket() as probe:
                if probe.connect_ex(("127.0.0.1", port)) == 0:
                    break
            assert time.monotonic() < deadline, "the server never listened"
            time.sleep(0.1)
        me, pw = "alice@example.com", ("--password", PASSWORD)
        sso("client", "register", me, *pw)
        sso("client", "login", me, *pw, "--app-id", "1")
        out = sso("client", "totp-enroll", *pw)
        qr = tmp_path / ".sso" / "totp-qr.png"
        assert f"QR code written to {qr}" in out and qr.read_bytes()[:4] == b"\x89PNG"
        found = re.search(r"secret \(to type in instead\): ([A-Z2-7]+)", out)
        assert found is not None and f"secret={found.group(1)}" in out
        secret = base64.b32decode(found.group(1) + "=" * (-len(found.group(1)) % 8))
        step = int(time.time()) // 30

        out = sso("client", "totp-confirm", hotp(secret, step))
        backup = re.findall(r"^  (\S{29})$", out, re.MULTILINE)
        assert "TOTP is on" in out and len(backup) == 10
        out = json.loads(sso("client", "totp-status"))
        assert out["totp_enabled"] is True and out["backup_codes_remaining"] == 10

        challenge = json.loads(sso("client", "login", me, *pw, "--app-id", "1"))
        challenge_id = challenge["mfa_required"]["challenge_id"]
        sso("client", "verify-mfa", challenge_id, "--code", hotp(secret, step + 1))
        amr = json.loads(sso("client", "validate"))["claims"]["amr"]
        assert amr == ["pwd", "otp", "mfa"]
        sso("client", "mfa-login", me, *pw, "--app-id", "1", "--backup-code", backup[0])
        amr = json.loads(sso("client", "validate"))["claims"]["amr"]
        assert amr == ["pwd", "mfa", "backup_code"]

        refused = json.loads(sso("client", "legacy-login", me, *pw, ok=False))
        assert refused["code"] == "FAILED_PRECONDITION" and refused["reason"] == "MFA_REQUIRED"
        out = sso("client", "backup-codes", *pw, "--backup-code", backup[1])
        fresh = re.findall(r"^  (\S{29})$", out, re.MULTILINE)
        assert len(fresh) == 10 and not set(fresh) & set(backup)
        out = sso("client", "totp-disable", *pw, "--backup-code", backup[2], ok=False)
        assert "REAUTHENTICATION_FAILED" in out  # the old set is void
        assert json.loads(sso("client", "totp-disable", *pw, "--backup-code", fresh[0]))["disabled"]
        assert "tokens" in json.loads(sso("client", "login", me, *pw, "--app-id", "1"))
    finally:
        server.send_signal(signal.SIGTERM)
        output, _ = server.communicate(timeout=30)
    assert server.returncode == 0, output
    for value in (PASSWORD, found.group(1), *backup, *fresh, challenge_id):
        assert value not in output and value.lower() not in output.lower()
