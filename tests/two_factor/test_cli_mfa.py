"""`sso client` two-factor commands against the real service (SQLite): a person enrols,
gets the QR code as a PNG file, logs in with a code and with a backup code.

The CLI is synchronous gRPC; it runs in a worker thread so the in-process server
keeps serving on this event loop.
"""

from __future__ import annotations

import asyncio
import re
import secrets
from pathlib import Path

import pytest
from sso_harness import Running
from tf_helpers import PASSWORD, Client, code_at

from sso.cli import client as cli_client
from sso.cli import main


@pytest.fixture
def tf_db(sqlite_url: str) -> str:
    """SQLite only: the CLI is the same client whatever the backend."""
    return sqlite_url


async def sso(capsys: pytest.CaptureFixture[str], target: str, *argv: str) -> tuple[int, str]:
    code = await asyncio.to_thread(main, ["client", "--target", target, *argv])
    out = capsys.readouterr()
    return code, out.out + out.err


async def test_enrol_and_log_in_from_the_terminal(
    tf_server_db: Running,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(cli_client, "STATE", tmp_path / "client-session.json")
    running, target = tf_server_db, f"127.0.0.1:{tf_server_db.server.port}"
    helper = Client(running, f"cli-{secrets.token_hex(4)}@example.com")
    await helper.register()
    app = str(running.app.id)
    pw = ("--password", PASSWORD)
    assert (await sso(capsys, target, "login", helper.email, *pw, "--app-id", app))[0] == 0

    qr = tmp_path / "qr" / "totp.png"
    rc, out = await sso(capsys, target, "totp-enroll", *pw, "--qr-file", str(qr))
    assert rc == 0, out
    assert f"QR code written to {qr.resolve()}" in out
    png = qr.read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 200
    assert qr.stat().st_mode & 0o077 == 0  # it holds the secret: owner only
    secret = re.search(r"secret \(to type in instead\): ([A-Z2-7]+)", out)
    assert secret is not None
    now = running.container.auth.clock()

    rc, out = await sso(capsys, target, "totp-confirm", code_at(secret.group(1), now))
    assert rc == 0, out
    backup = re.findall(r"^  ([a-z2-7]{4}(?:-[a-z2-7]{4}){5})$", out, re.MULTILINE)
    assert len(backup) == 10

    # A plain login now stops at the challenge; mfa-login finishes it with the next code.
    login = ("mfa-login", helper.email, *pw, "--app-id", app)
    rc, out = await sso(capsys, target, *login, "--code", code_at(secret.group(1), now, 1))
    assert rc == 0 and '"access_token"' in out, out
    rc, out = await sso(capsys, target, "validate")
    assert rc == 0 and '"otp"' in out and '"mfa"' in out, out

    rc, out = await sso(capsys, target, *login, "--backup-code", backup[0])
    assert rc == 0 and '"refresh_token"' in out, out
    rc, out = await sso(capsys, target, *login, "--backup-code", backup[0])
    assert rc == 1 and "MFA_CODE_INVALID" in out, out

    rc, out = await sso(capsys, target, "totp-status")
    assert rc == 0 and '"backup_codes_remaining": 9' in out, out
    rc, out = await sso(capsys, target, "backup-codes", *pw, "--backup-code", backup[1])
    assert rc == 0 and len(re.findall(r"^  [a-z2-7-]{29}$", out, re.MULTILINE)) == 10, out
    rc, out = await sso(capsys, target, "totp-disable", *pw, "--code", "12_345")
    assert rc == 1 and "CODE_MALFORMED" in out, out
    helper.tick(2)  # the step of the mfa-login code is spent; a later one is current
    later = code_at(secret.group(1), running.container.auth.clock())
    rc, out = await sso(capsys, target, "totp-disable", *pw, "--code", later)
    assert rc == 0 and '"disabled": true' in out, out
