"""Users through sso.v1.Admin: list, get, lock, admin flag, delete, sessions, export, stats."""

from __future__ import annotations

import base64
import json
import secrets
from pathlib import Path

import grpc
from admin_support import (
    STRONG,
    AdminEnv,
    admin_settings,
    bearer,
    expect_error,
    make_settings,
    reason_of,
    start,
    stop,
)

from sso.config import LockoutSettings
from sso.security.totp import hotp
from sso_proto.sso.v1 import account_pb2, account_pb2_grpc, admin_pb2, auth_pb2

S = grpc.StatusCode


async def _register(env: AdminEnv, email: str) -> int:
    reply = await env.auth.Register(auth_pb2.RegisterRequest(email=email, password=STRONG))
    return int(reply.user_id)


async def _list_all(env: AdminEnv, prefix: str, size: int) -> list[admin_pb2.User]:
    users: list[admin_pb2.User] = []
    token = ""
    while True:
        page = await env.admin.ListUsers(
            admin_pb2.ListUsersRequest(page_size=size, page_token=token, email_prefix=prefix),
            metadata=env.md,
        )
        assert len(page.users) <= size
        users.extend(page.users)
        token = page.next_page_token
        if not token:
            return users


async def test_list_users_pages_and_prefix_with_like_metacharacters(env: AdminEnv) -> None:
    tag = f"t{secrets.token_hex(3)}"
    ids = {
        "underscore": await _register(env, f"{tag}_a@example.com"),
        "x": await _register(env, f"{tag}xa@example.com"),
        "percent": await _register(env, f"{tag}%b@example.com"),
        "y": await _register(env, f"{tag}yb@example.com"),
    }
    for i in range(6):
        await _register(env, f"{tag}.page{i}@example.com")

    everyone = await _list_all(env, tag, 4)
    listed = [u.user_id for u in everyone]
    assert listed == sorted(listed) and len(listed) == len(set(listed)) == 10

    only = [u.user_id for u in await _list_all(env, f"{tag}_", 2)]
    assert only == [ids["underscore"]]  # `_` is not "any character"
    only = [u.user_id for u in await _list_all(env, f"{tag}%", 2)]
    assert only == [ids["percent"]]  # `%` is not "anything"
    only = [u.user_id for u in await _list_all(env, f"{tag.upper()}X", 2)]
    assert only == [ids["x"]]  # case-insensitive
    # The escape character itself is escaped: a trailing backslash is no syntax error.
    assert await _list_all(env, f"{tag}\\", 2) == []

    page = await env.admin.ListUsers(
        admin_pb2.ListUsersRequest(page_size=3, email_prefix=tag), metadata=env.md
    )
    other = await expect_error(
        env.admin.ListApps(
            admin_pb2.ListAppsRequest(page_token=page.next_page_token), metadata=env.md
        ),
        S.INVALID_ARGUMENT,
    )
    assert reason_of(other) == "PAGE_TOKEN_INVALID"  # a users token is not an apps token


async def test_get_user_shows_state_and_never_the_hash(env: AdminEnv) -> None:
    uid, email, _ = await env.user("get")
    user = (await env.admin.GetUser(admin_pb2.GetUserRequest(user_id=uid), metadata=env.md)).user
    assert (user.user_id, user.email, user.is_admin, user.locked) == (uid, email, False, False)
    assert user.password_scheme == "argon2id" and user.active_sessions == 1
    assert user.created_at > 0 and user.last_login_at >= user.created_at
    assert "$argon2" not in str(user)
    missing = await expect_error(
        env.admin.GetUser(admin_pb2.GetUserRequest(user_id=10**12), metadata=env.md), S.NOT_FOUND
    )
    assert reason_of(missing) == "USER_NOT_FOUND"


async def test_lock_revokes_sessions_and_refuses_login_until_unlocked(env: AdminEnv) -> None:
    uid, email, access = await env.user("lock")
    login = auth_pb2.LoginRequest(email=email, password=STRONG, app_id=env.running.app.id)
    locked = await env.admin.LockUser(
        admin_pb2.LockUserRequest(user_id=uid, reason="ticket 42"), metadata=env.md
    )
    assert locked.sessions_revoked == 1 and locked.user.locked and locked.user.locked_until == 0
    await expect_error(
        env.auth.ValidateToken(auth_pb2.ValidateTokenRequest(token=access)), S.UNAUTHENTICATED
    )
    refused = await expect_error(env.auth.Login(login), S.UNAUTHENTICATED)
    wrong = await expect_error(
        env.auth.Login(
            auth_pb2.LoginRequest(email=email, password="wrong " + STRONG, app_id=login.app_id)
        ),
        S.UNAUTHENTICATED,
    )
    assert (refused.details(), reason_of(refused)) == (wrong.details(), reason_of(wrong))

    unlocked = await env.admin.UnlockUser(admin_pb2.UnlockUserRequest(user_id=uid), metadata=env.md)
    assert not unlocked.user.locked
    assert (await env.auth.Login(login)).tokens.access_token


