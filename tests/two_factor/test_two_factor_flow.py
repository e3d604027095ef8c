"""TOTP enrolment and the two-step login against the real service (SQLite, PostgreSQL, + Redis).

Checklist rows G1-G5, E5, C5 (per challenge) and the seed API's refusal. The
domain's clock (`AuthService.clock`) is a `FakeClock` here, so TOTP steps and
challenge expiry are set by the test, never waited for.
"""

from __future__ import annotations

import asyncio
import secrets
import struct
from typing import Any

import grpc
import pytest
from sso_harness import Running
from tf_helpers import ARABIC_DIGITS, FULLWIDTH_DIGITS, PASSWORD, Client, expect

from sso_proto.sso.v1 import account_pb2, auth_pb2

S = grpc.StatusCode


def new_client(running: Running) -> Client:
    return Client(running, f"tf-{secrets.token_hex(4)}@example.com")


async def amr_of(client: Client, access_token: str) -> list[str]:
    claims = await client.auth.ValidateToken(auth_pb2.ValidateTokenRequest(token=access_token))
    return list(claims.claims.amr)


async def test_enrolment_is_active_only_after_a_valid_code(tf_server: Running) -> None:
    c = new_client(tf_server)
    await c.register()
    await c.login()
    status = await c.account.GetTwoFactorStatus(
        account_pb2.GetTwoFactorStatusRequest(), metadata=c.bearer()
    )
    assert not status.totp_enabled and not status.enrollment_pending

    begun = await c.begin()
    assert len(begun.secret) == 32  # 160 bits in base32, no padding
    assert begun.otpauth_uri.startswith("otpauth://totp/SSO:")
    assert f"secret={begun.secret}" in begun.otpauth_uri
    assert "issuer=SSO" in begun.otpauth_uri and "period=30" in begun.otpauth_uri
    png = begun.qr_png
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and png[12:16] == b"IHDR"
    width, height = struct.unpack(">II", png[16:24])
    assert width == height and width >= 21 * 6  # a square QR code, >= version 1 at 6 px
    assert 200 < len(png) < 20_000

    # Pending: logging in still gives tokens directly.
    assert (await c.login()).WhichOneof("result") == "tokens"
    wrong = f"{(int(c.code()) + 1) % 1_000_000:06d}"
    await expect(c.confirm(wrong), S.INVALID_ARGUMENT, "TOTP_CODE_INVALID")
    assert (await c.login()).WhichOneof("result") == "tokens"
    status = await c.account.GetTwoFactorStatus(
        account_pb2.GetTwoFactorStatusRequest(), metadata=c.bearer()
    )
    assert status.enrollment_pending and not status.totp_enabled

    confirmed = await c.confirm()
    assert len(confirmed.backup_codes) == 10 and len(set(confirmed.backup_codes)) == 10
    assert (await c.login()).WhichOneof("result") == "mfa_required"
    status = await c.account.GetTwoFactorStatus(
        account_pb2.GetTwoFactorStatusRequest(), metadata=c.bearer()
    )
    assert status.totp_enabled and status.backup_codes_remaining == 10
    assert status.enabled_at > 0 and not status.enrollment_pending
    # Enabled: a second BeginTotpEnrollment is refused (disable first).
    await expect(c.begin(), S.FAILED_PRECONDITION, "TOTP_ALREADY_ENABLED")


async def test_confirm_only_activates_the_secret_that_was_verified(tf_server: Running) -> None:
    c = new_client(tf_server)
    await c.register()
    await c.login()
    await c.begin()
    first_code = c.code()
    await c.begin()  # a newer enrolment replaces the first secret
    if first_code != c.code():  # (1 in 10^6 the two secrets share the current code)
        await expect(c.confirm(first_code), S.INVALID_ARGUMENT, "TOTP_CODE_INVALID")
    await c.confirm()
    status = await c.account.GetTwoFactorStatus(
        account_pb2.GetTwoFactorStatusRequest(), metadata=c.bearer()
    )
    assert status.totp_enabled


async def test_begin_needs_the_password_and_a_token(tf_server: Running) -> None:
    c = new_client(tf_server)
    await c.register()
    await c.login()
    bad = account_pb2.BeginTotpEnrollmentRequest(password="wrong horse battery staple")
    await expect(
        c.account.BeginTotpEnrollment(bad, metadata=c.bearer()),
        S.PERMISSION_DENIED,
        "REAUTHENTICATION_FAILED",
    )
    good = account_pb2.BeginTotpEnrollmentRequest(password=PASSWORD)
    await expect(c.account.BeginTotpEnrollment(good), S.UNAUTHENTICATED, "TOKEN_MISSING")


