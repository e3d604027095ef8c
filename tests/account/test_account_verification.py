"""Email verification: the link mailed at registration, VerifyEmail, ResendVerification (B4),
and the setting that refuses unverified logins (after the password, never before)."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import grpc
import pytest
from account_helpers import (
    STRONG,
    SmtpSink,
    account,
    auth,
    expect_error,
    login,
    reason_of,
    register,
    settle,
    start_account_server,
    unique,
)
from sso_harness import Running, stop

from sso_proto.sso.v1 import account_pb2, auth_pb2

S = grpc.StatusCode


async def test_registration_mails_a_link_that_verifies_once(
    account_server: Running, smtp_sink: SmtpSink
) -> None:
    email = unique("verify")
    await register(account_server, email)
    await settle(account_server)
    mails = smtp_sink.to(email, "verify_email")
    assert len(mails) == 1 and mails[0].rcpt == [email]
    mail = mails[0]
    assert mail.message["From"] == "SSO test <no-reply@sso.test>"
    assert "https://sso.test/account/verify-email?token=" in mail.text
    assert f'href="https://sso.test/account/verify-email?token={mail.token}"' in mail.html
    assert len(mail.token) >= 22  # D1: >= 128 bits as base64url

    # Before: the access token says unverified (the default policy lets them in).
    before = await login(account_server, email)
    claims = await auth(account_server).ValidateToken(
        auth_pb2.ValidateTokenRequest(token=before.access_token)
    )
    assert claims.claims.email_verified is False

    stub = account(account_server)
    done = await stub.VerifyEmail(account_pb2.VerifyEmailRequest(token=mail.token))
    assert done.verified
    after = await login(account_server, email)
    claims = await auth(account_server).ValidateToken(
        auth_pb2.ValidateTokenRequest(token=after.access_token)
    )
    assert claims.claims.email_verified is True

    # Single use; garbage and empty tokens are rejected with the same reason.
    for token in (mail.token, "x" * 43):
        error = await expect_error(
            stub.VerifyEmail(account_pb2.VerifyEmailRequest(token=token)), S.UNAUTHENTICATED
        )
        assert reason_of(error) == "LINK_INVALID"
    await expect_error(stub.VerifyEmail(account_pb2.VerifyEmailRequest()), S.INVALID_ARGUMENT)


async def test_resend_answers_the_same_for_every_address(
    account_server: Running, smtp_sink: SmtpSink
) -> None:
    """B4 as a regression table: unverified, verified, unknown and look-alike addresses get
    the same code and the same bytes; only the unverified account receives a mail."""
    stub = account(account_server)
    unverified, verified = unique("unverified"), unique("verified")
    await register(account_server, unverified)
    await register(account_server, verified)
    await settle(account_server)
    token = smtp_sink.to(verified, "verify_email")[0].token
    await stub.VerifyEmail(account_pb2.VerifyEmailRequest(token=token))
    before = len(smtp_sink.all())

    answers = []
    for address in (unverified, verified, unique("nobody"), unverified.upper()):
        call = stub.ResendVerification(account_pb2.ResendVerificationRequest(email=address))
        response = await call
        answers.append((await call.code(), response.SerializeToString()))
    assert len(set(answers)) == 1 and answers[0] == (S.OK, b"")
    await settle(account_server)
    new = smtp_sink.all()[before:]
    # The unverified account got the resend and the upper-cased request (same account);
    # the per-account limit (3 an hour, registration included) stops the third.
    assert {tuple(m.rcpt) for m in new} == {(unverified,)}
    assert len(new) == 2
    # The newest link supersedes the older ones (D4).
    links = [m.token for m in smtp_sink.to(unverified, "verify_email")]
    for old in links[:-1]:
        await expect_error(
            stub.VerifyEmail(account_pb2.VerifyEmailRequest(token=old)), S.UNAUTHENTICATED
        )
    await stub.VerifyEmail(account_pb2.VerifyEmailRequest(token=links[-1]))

    # Malformed addresses are refused the same way whether or not they could exist.
    for address in ("not-an-address", ""):
        await expect_error(
            stub.ResendVerification(account_pb2.ResendVerificationRequest(email=address)),
            S.INVALID_ARGUMENT,
        )


async def test_verification_link_expires_after_its_ttl(
    account_server: Running, smtp_sink: SmtpSink
) -> None:
    """D3 with the service's clock: TTL - 1 s verifies, TTL + 1 s does not."""
    auth_service = account_server.container.auth
    real_clock = auth_service.clock
    ttl = timedelta(hours=24)
    stub = account(account_server)
    tokens = []
    for tag in ("early", "late"):
        email = unique(tag)
        await register(account_server, email)
        await settle(account_server)
        tokens.append(smtp_sink.to(email, "verify_email")[0].token)
    issued = real_clock()
    try:
        auth_service.clock = lambda: issued + ttl - timedelta(seconds=1)
        await stub.VerifyEmail(account_pb2.VerifyEmailRequest(token=tokens[0]))
        auth_service.clock = lambda: issued + ttl + timedelta(seconds=1)
        await expect_error(
            stub.VerifyEmail(account_pb2.VerifyEmailRequest(token=tokens[1])), S.UNAUTHENTICATED
        )
    finally:
        auth_service.clock = real_clock


@pytest.mark.parametrize("backend", ["sqlite"])
async def test_refuse_policy_only_after_the_password(
    tmp_path: Path, sqlite_url: str, smtp_sink: SmtpSink, backend: str
) -> None:
    running = await start_account_server(tmp_path, sqlite_url, smtp_sink, unverified_login="refuse")
    try:
        email = unique("refused")
        await register(running, email)
        await settle(running)
        stub = auth(running)

        def attempt(who: str, password: str) -> grpc.aio.UnaryUnaryCall[object, object]:
            request = auth_pb2.LoginRequest(email=who, password=password, app_id=running.app.id)
            return stub.Login(request)

        # A wrong password and an unknown address: the usual answer, nothing about verification.
        wrong = await expect_error(attempt(email, "Wrong horse battery staple"), S.UNAUTHENTICATED)
        ghost = await expect_error(attempt(unique("ghost"), STRONG), S.UNAUTHENTICATED)
        assert (wrong.details(), reason_of(wrong)) == (ghost.details(), reason_of(ghost))
        # The right password: refused, with a reason the client can act on.
        refused = await expect_error(attempt(email, STRONG), S.FAILED_PRECONDITION)
        assert reason_of(refused) == "EMAIL_NOT_VERIFIED"
        token = smtp_sink.to(email, "verify_email")[0].token
        await account(running).VerifyEmail(account_pb2.VerifyEmailRequest(token=token))
        tokens = (await attempt(email, STRONG)).tokens
        assert tokens.access_token
    finally:
        await stop(running)
