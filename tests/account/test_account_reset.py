"""Password reset against the real service and a real SMTP server (SECURITY_CHECKLIST B2,
C4, C6, D1-D6): uniform answers, stored-address-only mail, the hourly cap, single use under
concurrency, expiry, purpose binding, superseding, session revocation, no tokens back."""

from __future__ import annotations

import asyncio
import hashlib
import statistics
import time
from datetime import timedelta
from pathlib import Path

import grpc
from account_helpers import (
    STRONG,
    SmtpSink,
    account,
    auth,
    bearer,
    expect_error,
    login,
    reason_of,
    register,
    settle,
    start_account_server,
    unique,
)
from sqlalchemy import select
from sso_harness import Running, stop

from sso.storage.db import create_engine
from sso.storage.tables import account_tokens
from sso_proto.sso.v1 import account_pb2, auth_pb2, sessions_pb2, sessions_pb2_grpc

S = grpc.StatusCode
NEW = "a brand new correct horse"


async def request_reset(running: Running, email: str) -> tuple[grpc.StatusCode, bytes]:
    call = account(running).RequestPasswordReset(
        account_pb2.RequestPasswordResetRequest(email=email)
    )
    response = await call
    return await call.code(), response.SerializeToString()


async def reset(
    running: Running, token: str, password: str = NEW
) -> account_pb2.ResetPasswordResponse:
    request = account_pb2.ResetPasswordRequest(token=token, new_password=password)
    return await account(running).ResetPassword(request)


async def reset_link(running: Running, sink: SmtpSink, email: str) -> str:
    before = len(sink.to(email, "password_reset"))
    await request_reset(running, email)
    await settle(running)
    mails = sink.to(email, "password_reset")
    assert len(mails) == before + 1
    return mails[-1].token


async def test_look_alike_addresses_mail_only_the_stored_address(
    account_server: Running, smtp_sink: SmtpSink
) -> None:
    """B2 (Django CVE-2019-19844, GitHub's dotless i): the mail goes to the address we
    stored, never to the one typed, or nowhere."""
    stored = "mike@x.org"
    await register(account_server, stored)
    await settle(account_server)
    smtp_sink.messages.clear()
    typed = ["m\u0131ke@x.org", "MIKE@X.ORG", "mi\u212ae@x.org", "Mike@X.org"]
    answers = {await request_reset(account_server, address) for address in typed}
    assert answers == {(S.OK, b"")}
    await settle(account_server)
    mails = smtp_sink.all("password_reset")
    assert mails, "the case variants name the stored account"
    for mail in mails:
        assert mail.rcpt == [stored]
        assert mail.message["To"] == stored
    assert not any(
        address in mail.rcpt for mail in smtp_sink.all() for address in typed if address != stored
    )
    # The dotless-i address is another address: no account, no mail for it anywhere.
    assert len(mails) == 3  # MIKE@, Kelvin-sign K (NFC → K), Mike@; capped at 3 an hour


async def test_same_bytes_for_known_and_unknown_and_three_mails_an_hour(
    account_server: Running, smtp_sink: SmtpSink
) -> None:
    """B2/C6: seven requests for a known and an unknown address: identical answers; the
    known account gets 3 mails, the unknown address none."""
    known, unknown = unique("known"), unique("unknown")
    await register(account_server, known)
    await settle(account_server)
    answers = set()
    for _ in range(7):
        answers.add(await request_reset(account_server, known))
        answers.add(await request_reset(account_server, unknown))
    assert answers == {(S.OK, b"")}
    await settle(account_server)
    assert len(smtp_sink.to(known, "password_reset")) == 3
    assert smtp_sink.to(unknown) == []


