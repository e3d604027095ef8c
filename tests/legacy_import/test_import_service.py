"""From the Go service's SQLite file to the running service, on PostgreSQL and SQLite.

The real `sso import legacy-sqlite` (a subprocess, as a Job runs it), then the
real service (tests/api/sso_harness.py) on the imported database: old passwords
log in through both APIs, the legacy HS256 token verifies with the imported app
secret and carries the preserved ids, IsAdmin answers as before, hashes become
argon2id and the gauge of bcrypt hashes falls; re-runs change nothing, pick up
new rows, and new registrations get ids past the imported ones.
"""

from __future__ import annotations

from pathlib import Path

import grpc
import jwt
from api_helpers import expect_error
from helpers import dump, metric, metric_becomes, run_import, scalar
from legacy_db import add_apps, add_users, create, hash_go
from sso_harness import make_settings, start, stop

from sso_proto.auth import auth_pb2 as legacy_pb2
from sso_proto.auth import auth_pb2_grpc as legacy_grpc
from sso_proto.sso.v1 import auth_pb2, auth_pb2_grpc

GAUGE = "sso_legacy_password_hashes"
TABLES = ("users", "apps")
PW = {
    1: "alice's old go password",
    2: "bob's old go password",
    3: "carol's old go password",
    10: "dave's old go password",
}
WEB_SECRET = "web-secret-from-the-go-sso-service"
MOBILE_SECRET = "mobile-secret-from-the-go-sso-service"


def legacy_file(tmp_path: Path) -> Path:
    path = create(tmp_path / "go-sso.db")
    add_users(
        path,
        [
            (1, "Alice@Example.com", hash_go(PW[1]), True),  # Go's $2a$, admin
            (2, "bob@example.com", hash_go(PW[2], prefix="$2b$"), False),
            (3, "carol@example.com", hash_go(PW[3]), False),
            (10, "dave@example.com", hash_go(PW[10]), False),  # ids have gaps
        ],
    )
    add_apps(path, [(1, "web", WEB_SECRET), (7, "mobile", MOBILE_SECRET)])
    return path


async def user_hash(db_url: str, user_id: int) -> str:
    return str(await scalar(db_url, "SELECT password_hash FROM users WHERE id = :i", i=user_id))


