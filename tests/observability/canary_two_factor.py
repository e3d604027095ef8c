"""The canary's two-factor paths (H1): driven from `test_canary.py`, kept here so the
shared test module only gains a call.

TOTP enrolment, the two-step login and backup codes run on their success, failure
and forced-internal paths. The TOTP secret (base32, lower case and inside its
otpauth:// URI), every backup code (both spellings) and every challenge id join the
secrets searched for; 6-digit codes are not (too short to tell from other numbers
in a log line; the masking rules cover the `totp_code` field by name). Re-authentication
shares the per-email login limit (10 a minute here), so forced faults hit before the
password check where they can.
"""

from __future__ import annotations

import base64
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any

import grpc
import pytest

from sso.security.totp import hotp
from sso_proto.auth import auth_pb2 as legacy_pb2
from sso_proto.auth import auth_pb2_grpc as legacy_grpc
from sso_proto.sso.v1 import account_pb2, account_pb2_grpc, auth_pb2, auth_pb2_grpc

S = grpc.StatusCode
Fault = Callable[..., Callable[..., Awaitable[Any]]]

# sso.v1.Account's two-factor half and sso.v1.Auth/VerifyMfa.
TWO_FACTOR_METHODS = (
    *(
        f"/sso.v1.Account/{name}"
        for name in (
            "BeginTotpEnrollment",
            "ConfirmTotpEnrollment",
            "DisableTotp",
            "RegenerateBackupCodes",
            "GetTwoFactorStatus",
        )
    ),
    "/sso.v1.Auth/VerifyMfa",
)


def _wrong(right: str) -> str:
    return f"{(int(right) + 1) % 1_000_000:06d}"