async def test_timing_is_the_same_and_mail_is_off_the_response_path(
    account_server: Running, smtp_sink: SmtpSink
) -> None:
    """B2: medians over 200 calls each differ by < 5 ms; with an SMTP server that takes a
    second per mail, the answer still comes back at once and the mail after it."""
    known, unknown = unique("timed"), unique("nobody")
    await register(account_server, known)
    await settle(account_server)
    stub = account(account_server)
    for address in (known, unknown) * 10:  # warm-up (channel, caches, statements)
        await stub.RequestPasswordReset(account_pb2.RequestPasswordResetRequest(email=address))
    await settle(account_server)
    durations: dict[str, list[float]] = {known: [], unknown: []}
    for _ in range(200):
        for address in (known, unknown):
            started = time.perf_counter()
            await stub.RequestPasswordReset(account_pb2.RequestPasswordResetRequest(email=address))
            durations[address].append(time.perf_counter() - started)
    await settle(account_server)
    medians = {a: statistics.median(d) * 1000 for a, d in durations.items()}
    delta = abs(medians[known] - medians[unknown])
    print(
        f"\nRequestPasswordReset median ms: known {medians[known]:.2f} "
        f"unknown {medians[unknown]:.2f} delta {delta:.2f}"
    )
    assert delta < 5.0

    fresh = unique("slowmail")
    await register(account_server, fresh)
    await settle(account_server)
    smtp_sink.delay = 1.0
    before = len(smtp_sink.to(fresh, "password_reset"))
    started = time.perf_counter()
    await stub.RequestPasswordReset(account_pb2.RequestPasswordResetRequest(email=fresh))
    answered = time.perf_counter() - started
    assert answered < 0.5, answered  # the 1 s SMTP exchange is not in the answer
    assert len(smtp_sink.to(fresh, "password_reset")) == before
    await smtp_sink.wait_for(1, kind="password_reset", timeout=15)
    await settle(account_server)
    assert len(smtp_sink.to(fresh, "password_reset")) == before + 1


async def test_per_ip_limit_answers_the_same_for_every_address(
    tmp_path: Path, sqlite_url: str, smtp_sink: SmtpSink
) -> None:
    running = await start_account_server(tmp_path, sqlite_url, smtp_sink, mail_requests_per_ip=4)
    try:
        known = unique("iplimit")
        await register(running, known)
        for address in (known, unique("a"), known, unique("b")):
            assert await request_reset(running, address) == (S.OK, b"")
        for address in (known, unique("c")):
            error = await expect_error(
                account(running).RequestPasswordReset(
                    account_pb2.RequestPasswordResetRequest(email=address)
                ),
                S.RESOURCE_EXHAUSTED,
            )
            assert reason_of(error) == "RATE_LIMITED"
        await settle(running)
    finally:
        await stop(running)


async def test_fifty_concurrent_resets_with_one_token_one_wins(
    account_server: Running, smtp_sink: SmtpSink
) -> None:
    """D2: a compare-and-swap spends the token: exactly one of 50 calls succeeds."""
    email = unique("race")
    await register(account_server, email)
    token = await reset_link(account_server, smtp_sink, email)
    stub = account(account_server)

    async def one(i: int) -> grpc.StatusCode:
        request = account_pb2.ResetPasswordRequest(token=token, new_password=f"{NEW} {i:02d}")
        try:
            await stub.ResetPassword(request)
        except grpc.aio.AioRpcError as error:
            assert reason_of(error) == "LINK_INVALID"
            return error.code()
        return S.OK

    codes = await asyncio.gather(*(one(i) for i in range(50)))
    assert codes.count(S.OK) == 1
    assert codes.count(S.UNAUTHENTICATED) == 49
    await expect_error(reset(account_server, token), S.UNAUTHENTICATED)  # reuse afterwards
    winner = codes.index(S.OK)
    assert (await login(account_server, email, f"{NEW} {winner:02d}")).access_token


async def test_reset_link_expires_after_thirty_minutes(
    account_server: Running, smtp_sink: SmtpSink
) -> None:
    """D3 with the service's clock frozen: TTL - 1 s works, TTL + 1 s does not."""
    service = account_server.container.auth
    real_clock = service.clock
    t0 = real_clock()
    ttl = timedelta(minutes=30)
    service.clock = lambda: t0
    try:
        early, late = unique("early"), unique("late")
        for email in (early, late):
            await register(account_server, email)
        links = [await reset_link(account_server, smtp_sink, e) for e in (early, late)]
        service.clock = lambda: t0 + ttl - timedelta(seconds=1)
        assert (await reset(account_server, links[0])).success
        service.clock = lambda: t0 + ttl + timedelta(seconds=1)
        error = await expect_error(reset(account_server, links[1]), S.UNAUTHENTICATED)
        assert reason_of(error) == "LINK_INVALID"
    finally:
        service.clock = real_clock