async def test_login_challenge_verify_gives_tokens_with_both_factors(tf_server: Running) -> None:
    c = await new_client(tf_server).enrolled()
    response = await c.login()
    challenge = response.mfa_required
    assert challenge.challenge_id and challenge.expires_in == 300
    assert list(challenge.methods) == ["totp", "backup_code"]

    tokens = (await c.verify_call(challenge.challenge_id, totp=c.code())).tokens
    assert tokens.access_token and tokens.refresh_token and tokens.session_id
    assert await amr_of(c, tokens.access_token) == ["pwd", "otp", "mfa"]

    # Single use: the same challenge with the next valid code is refused.
    c.tick()
    await expect(
        c.verify_call(challenge.challenge_id, totp=c.code()),
        S.UNAUTHENTICATED,
        "MFA_CHALLENGE_INVALID",
    )
    # A backup code works once and says so in amr.
    other = await c.challenge()
    by_backup = (await c.verify_call(other, backup=c.backup_codes[0])).tokens
    assert await amr_of(c, by_backup.access_token) == ["pwd", "mfa", "backup_code"]
    again = await c.challenge()
    await expect(
        c.verify_call(again, backup=c.backup_codes[0]), S.UNAUTHENTICATED, "MFA_CODE_INVALID"
    )
    # The session opened by VerifyMfa refreshes like any other, and its new access
    # tokens still say how the login authenticated (the session stores amr).
    refreshed = await c.auth.Refresh(auth_pb2.RefreshRequest(refresh_token=tokens.refresh_token))
    assert refreshed.tokens.session_id == tokens.session_id
    assert await amr_of(c, refreshed.tokens.access_token) == ["pwd", "otp", "mfa"]
    again_refreshed = await c.auth.Refresh(
        auth_pb2.RefreshRequest(refresh_token=refreshed.tokens.refresh_token)
    )
    assert await amr_of(c, again_refreshed.tokens.access_token) == ["pwd", "otp", "mfa"]
    by_backup_refreshed = await c.auth.Refresh(
        auth_pb2.RefreshRequest(refresh_token=by_backup.refresh_token)
    )
    assert await amr_of(c, by_backup_refreshed.tokens.access_token) == [
        "pwd",
        "mfa",
        "backup_code",
    ]


async def test_wrong_password_never_reaches_the_second_factor(tf_server: Running) -> None:
    c = await new_client(tf_server).enrolled()
    await expect(c.login_call("wrong horse battery staple"), S.UNAUTHENTICATED)


async def test_challenge_expires(tf_server: Running) -> None:
    c = await new_client(tf_server).enrolled()
    challenge_id = await c.challenge()
    c.tick(10)  # 5 minutes: the challenge's whole lifetime
    await expect(
        c.verify_call(challenge_id, totp=c.code()), S.UNAUTHENTICATED, "MFA_CHALLENGE_INVALID"
    )
    fresh = await c.challenge()
    c.tick(9)  # 4.5 minutes: still alive
    await c.verify_call(fresh, totp=c.code())


async def test_code_reused_later_is_rejected(tf_server: Running) -> None:
    c = await new_client(tf_server).enrolled()
    code = c.code()
    await c.verify_call(await c.challenge(), totp=code)
    await expect(
        c.verify_call(await c.challenge(), totp=code), S.UNAUTHENTICATED, "MFA_CODE_INVALID"
    )


async def test_window_is_one_step_either_side(tf_server: Running) -> None:
    """G1 with a fake clock: t-2 and t+2 rejected, t-1 and t+1 accepted; then t (before the
    used t+1) is rejected too (G2: after step t+1 is used, nothing older passes)."""
    c = await new_client(tf_server).enrolled()
    c.tick(10)
    challenge = await c.challenge()
    await expect(c.verify_call(challenge, totp=c.code(-2)), S.UNAUTHENTICATED, "MFA_CODE_INVALID")
    await expect(c.verify_call(challenge, totp=c.code(+2)), S.UNAUTHENTICATED, "MFA_CODE_INVALID")
    await c.verify_call(challenge, totp=c.code(-1))
    await c.verify_call(await c.challenge(), totp=c.code(+1))
    await expect(
        c.verify_call(await c.challenge(), totp=c.code()), S.UNAUTHENTICATED, "MFA_CODE_INVALID"
    )