async def test_import_then_log_in_with_old_passwords(tmp_path: Path, db_url: str) -> None:
    source = legacy_file(tmp_path)
    settings = make_settings(tmp_path, db_url)

    doc = await run_import(settings, source)
    assert doc["users"] == {
        "read": 4, "imported": 4, "unchanged": 0, "updated": 0, "conflicts": 0, "skipped": 0
    }  # fmt: skip
    assert doc["apps"]["imported"] == 2 and doc["skipped"] == doc["conflicts"] == []
    assert doc["next_ids"] == {"users": 11, "apps": 8}
    assert await scalar(db_url, "SELECT email FROM users WHERE id = 1") == "alice@example.com"
    # App secrets are sealed at rest like ours, never stored in clear.
    sealed = await scalar(db_url, "SELECT secret_encrypted FROM apps WHERE id = 1")
    assert sealed.startswith("v1.") and WEB_SECRET not in sealed

    running = await start(settings)  # its own test app is created now: id 8, past 7
    try:
        assert running.app.id == 8
        legacy = legacy_grpc.AuthStub(running.channel)
        v1 = auth_pb2_grpc.AuthStub(running.channel)
        assert await metric_becomes(running.http, GAUGE, 4.0) == 4.0

        # auth.Auth/Login: the seed API's HS256 token, signed with the imported secret.
        reply = await legacy.Login(
            legacy_pb2.LoginRequest(email="alice@example.com", password=PW[1], app_id=1)
        )
        claims = jwt.decode(reply.token, WEB_SECRET, algorithms=["HS256"])
        assert (claims["uid"], claims["app_id"], claims["email"]) == (1, 1, "alice@example.com")
        assert (await user_hash(db_url, 1)).startswith("$argon2id$")
        assert await metric_becomes(running.http, GAUGE, 3.0) == 3.0
        # ... and the rehashed password still works, on the other app as well.
        reply = await legacy.Login(
            legacy_pb2.LoginRequest(email="ALICE@example.com", password=PW[1], app_id=7)
        )
        claims = jwt.decode(reply.token, MOBILE_SECRET, algorithms=["HS256"])
        assert (claims["uid"], claims["app_id"]) == (1, 7)

        # sso.v1.Auth/Login with a $2b$ hash: a token pair for the preserved id.
        pair = (
            await v1.Login(auth_pb2.LoginRequest(email="bob@example.com", password=PW[2], app_id=7))
        ).tokens
        assert pair.access_token and pair.refresh_token
        checked = await v1.ValidateToken(auth_pb2.ValidateTokenRequest(token=pair.access_token))
        assert checked.valid and checked.claims.sub == "2" and checked.claims.app_id == 7
        assert (await user_hash(db_url, 2)).startswith("$argon2id$")
        assert await metric_becomes(running.http, GAUGE, 2.0) == 2.0

        # A wrong password is refused (the seed's answer) and leaves the legacy hash alone.
        wrong = legacy_pb2.LoginRequest(email="carol@example.com", password="nope" * 4, app_id=1)
        error = await expect_error(legacy.Login(wrong), grpc.StatusCode.INVALID_ARGUMENT)
        assert error.details() == "invalid email or password"
        assert (await user_hash(db_url, 3)).startswith("$2a$10$")

        # IsAdmin answers for the old ids as the Go service did.
        for uid, admin in ((1, True), (2, False), (10, False)):
            got = await legacy.IsAdmin(legacy_pb2.IsAdminRequest(user_id=uid))
            assert got.is_admin is admin

        # Re-running the import changes nothing at all (not even the audit table).
        everything = (*TABLES, "sessions", "refresh_tokens", "audit_events")
        full = await dump(db_url, *everything)
        assert any(row[2] == "authz_admin" for row in full["audit_events"])  # the first run
        before = await dump(db_url, *TABLES)
        doc = await run_import(settings, source)
        assert doc["users"]["imported"] == 0 and doc["users"]["unchanged"] == 4
        assert doc["apps"]["unchanged"] == 2 and doc["updated"] == doc["conflicts"] == []
        assert await dump(db_url, *everything) == full

        # Users added to the old database since: only they are added.
        add_users(
            source,
            [(11, "erin@example.com", hash_go("erin's go password"), False),
             (12, "frank@example.com", hash_go("frank's go password"), True)],
        )  # fmt: skip
        doc = await run_import(settings, source)
        assert (doc["users"]["imported"], doc["users"]["unchanged"]) == (2, 4)
        after = await dump(db_url, *TABLES)
        assert after["apps"] == before["apps"]
        assert after["users"][: len(before["users"])] == before["users"]
        assert [row[0] for row in after["users"][len(before["users"]) :]] == [11, 12]
        got = await legacy.IsAdmin(legacy_pb2.IsAdminRequest(user_id=12))
        assert got.is_admin is True

        # A registration after the import gets an id past every imported one.
        new = await v1.Register(
            auth_pb2.RegisterRequest(email="new@example.com", password="a new users password")
        )
        assert new.user_id == 13
        legacy_new = await legacy.Register(
            legacy_pb2.RegisterRequest(email="newer@example.com", password="another new password")
        )
        assert legacy_new.user_id == 14

        # --dry-run reports what it would do and writes nothing.
        add_users(source, [(20, "gina@example.com", hash_go("gina's go password"), False)])
        before = await dump(db_url, *TABLES)
        doc = await run_import(settings, source, "--dry-run")
        assert doc["dry_run"] is True and doc["users"]["imported"] == 1
        assert await dump(db_url, *TABLES) == before
        assert await metric(running.http, GAUGE) is not None
    finally:
        await stop(running)