async def test_tokens_hashed_bound_to_purpose_and_superseded(
    account_server: Running, smtp_sink: SmtpSink
) -> None:
    """D4: only SHA-256(token) in the database; a verification token does not reset a
    password (nor the reverse); a newer reset request voids the older link."""
    email = unique("bound")
    await register(account_server, email)
    await settle(account_server)
    verification = smtp_sink.to(email, "verify_email")[0].token
    first = await reset_link(account_server, smtp_sink, email)
    second = await reset_link(account_server, smtp_sink, email)

    engine = create_engine(account_server.settings.database)
    try:
        async with engine.connect() as conn:
            rows = (await conn.execute(select(account_tokens))).all()
    finally:
        await engine.dispose()
    stored = {bytes(r.token_hash) for r in rows}
    for token in (verification, first, second):
        assert hashlib.sha256(token.encode()).digest() in stored
        assert not any(token in repr(tuple(r)) for r in rows)
    assert {r.purpose for r in rows} == {"verify_email", "reset_password"}

    await expect_error(reset(account_server, verification), S.UNAUTHENTICATED)
    await expect_error(
        account(account_server).VerifyEmail(account_pb2.VerifyEmailRequest(token=second)),
        S.UNAUTHENTICATED,
    )
    await expect_error(reset(account_server, first), S.UNAUTHENTICATED)  # superseded
    assert (await reset(account_server, second)).success
    # A weak password was not the reason: the policy is applied before the token is spent.
    third = await reset_link(account_server, smtp_sink, email)
    weak = await expect_error(reset(account_server, third, "short"), S.INVALID_ARGUMENT)
    assert reason_of(weak) in {"WEAK_PASSWORD", "PASSWORD_TOO_SHORT", "INVALID_ARGUMENT"}
    assert (await reset(account_server, third, NEW + " again")).success


async def test_reset_ends_every_session_notifies_and_returns_no_tokens(
    account_server: Running, smtp_sink: SmtpSink
) -> None:
    """D5 (sessions and notice; TOTP is tests/two_factor's), D6, E5."""
    email = unique("sessions")
    await register(account_server, email)
    pairs = [await login(account_server, email, device=f"device-{i}") for i in range(3)]
    token = await reset_link(account_server, smtp_sink, email)

    response = await reset(account_server, token)
    assert response.success and response.sessions_revoked == 3
    # D6: the answer has no field that could carry a token, and carries none.
    fields = {f.name for f in account_pb2.ResetPasswordResponse.DESCRIPTOR.fields}
    assert fields == {"success", "sessions_revoked"}
    body = response.SerializeToString()
    assert all(p.access_token.encode() not in body for p in pairs)

    stub = auth(account_server)
    for pair in pairs:
        error = await expect_error(
            stub.Refresh(auth_pb2.RefreshRequest(refresh_token=pair.refresh_token)),
            S.UNAUTHENTICATED,
        )
        assert reason_of(error) == "TOKEN_REVOKED"
        await expect_error(
            stub.ValidateToken(auth_pb2.ValidateTokenRequest(token=pair.access_token)),
            S.UNAUTHENTICATED,
        )
    await settle(account_server)
    notices = smtp_sink.to(email, "password_changed")
    assert len(notices) == 1 and notices[0].rcpt == [email]
    assert "3 other session(s) were signed out" in notices[0].text
    # The old password is gone; the new one logs in (a fresh session: nothing was reused).
    await expect_error(
        stub.Login(
            auth_pb2.LoginRequest(email=email, password=STRONG, app_id=account_server.app.id)
        ),
        S.UNAUTHENTICATED,
    )
    fresh = await login(account_server, email, NEW)
    listed = await sessions_pb2_grpc.SessionsStub(account_server.channel).ListSessions(
        sessions_pb2.ListSessionsRequest(), metadata=bearer(fresh.access_token)
    )
    assert [s.session_id for s in listed.sessions] == [fresh.session_id]


async def test_a_locked_out_user_can_still_reset_and_log_in(
    account_server: Running, smtp_sink: SmtpSink
) -> None:
    """C4: an attacker locks the account with wrong passwords; the reset still works and
    lifts the lock, so the owner logs in at once."""
    email = unique("locked")
    await register(account_server, email)
    stub = auth(account_server)
    wrong = auth_pb2.LoginRequest(
        email=email, password="not the password at all", app_id=account_server.app.id
    )
    for _ in range(6):
        await expect_error(stub.Login(wrong), S.UNAUTHENTICATED)
    locked = auth_pb2.LoginRequest(email=email, password=STRONG, app_id=account_server.app.id)
    await expect_error(stub.Login(locked), S.UNAUTHENTICATED)  # locked: the right one fails too
    token = await reset_link(account_server, smtp_sink, email)
    assert (await reset(account_server, token)).success
    assert (await login(account_server, email, NEW)).access_token
