"""The account flows from a terminal, as after `make run`: real `sso serve` in embedded
mode (mail goes to `.sso/outbox/`), walked through with `sso client …`."""

from __future__ import annotations

import json
import signal
import sys
import time
from pathlib import Path

TESTS = Path(__file__).resolve().parent.parent
if str(TESTS / "service_e2e") not in sys.path:
    sys.path.append(str(TESTS / "service_e2e"))

from test_cli_flow import Workdir  # noqa: E402

PASSWORD = "tall violet harbour 7291"
RESET = "quiet amber lantern 5813"
CHANGED = "brisk cobalt meadow 4402"


def outbox(workdir: Workdir, kind: str, count: int = 1) -> list[dict[str, str]]:
    deadline = time.monotonic() + 15
    while True:  # the mail is written after the answer
        lines = workdir.run("client", "outbox", "--email", "carol@example.com").stdout
        mails = [json.loads(line) for line in lines.splitlines() if line.strip()]
        found = [m for m in mails if m["kind"] == kind]
        if len(found) >= count or time.monotonic() > deadline:
            return found
        time.sleep(0.1)


def test_verify_reset_and_change_from_the_terminal(tmp_path: Path) -> None:
    workdir = Workdir(tmp_path)
    workdir.run("migrate")
    workdir.run("keys", "ensure")
    workdir.run("apps", "ensure-demo")
    server = workdir.serve()
    try:
        workdir.client("register", "carol@example.com", "--password", PASSWORD)
        (verify,) = outbox(workdir, "verify_email")
        assert verify["link"].startswith("http://127.0.0.1:8080/account/verify-email?token=")
        assert Path(verify["file"]).parent == tmp_path / ".sso" / "outbox"
        assert workdir.client("verify-email", "--from-outbox", "carol@example.com") == {
            "verified": True
        }
        workdir.client("login", "carol@example.com", "--password", PASSWORD)
        claims = workdir.client("validate")["claims"]
        assert isinstance(claims, dict) and claims["email_verified"] is True

        workdir.run("client", "forgot-password", "carol@example.com")
        outbox(workdir, "password_reset")
        done = workdir.client(
            "reset-password", "--from-outbox", "carol@example.com", "--password", RESET
        )
        assert done == {"success": True, "sessions_revoked": 1}
        again = workdir.client(
            "reset-password",
            "--from-outbox",
            "carol@example.com",
            "--password",
            RESET,
            check=False,
        )
        assert again["reason"] == "LINK_INVALID"  # single use
        workdir.client("login", "carol@example.com", "--password", RESET)
        changed = workdir.client("change-password", "--current", RESET, "--new", CHANGED)
        assert changed == {}  # no other session: sessions_revoked 0 is the default
        history = workdir.client("history")["entries"]
        assert isinstance(history, list) and [e["result"] for e in history] == ["success"] * 2
        apps = workdir.client("apps")["apps"]
        assert isinstance(apps, list) and apps[0]["app_id"] == 1
        export = workdir.client("export")
        assert set(export) >= {"login_history", "known_devices", "email_verification"}
        assert workdir.client("revoke-app", "1") == {"sessions_revoked": 1}
        notices = outbox(workdir, "password_changed", 2)
        assert len(notices) == 2
    finally:
        server.send_signal(signal.SIGTERM)
        output, _ = server.communicate(timeout=30)
    assert server.returncode == 0, output
    for mail in outbox(workdir, "verify_email") + outbox(workdir, "password_reset"):
        token = mail["link"].rsplit("token=", 1)[1]
        assert token not in output
    for secret in (PASSWORD, RESET, CHANGED):
        assert secret not in output