async def test_admin_flag_is_read_at_call_time(env: AdminEnv) -> None:
    uid, _, access = await env.user("adm")
    stats = admin_pb2.GetStatsRequest()
    denied = await expect_error(
        env.admin.GetStats(stats, metadata=bearer(access)), S.PERMISSION_DENIED
    )
    assert reason_of(denied) == "NOT_ADMIN"
    granted = await env.admin.SetAdmin(
        admin_pb2.SetAdminRequest(user_id=uid, is_admin=True), metadata=env.md
    )
    assert granted.user.is_admin
    # The same token (its claims unchanged) now works: the flag is checked in the database.
    assert (await env.admin.GetStats(stats, metadata=bearer(access))).users >= 1
    # An admin user cannot demote, lock or delete themself.
    for call in (
        env.admin.SetAdmin(admin_pb2.SetAdminRequest(user_id=uid), metadata=bearer(access)),
        env.admin.LockUser(admin_pb2.LockUserRequest(user_id=uid), metadata=bearer(access)),
        env.admin.DeleteUser(admin_pb2.DeleteUserRequest(user_id=uid), metadata=bearer(access)),
    ):
        assert reason_of(await expect_error(call, S.FAILED_PRECONDITION)) == "SELF_ACTION"
    await env.admin.SetAdmin(
        admin_pb2.SetAdminRequest(user_id=uid, is_admin=False), metadata=env.md
    )
    await expect_error(env.admin.GetStats(stats, metadata=bearer(access)), S.PERMISSION_DENIED)


async def test_delete_user_invalidates_access_tokens_at_once(env: AdminEnv) -> None:
    uid, email, access = await env.user("gone")
    second = await env.auth.Login(
        auth_pb2.LoginRequest(email=email, password=STRONG, app_id=env.running.app.id)
    )
    assert (await env.auth.ValidateToken(auth_pb2.ValidateTokenRequest(token=access))).valid
    deleted = await env.admin.DeleteUser(admin_pb2.DeleteUserRequest(user_id=uid), metadata=env.md)
    assert deleted.deleted
    for token in (access, second.tokens.access_token):
        error = await expect_error(
            env.auth.ValidateToken(auth_pb2.ValidateTokenRequest(token=token)), S.UNAUTHENTICATED
        )
        assert reason_of(error) == "TOKEN_REVOKED"
    await expect_error(
        env.auth.Refresh(auth_pb2.RefreshRequest(refresh_token=second.tokens.refresh_token)),
        S.UNAUTHENTICATED,
    )
    await expect_error(
        env.admin.GetUser(admin_pb2.GetUserRequest(user_id=uid), metadata=env.md), S.NOT_FOUND
    )
    # The address can register again: a new account with a new id (SQLite too: the
    # deleted user had the highest id, which SQLite would reuse without AUTOINCREMENT).
    again = await env.auth.Register(auth_pb2.RegisterRequest(email=email, password=STRONG))
    assert again.user_id > uid
    fresh = await env.admin.GetUser(
        admin_pb2.GetUserRequest(user_id=again.user_id), metadata=env.md
    )
    assert fresh.user.active_sessions == 0 and fresh.user.email == email
    # Nothing of the deleted account shows through.
    assert fresh.user.last_login_at == 0
    exported = await env.admin.ExportUser(
        admin_pb2.ExportUserRequest(user_id=again.user_id), metadata=env.md
    )
    history = json.loads(exported.json)["sections"]["audit_events"]
    events = [e["event"] for e in history]
    assert events.count("user_created") == 1  # this account's, not the deleted one's
    assert "authn_login_success" not in events and "session_revoked" not in events


async def test_revoke_user_sessions(env: AdminEnv) -> None:
    uid, email, access = await env.user("rev")
    pair = await env.auth.Login(
        auth_pb2.LoginRequest(email=email, password=STRONG, app_id=env.running.app.id)
    )
    revoked = await env.admin.RevokeUserSessions(
        admin_pb2.RevokeUserSessionsRequest(user_id=uid), metadata=env.md
    )
    assert revoked.revoked == 2
    await expect_error(
        env.auth.Refresh(auth_pb2.RefreshRequest(refresh_token=pair.tokens.refresh_token)),
        S.UNAUTHENTICATED,
    )
    await expect_error(
        env.auth.ValidateToken(auth_pb2.ValidateTokenRequest(token=access)), S.UNAUTHENTICATED
    )