async def test_codes_must_be_six_ascii_digits(tf_server_db: Running) -> None:
    """Checklist item 10: every shape `int()` or `isdigit()` would let through is refused
    before any attempt is counted; the real code still works on the same challenge."""
    c = await new_client(tf_server_db).enrolled()
    code = c.code()
    arabic = code.translate(str.maketrans("0123456789", ARABIC_DIGITS))
    fullwidth = code.translate(str.maketrans("0123456789", FULLWIDTH_DIGITS))
    assert int(arabic) == int(code) == int(fullwidth)  # what `int()` would have accepted
    shapes = [
        arabic,
        fullwidth,
        f"{code[:2]}_{code[2:]}",
        f" {code}",
        f"{code} ",
        f"{code}\n",
        f"+{code[1:]}",
        code[:5],
        code + "0",
        "0x1E240",
    ]
    challenge = await c.challenge()
    for bad in shapes:
        await expect(c.verify_call(challenge, totp=bad), S.INVALID_ARGUMENT, "CODE_MALFORMED")
    await expect(c.verify_call(challenge, totp=""), S.INVALID_ARGUMENT, "CODE_REQUIRED")
    # Malformed input cost no attempt and spent nothing: the real code still works.
    await c.verify_call(challenge, totp=code)


async def test_sixth_attempt_on_a_challenge_is_refused_even_with_the_right_code(
    tf_server: Running,
) -> None:
    c = await new_client(tf_server).enrolled()
    challenge = await c.challenge()
    right = c.code()
    wrong = [f"{(int(right) + i) % 1_000_000:06d}" for i in range(1, 6)]
    for n, code in enumerate(wrong, 1):
        error = await expect(
            c.verify_call(challenge, totp=code), S.UNAUTHENTICATED, "MFA_CODE_INVALID"
        )
        assert dict(error.trailing_metadata())["attempts-left"] == str(5 - n)
    await expect(c.verify_call(challenge, totp=right), S.UNAUTHENTICATED, "MFA_CHALLENGE_INVALID")
    # The code itself was not spent: a fresh challenge takes it.
    await c.verify_call(await c.challenge(), totp=right)


async def test_legacy_login_refuses_a_totp_user(tf_server: Running) -> None:
    c = new_client(tf_server)
    await c.register()
    assert (await c.legacy_login()).token  # before TOTP: the seed API works as ever
    await c.login()
    await c.begin()
    await c.confirm()
    error = await expect(c.legacy_login(), S.FAILED_PRECONDITION, "MFA_REQUIRED")
    assert "sso.v1.Auth/Login" in (error.details() or "")
    # The seed's contract for everything else is unchanged.
    error = await expect(c.legacy_login("wrong horse battery staple"), S.INVALID_ARGUMENT)
    assert error.details() == "invalid email or password"


async def test_enabling_and_disabling_totp_end_the_other_sessions(tf_server: Running) -> None:
    c = new_client(tf_server)
    await c.register()
    other = (await c.login()).tokens
    await c.login()  # the session that enrols
    mine = c.access_token
    await c.begin()
    confirmed = await c.confirm()
    assert confirmed.sessions_revoked == 1
    await expect(
        c.auth.Refresh(auth_pb2.RefreshRequest(refresh_token=other.refresh_token)),
        S.UNAUTHENTICATED,
    )
    await expect(
        c.auth.ValidateToken(auth_pb2.ValidateTokenRequest(token=other.access_token)),
        S.UNAUTHENTICATED,
    )
    await c.auth.ValidateToken(auth_pb2.ValidateTokenRequest(token=mine))  # still fine

    c.tick()
    second = (await c.verify_call(await c.challenge(), totp=c.code())).tokens
    c.tick()
    disable = account_pb2.DisableTotpRequest(password=PASSWORD, totp_code=c.code())
    done = await c.account.DisableTotp(disable, metadata=c.bearer(mine))
    assert done.disabled and done.sessions_revoked == 1
    await expect(
        c.auth.Refresh(auth_pb2.RefreshRequest(refresh_token=second.refresh_token)),
        S.UNAUTHENTICATED,
    )
    assert (await c.login()).WhichOneof("result") == "tokens"


