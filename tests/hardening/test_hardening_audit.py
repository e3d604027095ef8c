"""H2/I3: every decision leaves one audit row (who, what, when UTC, where, request id);
the table is append-only for the service's own connection, on both backends.
Routine successful refreshes (`audit.skip_events`, default `authn_token_refreshed`)
stay out of the table: log line and metrics only."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path

import grpc
import pytest
from hardening_helpers import PASSWORD, WRONG, add_users, audit_rows, login, settings
from sqlalchemy import delete, text, update

from sso.config import DatabaseSettings
from sso.domain.events import SecurityEvent
from sso.storage.audit import SqlAuditSink
from sso.storage.db import create_engine
from sso.storage.tables import audit_events
from sso_proto.sso.v1 import auth_pb2, auth_pb2_grpc, sessions_pb2, sessions_pb2_grpc


def _md(request_id: str, token: str = "") -> tuple[tuple[str, str], ...]:
    md = (("x-request-id", request_id),)
    return (*md, ("authorization", f"Bearer {token}")) if token else md


async def test_every_decision_is_audited(serve, tmp_path: Path, db_url: str) -> None:
    running = await serve(settings(tmp_path, db_url, ratelimit={"register_per_ip": 2}))
    auth = auth_pb2_grpc.AuthStub(running.channel)
    sessions = sessions_pb2_grpc.SessionsStub(running.channel)
    started = datetime.now(UTC)

    reg = await auth.Register(
        auth_pb2.RegisterRequest(email="audit@example.com", password=PASSWORD),
        metadata=_md("req-register"),
    )
    await add_users(running, ["other@example.com"])
    await auth.Register(auth_pb2.RegisterRequest(email="x@example.com", password=PASSWORD))
    for _ in range(2):  # the register limit: 2 per IP
        with pytest.raises(grpc.aio.AioRpcError):
            await auth.Register(auth_pb2.RegisterRequest(email="y@example.com", password=PASSWORD))
    first = await auth.Login(
        auth_pb2.LoginRequest(email="audit@example.com", password=PASSWORD, app_id=running.app.id),
        metadata=_md("req-login-ok"),
    )
    for _ in range(5):  # four failures, then the fifth locks
        await login(running, "other@example.com", WRONG)
    await login(running, "nobody@example.com", WRONG)
    a = first.tokens.refresh_token
    b = (await auth.Refresh(auth_pb2.RefreshRequest(refresh_token=a))).tokens.refresh_token
    await auth.Refresh(auth_pb2.RefreshRequest(refresh_token=b))
    with pytest.raises(grpc.aio.AioRpcError):  # `a` again, beyond the grace rule: reuse
        await auth.Refresh(auth_pb2.RefreshRequest(refresh_token=a))
    second = await auth.Login(
        auth_pb2.LoginRequest(email="audit@example.com", password=PASSWORD, app_id=running.app.id)
    )
    third = await auth.Login(
        auth_pb2.LoginRequest(email="audit@example.com", password=PASSWORD, app_id=running.app.id)
    )
    await sessions.RevokeSession(
        sessions_pb2.RevokeSessionRequest(session_id=third.tokens.session_id),
        metadata=_md("req-revoke", second.tokens.access_token),
    )
    await auth.Logout(auth_pb2.LogoutRequest(refresh_token=second.tokens.refresh_token))

    rows = await audit_rows(db_url)
    events = Counter(r["event"] for r in rows)
    assert events == {
        "user_created": 2,
        "excess_rate_limit_exceeded": 1,  # once per window, however many denials
        "authn_login_success": 3,
        "session_created": 3,  # each successful login's session (app, device: docs/account.md)
        "user_verification_sent": 2,  # the verification mail of each registration
        "authn_login_fail": 5,  # four wrong passwords and one unknown user
        "authn_login_lock": 1,
        # The two successful refreshes: log line and metrics only (audit.skip_events).
        "authn_token_reuse": 1,
        "session_revoked": 1,
        "authn_logout": 1,
    }, events
    assert set(events) <= {e.value for e in SecurityEvent}
    # The first row of each request (a login's session_created and a registration's mail
    # follow under the same request id).
    by_request = {r["request_id"]: r for r in reversed(rows)}
    created = by_request["req-register"]
    assert created["event"] == "user_created" and created["user_id"] == reg.user_id
    success = by_request["req-login-ok"]
    assert success["event"] == "authn_login_success" and success["user_id"] == reg.user_id
    assert by_request["req-revoke"]["event"] == "session_revoked"
    lock = next(r for r in rows if r["event"] == "authn_login_lock")
    assert lock["details"] == {"failures": 5, "locked_seconds": 30}
    unknown = next(r for r in rows if r["details"] == {"reason": "unknown_user"})
    assert unknown["user_id"] is None and unknown["target"].startswith("email:")
    assert "nobody" not in str(unknown)  # a hashed identifier, not the address
    for row in rows:
        assert row["ip"] == "127.0.0.1" and row["request_id"]
        assert row["ts"].tzinfo is not None and row["ts"].utcoffset() == timedelta(0)
        assert started - timedelta(seconds=1) <= row["ts"] <= datetime.now(UTC)
        assert running.app.secret not in str(row) and PASSWORD not in str(row)
        assert a not in str(row) and third.tokens.session_id not in str(row)


async def test_audit_table_is_append_only(db_url: str) -> None:
    engine = create_engine(DatabaseSettings(url=db_url))
    try:
        await SqlAuditSink(engine).emit(SecurityEvent.LOGIN_FAIL, user_id=1, outcome="failure")
        attempts = [update(audit_events).values(outcome="success"), delete(audit_events)]
        if engine.dialect.name == "postgresql":
            attempts.append(text("TRUNCATE audit_events"))  # type: ignore[arg-type]
        for statement in attempts:
            with pytest.raises(Exception, match="append-only"):
                async with engine.begin() as conn:
                    await conn.execute(statement)
        async with engine.connect() as conn:
            assert (await conn.execute(text("SELECT count(*) FROM audit_events"))).scalar() == 1
    finally:
        await engine.dispose()


async def test_audit_sink_never_fails_the_request(caplog: pytest.LogCaptureFixture) -> None:
    engine = create_engine(
        DatabaseSettings(url="postgresql+asyncpg://sso@127.0.0.1:1/none", connect_timeout=1)
    )
    sink = SqlAuditSink(engine)
    try:
        await sink.emit(SecurityEvent.LOGIN_SUCCESS, user_id=7)  # must not raise
    finally:
        await engine.dispose()
    assert sink.failed_total == 1
    assert any("audit write failed" in r.getMessage() for r in caplog.records)


async def test_skipped_events_are_not_written_others_are(db_url: str) -> None:
    engine = create_engine(DatabaseSettings(url=db_url))
    try:
        sink = SqlAuditSink(engine, skip=[SecurityEvent.TOKEN_REFRESHED])
        await sink.emit(SecurityEvent.TOKEN_REFRESHED, user_id=1)
        await sink.emit(SecurityEvent.TOKEN_REUSE, user_id=1, outcome="failure")
        async with engine.connect() as conn:
            rows = (await conn.execute(text("SELECT event FROM audit_events"))).all()
        assert [r[0] for r in rows] == ["authn_token_reuse"]
    finally:
        await engine.dispose()