async def test_export_user_has_every_section_and_no_secret(env: AdminEnv) -> None:
    uid, email, access = await env.user("gdpr")
    exported = await env.admin.ExportUser(admin_pb2.ExportUserRequest(user_id=uid), metadata=env.md)
    doc = json.loads(exported.json)
    assert doc["user_id"] == uid and doc["format"] == "sso.user-export/v1"
    sections = doc["sections"]
    assert set(env.running.container.bundle.lifecycle.exporter.sections) <= set(sections)
    assert sections["profile"]["email"] == email
    assert sections["profile"]["password_scheme"] == "argon2id"
    assert len(sections["sessions"]) == 1 and sections["sessions"][0]["session"].startswith(
        "session:"
    )
    events = {e["event"] for e in sections["audit_events"]}
    assert {"user_created", "authn_login_success"} <= events
    text = exported.json
    assert "$argon2" not in text and "password_hash" not in text and access not in text
    sid = json.loads(__import__("base64").urlsafe_b64decode(access.split(".")[1] + "==").decode())[
        "sid"
    ]
    assert sid not in text  # session ids are revocation handles: exported hashed only


async def test_stats_counts_users_sessions_legacy_hashes_and_daily_logins(env: AdminEnv) -> None:
    before = await env.admin.GetStats(admin_pb2.GetStatsRequest(days=3), metadata=env.md)
    _, email, _ = await env.user("st")
    await env.running.container.auth.users.create(
        f"bcrypt.{secrets.token_hex(3)}@example.com",
        "$2b$12$" + "a" * 53,
    )
    await expect_error(
        env.auth.Login(
            auth_pb2.LoginRequest(email=email, password="nope " + STRONG, app_id=env.running.app.id)
        ),
        S.UNAUTHENTICATED,
    )
    after = await env.admin.GetStats(admin_pb2.GetStatsRequest(days=3), metadata=env.md)
    assert after.users == before.users + 2
    assert after.legacy_password_hashes == before.legacy_password_hashes + 1
    assert after.active_sessions == before.active_sessions + 1
    assert after.apps >= 1 and after.verified_users <= after.users
    assert len(after.logins_per_day) == 3
    today, prev = after.logins_per_day[-1], before.logins_per_day[-1]
    assert today.day == prev.day
    assert today.succeeded == prev.succeeded + 1 and today.failed == prev.failed + 1
    bad = await expect_error(
        env.admin.GetStats(admin_pb2.GetStatsRequest(days=400), metadata=env.md),
        S.INVALID_ARGUMENT,
    )
    assert reason_of(bad) == "DAYS_INVALID"


async def test_admin_lock_holds_with_lockout_switched_off(tmp_path: Path, sqlite_url: str) -> None:
    token = secrets.token_urlsafe(32)
    settings = admin_settings(make_settings(tmp_path, sqlite_url), token)
    settings.lockout = LockoutSettings(enabled=False)
    running = await start(settings)
    try:
        env = AdminEnv(running, token)
        uid, email, _ = await env.user("nolockout")
        login = auth_pb2.LoginRequest(email=email, password=STRONG, app_id=running.app.id)
        # Lockout off: six wrong passwords (the lockout threshold is 5) lock nothing.
        for _ in range(6):
            wrong = auth_pb2.LoginRequest(email=email, password="x" + STRONG, app_id=login.app_id)
            await expect_error(env.auth.Login(wrong), S.UNAUTHENTICATED)
        assert (await env.auth.Login(login)).tokens.access_token
        await env.admin.LockUser(admin_pb2.LockUserRequest(user_id=uid), metadata=env.md)
        await expect_error(env.auth.Login(login), S.UNAUTHENTICATED)
        await env.admin.UnlockUser(admin_pb2.UnlockUserRequest(user_id=uid), metadata=env.md)
        assert (await env.auth.Login(login)).tokens.access_token
    finally:
        await stop(running)


async def test_user_shows_whether_totp_is_on_never_its_secret(env: AdminEnv) -> None:
    uid, _, access = await env.user("totp")
    get = admin_pb2.GetUserRequest(user_id=uid)
    assert not (await env.admin.GetUser(get, metadata=env.md)).user.totp_enabled
    account = account_pb2_grpc.AccountStub(env.channel)
    begun = await account.BeginTotpEnrollment(
        account_pb2.BeginTotpEnrollmentRequest(password=STRONG), metadata=bearer(access)
    )
    raw = base64.b32decode(begun.secret + "=" * (-len(begun.secret) % 8))
    code = hotp(raw, int(env.running.container.auth.clock().timestamp()) // 30)
    await account.ConfirmTotpEnrollment(
        account_pb2.ConfirmTotpEnrollmentRequest(totp_code=code), metadata=bearer(access)
    )
    user = (await env.admin.GetUser(get, metadata=env.md)).user
    assert user.totp_enabled
    exported = await env.admin.ExportUser(admin_pb2.ExportUserRequest(user_id=uid), metadata=env.md)
    assert begun.secret not in str(user) and begun.secret not in exported.json
    assert begun.secret.lower() not in exported.json.lower()