async def test_disable_needs_the_password_and_a_current_code(tf_server: Running) -> None:
    c = await new_client(tf_server).enrolled()
    await c.verify_call(await c.challenge(), totp=c.code())
    c.tick()
    a = c.account
    cases = [
        (account_pb2.DisableTotpRequest(), "REAUTHENTICATION_REQUIRED"),
        (account_pb2.DisableTotpRequest(password=PASSWORD), "REAUTHENTICATION_REQUIRED"),
        (account_pb2.DisableTotpRequest(totp_code=c.code()), "REAUTHENTICATION_REQUIRED"),
        (
            account_pb2.DisableTotpRequest(password="wrong horse battery", totp_code=c.code()),
            "REAUTHENTICATION_FAILED",
        ),
        (
            account_pb2.DisableTotpRequest(
                password=PASSWORD, totp_code=f"{(int(c.code()) + 7) % 1_000_000:06d}"
            ),
            "REAUTHENTICATION_FAILED",
        ),
        (
            account_pb2.DisableTotpRequest(
                password=PASSWORD, backup_code="aaaa-bbbb-cccc-dddd-eeee-ffff"
            ),
            "REAUTHENTICATION_FAILED",
        ),
    ]
    for request, reason in cases:
        await expect(a.DisableTotp(request, metadata=c.bearer()), S.PERMISSION_DENIED, reason)
    assert (await c.login()).WhichOneof("result") == "mfa_required"
    # A backup code is a current second factor too.
    request = account_pb2.DisableTotpRequest(password=PASSWORD, backup_code=c.backup_codes[3])
    assert (await a.DisableTotp(request, metadata=c.bearer())).disabled
    assert (await c.login()).WhichOneof("result") == "tokens"


async def test_password_reset_does_not_bypass_totp(
    tf_server_db: Running, monkeypatch: pytest.MonkeyPatch
) -> None:
    """D5: after a reset by mailed link, the account still needs its second factor."""
    c = await new_client(tf_server_db).enrolled()
    lifecycle = tf_server_db.container.bundle.lifecycle  # type: ignore[attr-defined]
    service = lifecycle.account
    mailed: list[Any] = []
    submit = service.mailer.submit

    def recording(mail: Any) -> bool:  # watches what is mailed, then sends it as usual
        mailed.append(mail)
        return bool(submit(mail))

    monkeypatch.setattr(service.mailer, "submit", recording)
    await c.account.RequestPasswordReset(account_pb2.RequestPasswordResetRequest(email=c.email))
    await service.background.drain()
    token = [m for m in mailed if m.kind.value == "password_reset"][-1].values["token"]
    new_password = "another correct horse battery"
    await c.account.ResetPassword(
        account_pb2.ResetPasswordRequest(token=token, new_password=new_password)
    )
    response = await c.login_call(new_password)
    assert response.WhichOneof("result") == "mfa_required"
    await expect(c.legacy_login(new_password), S.FAILED_PRECONDITION, "MFA_REQUIRED")
    tokens = (await c.verify_call(response.mfa_required.challenge_id, totp=c.code())).tokens
    assert await amr_of(c, tokens.access_token) == ["pwd", "otp", "mfa"]


async def test_concurrent_begins_leave_one_pending_secret(tf_server_db: Running) -> None:
    """4 simultaneous BeginTotpEnrollment calls of a new user (4: under the lockout's
    concurrent-check threshold of 5) all succeed; exactly one of the secrets confirms."""
    c = new_client(tf_server_db)
    await c.register()
    await c.login()
    request = account_pb2.BeginTotpEnrollmentRequest(password=PASSWORD)
    begun = await asyncio.gather(
        *(c.account.BeginTotpEnrollment(request, metadata=c.bearer()) for _ in range(4))
    )
    confirmed = 0
    for secret in {b.secret for b in begun}:
        c.secret = secret
        try:
            await c.confirm()
            confirmed += 1
        except grpc.aio.AioRpcError as error:
            assert error.code() in (S.INVALID_ARGUMENT, S.FAILED_PRECONDITION), error
    assert confirmed == 1


async def test_a_user_locked_after_the_password_step_cannot_finish_the_login(
    tf_server: Running,
) -> None:
    """LockUser between Login and VerifyMfa: the pending challenge no longer opens a
    session (the lock is checked in the statement that spends the challenge)."""
    c = await new_client(tf_server).enrolled()
    challenge_id = await c.challenge()
    user_id = int(
        (
            await c.auth.ValidateToken(auth_pb2.ValidateTokenRequest(token=c.access_token))
        ).claims.user_id
    )
    store: Any = tf_server.container.bundle.admin.store
    assert await store.set_admin_lock(user_id, True)
    await expect(
        c.verify_call(challenge_id, totp=c.code()), S.UNAUTHENTICATED, "MFA_CHALLENGE_INVALID"
    )
    assert await store.set_admin_lock(user_id, False)
    c.tick()  # the refused attempt spent its step's code
    await c.verify_call(await c.challenge(), totp=c.code())
