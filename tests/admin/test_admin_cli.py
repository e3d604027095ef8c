"""`sso admin …` over real gRPC: one command per Admin RPC, JSON out, errors with reasons."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from pathlib import Path
from typing import Any

from admin_support import AdminEnv

from sso.api.admin_auth import SERVICE
from sso.cli import build_parser
from sso.cli.admin import command_name

SSO = str(Path(sys.executable).with_name("sso"))


async def sso_admin(
    env: AdminEnv, *args: str, token: str | None = None, stdin: str = ""
) -> tuple[int, Any, str]:
    """Run the real CLI in a subprocess (the server runs on this test's event loop)."""
    environ = {k: v for k, v in os.environ.items() if not k.startswith("SSO_")}
    environ["SSO_ADMIN_TOKEN"] = env.token if token is None else token
    proc = await asyncio.create_subprocess_exec(
        SSO,
        "admin",
        "--target",
        env.running.target,
        *args,
        env=environ,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await proc.communicate(stdin.encode())
    text = out.decode()
    try:
        parsed: Any = json.loads(text)
    except ValueError:  # several documents (--all) or nothing: the text itself
        parsed = text
    return int(proc.returncode or 0), parsed, err.decode()


def test_every_rpc_has_a_command() -> None:
    parser = build_parser()
    admin = next(
        a
        for a in parser._subparsers._group_actions[0].choices.items()
        if a[0] == "admin"  # type: ignore[union-attr]
    )[1]
    commands = set(admin._subparsers._group_actions[0].choices)  # type: ignore[union-attr]
    assert {command_name(m.name) for m in SERVICE.methods} == commands


async def test_cli_smoke(env: AdminEnv) -> None:
    uid, email, _ = await env.user("cli")
    code, created, err = await sso_admin(
        env, "create-app", "cli-app", "--display-name", "CLI", "--rate-limit", "30"
    )
    assert code == 0, err
    app_id = created["app"]["app_id"]
    assert created["app"]["display_name"] == "CLI" and len(created["secret"]) >= 43
    assert "never shown again" in err

    code, got, _ = await sso_admin(env, "get-app", str(app_id))
    assert code == 0 and got["app"]["login_rate_limit_per_minute"] == 30 and "secret" not in got

    code, updated, _ = await sso_admin(
        env, "update-app", str(app_id), "--redirect-uri", "https://cli.example.com/cb"
    )
    assert code == 0 and updated["app"]["redirect_uris"] == ["https://cli.example.com/cb"]
    assert updated["app"]["display_name"] == "CLI"  # not named: kept

    code, rotated, _ = await sso_admin(env, "rotate-app-secret", str(app_id), "--overlap", "60")
    assert code == 0 and rotated["secret"] != created["secret"]

    code, listed, _ = await sso_admin(env, "--page-size", "1", "--all", "list-apps")
    assert code == 0 and isinstance(listed, str) and listed.count('"app_id"') >= 2

    code, imported, _ = await sso_admin(
        env, "create-app", "cli-imported", "--secret-stdin", stdin="s" * 40 + "\n"
    )
    assert code == 0 and imported["secret"] == "s" * 40

    code, users, _ = await sso_admin(env, "list-users", "--email-prefix", email)
    assert code == 0 and [int(u["user_id"]) for u in users["users"]] == [uid]
    code, locked, _ = await sso_admin(env, "lock-user", str(uid), "--reason", "cli")
    assert code == 0 and locked["user"]["locked"] is True
    code, unlocked, _ = await sso_admin(env, "unlock-user", str(uid))
    assert code == 0 and unlocked["user"].get("locked", False) is False
    code, admin, _ = await sso_admin(env, "set-admin", str(uid), "true")
    assert code == 0 and admin["user"]["is_admin"] is True
    code, exported, _ = await sso_admin(env, "export-user", str(uid))
    assert code == 0 and exported["sections"]["profile"]["email"] == email
    code, revoked, _ = await sso_admin(env, "revoke-user-sessions", str(uid))
    assert code == 0 and revoked.get("revoked", 0) == 0  # lock-user already ended the session
    code, stats, _ = await sso_admin(env, "--days", "2", "get-stats")
    assert code == 0 and len(stats["logins_per_day"]) == 2
    code, got_user, _ = await sso_admin(env, "get-user", str(uid))
    assert code == 0 and got_user["user"]["email"] == email
    code, _, _ = await sso_admin(env, "delete-user", str(uid))
    assert code == 0
    code, deleted, _ = await sso_admin(env, "delete-app", str(app_id))
    assert code == 0 and deleted["deleted"] is True

    code, _, err = await sso_admin(env, "get-stats", token="w" * len(env.token))
    assert code == 1
    assert json.loads(err.strip().splitlines()[-1])["code"] == "UNAUTHENTICATED"
    code, _, err = await sso_admin(env, "get-app", str(app_id))
    assert code == 1 and json.loads(err)["reason"] == "APP_NOT_FOUND"