async def two_factor_paths(p: Any, monkeypatch: pytest.MonkeyPatch, fault: Fault) -> None:
    stub, run = account_pb2_grpc.AccountStub(p.running.channel), p.run
    auth = auth_pb2_grpc.AuthStub(p.running.channel)
    two_factor = p.running.container.bundle.two_factor
    assert two_factor is not None
    repo, users = two_factor.repo, p.running.container.auth.users
    now = [p.running.container.auth.clock()]
    monkeypatch.setattr(p.running.container.auth, "clock", lambda: now[0])

    def code(secret: str) -> str:
        raw = base64.b32decode(secret + "=" * (-len(secret) % 8))
        now[0] += timedelta(seconds=30)  # each code from a step of its own
        return hotp(raw, int(now[0].timestamp()) // 30)

    email = p.email("mfa")
    await auth.Register(auth_pb2.RegisterRequest(email=email, password=p.password))

    def login() -> Any:
        request = auth_pb2.LoginRequest(email=email, password=p.password, app_id=p.running.app.id)
        return auth.Login(request)

    tokens = (await login()).tokens
    p.keep(tokens.access_token, tokens.refresh_token, tokens.session_id)
    bearer = (("authorization", f"Bearer {tokens.access_token}"),)
    garbage = (("authorization", f"Bearer {p.garbage['bearer']}"),)

    m = "/sso.v1.Account/BeginTotpEnrollment"
    begin = account_pb2.BeginTotpEnrollmentRequest(password=p.password)
    bad = account_pb2.BeginTotpEnrollmentRequest(password=p.wrong_password)
    await run(m, "failure", stub.BeginTotpEnrollment(bad, metadata=bearer), S.PERMISSION_DENIED)
    await run(m, "failure", stub.BeginTotpEnrollment(begin, metadata=garbage), S.UNAUTHENTICATED)
    with monkeypatch.context() as patch:
        patch.setattr(users, "get_by_id", fault(p.password, tokens.access_token))
        await run(m, "internal", stub.BeginTotpEnrollment(begin, metadata=bearer), S.INTERNAL)
    enrolment = await run(m, "success", stub.BeginTotpEnrollment(begin, metadata=bearer))
    secret = enrolment.secret
    p.keep(secret, secret.lower(), enrolment.otpauth_uri)

    m = "/sso.v1.Account/ConfirmTotpEnrollment"
    right = code(secret)
    confirm = account_pb2.ConfirmTotpEnrollmentRequest(totp_code=right)
    no = account_pb2.ConfirmTotpEnrollmentRequest(totp_code=_wrong(right))
    await run(m, "failure", stub.ConfirmTotpEnrollment(no, metadata=bearer), S.INVALID_ARGUMENT)
    with monkeypatch.context() as patch:
        patch.setattr(repo, "activate", fault(right))
        await run(m, "internal", stub.ConfirmTotpEnrollment(confirm, metadata=bearer), S.INTERNAL)
    confirmed = await run(m, "success", stub.ConfirmTotpEnrollment(confirm, metadata=bearer))
    codes = list(confirmed.backup_codes)
    p.keep(*codes, *(c.replace("-", "") for c in codes))

    legacy = legacy_pb2.LoginRequest(email=email, password=p.password, app_id=p.running.app.id)
    await run(  # the seed API refuses a TOTP user after the password verified
        "/auth.Auth/Login",
        "failure",
        legacy_grpc.AuthStub(p.running.channel).Login(legacy),
        S.FAILED_PRECONDITION,
    )

    def verify(challenge_id: str, totp: str = "", backup: str = "") -> Any:
        if backup:
            request = auth_pb2.VerifyMfaRequest(challenge_id=challenge_id, backup_code=backup)
        else:
            request = auth_pb2.VerifyMfaRequest(challenge_id=challenge_id, totp_code=totp)
        return auth.VerifyMfa(request)

    m = "/sso.v1.Auth/VerifyMfa"
    challenge = (await login()).mfa_required.challenge_id
    p.keep(challenge)
    right = code(secret)
    await run(m, "failure", verify(challenge, _wrong(right)), S.UNAUTHENTICATED)
    await run(m, "failure", verify(p.garbage["rt"], right), S.UNAUTHENTICATED)
    await run(m, "failure", verify(challenge, backup=p.garbage["sid"]), S.INVALID_ARGUMENT)
    with monkeypatch.context() as patch:
        patch.setattr(repo, "reserve_challenge", fault(challenge, right))
        await run(m, "internal", verify(challenge, right), S.INTERNAL)
    pair = (await run(m, "success", verify(challenge, right))).tokens
    p.keep(pair.access_token, pair.refresh_token, pair.session_id)
    other = (await login()).mfa_required.challenge_id
    p.keep(other)
    pair = (await run(m, "success", verify(other, backup=codes[0]))).tokens
    p.keep(pair.access_token, pair.refresh_token, pair.session_id)

    m = "/sso.v1.Account/GetTwoFactorStatus"
    status = account_pb2.GetTwoFactorStatusRequest()
    await run(m, "success", stub.GetTwoFactorStatus(status, metadata=bearer))
    await run(m, "failure", stub.GetTwoFactorStatus(status, metadata=garbage), S.UNAUTHENTICATED)
    with monkeypatch.context() as patch:
        patch.setattr(repo, "get", fault(tokens.access_token))
        await run(m, "internal", stub.GetTwoFactorStatus(status, metadata=bearer), S.INTERNAL)

    m = "/sso.v1.Account/RegenerateBackupCodes"
    regen = account_pb2.RegenerateBackupCodesRequest
    request = regen(password=p.wrong_password, backup_code=codes[1])
    await run(
        m, "failure", stub.RegenerateBackupCodes(request, metadata=bearer), S.PERMISSION_DENIED
    )
    with monkeypatch.context() as patch:
        patch.setattr(users, "get_by_id", fault(p.password, codes[2]))
        request = regen(password=p.password, backup_code=codes[2])
        await run(m, "internal", stub.RegenerateBackupCodes(request, metadata=bearer), S.INTERNAL)
    request = regen(password=p.password, totp_code=code(secret))
    fresh = list(
        (await run(m, "success", stub.RegenerateBackupCodes(request, metadata=bearer))).backup_codes
    )
    p.keep(*fresh, *(c.replace("-", "") for c in fresh))

    m = "/sso.v1.Account/DisableTotp"
    disable = account_pb2.DisableTotpRequest
    request = disable(password=p.password)
    await run(m, "failure", stub.DisableTotp(request, metadata=bearer), S.PERMISSION_DENIED)
    with monkeypatch.context() as patch:
        patch.setattr(users, "get_by_id", fault(p.password, fresh[0]))
        request = disable(password=p.password, backup_code=fresh[0])
        await run(m, "internal", stub.DisableTotp(request, metadata=bearer), S.INTERNAL)
    request = disable(password=p.password, backup_code=fresh[1])
    await run(m, "success", stub.DisableTotp(request, metadata=bearer))
