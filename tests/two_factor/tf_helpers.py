"""Client-side helpers for the two-factor tests: a user with TOTP on, codes, errors
(`reason_of` and `expect_error` are the API tests' own, from `tests/api/api_helpers.py`)."""

from __future__ import annotations

import base64
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import grpc
from api_helpers import expect_error, reason_of
from sso_harness import Running

from sso.security.totp import hotp
from sso_proto.auth import auth_pb2 as legacy_pb2
from sso_proto.auth import auth_pb2_grpc as legacy_grpc
from sso_proto.sso.v1 import account_pb2, account_pb2_grpc, auth_pb2, auth_pb2_grpc

PASSWORD = "correct horse battery staple"
# Digits `int()` and `str.isdigit()` accept (checklist item 10), spelled as escapes.
ARABIC_DIGITS = "".join(chr(0x0660 + d) for d in range(10))
FULLWIDTH_DIGITS = "".join(chr(0xFF10 + d) for d in range(10))


async def expect(
    call: Any, code: grpc.StatusCode, reason: str | None = None
) -> grpc.aio.AioRpcError:
    """`api_helpers.expect_error`, and the ErrorInfo reason when one is given."""
    error = await expect_error(call, code)
    if reason is not None:
        assert reason_of(error) == reason, (reason_of(error), error.details())
    return error


class FakeClock:
    """The clock the domain already takes (`AuthService.clock`), moved by hand."""

    def __init__(self, start: datetime | None = None) -> None:
        self.now = start or datetime.now(UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, delta: timedelta) -> None:
        self.now += delta


def code_at(secret_b32: str, when: datetime, offset_steps: int = 0) -> str:
    secret = base64.b32decode(secret_b32 + "=" * (-len(secret_b32) % 8))
    return hotp(secret, int(when.timestamp()) // 30 + offset_steps)


@dataclass
class Client:
    running: Running
    email: str
    secret: str = ""
    backup_codes: list[str] = field(default_factory=list)
    access_token: str = ""
    refresh_token: str = ""

    @property
    def auth(self) -> auth_pb2_grpc.AuthStub:
        return auth_pb2_grpc.AuthStub(self.running.channel)

    @property
    def account(self) -> account_pb2_grpc.AccountStub:
        return account_pb2_grpc.AccountStub(self.running.channel)

    @property
    def legacy(self) -> legacy_grpc.AuthStub:
        return legacy_grpc.AuthStub(self.running.channel)

    def bearer(self, token: str | None = None) -> tuple[tuple[str, str], ...]:
        return (("authorization", f"Bearer {token or self.access_token}"),)

    def now(self) -> datetime:
        clock: Any = self.running.container.auth.clock
        return clock()  # type: ignore[no-any-return]

    def code(self, offset_steps: int = 0) -> str:
        return code_at(self.secret, self.now(), offset_steps)

    async def register(self) -> None:
        await self.auth.Register(auth_pb2.RegisterRequest(email=self.email, password=PASSWORD))

    def login_call(self, password: str = PASSWORD) -> Any:
        request = auth_pb2.LoginRequest(
            email=self.email, password=password, app_id=self.running.app.id, device_name="t"
        )
        return self.auth.Login(request)

    async def login(self) -> auth_pb2.LoginResponse:
        response: auth_pb2.LoginResponse = await self.login_call()
        if response.WhichOneof("result") == "tokens":
            self.access_token = response.tokens.access_token
            self.refresh_token = response.tokens.refresh_token
        return response

    async def challenge(self) -> str:
        response = await self.login()
        assert response.WhichOneof("result") == "mfa_required", response
        return response.mfa_required.challenge_id

    def verify_call(self, challenge_id: str, *, totp: str = "", backup: str = "") -> Any:
        if backup:
            request = auth_pb2.VerifyMfaRequest(challenge_id=challenge_id, backup_code=backup)
        else:
            request = auth_pb2.VerifyMfaRequest(challenge_id=challenge_id, totp_code=totp)
        return self.auth.VerifyMfa(request)

    async def begin(self) -> account_pb2.BeginTotpEnrollmentResponse:
        request = account_pb2.BeginTotpEnrollmentRequest(password=PASSWORD)
        response: account_pb2.BeginTotpEnrollmentResponse = await self.account.BeginTotpEnrollment(
            request, metadata=self.bearer()
        )
        self.secret = response.secret
        return response

    async def confirm(self, code: str | None = None) -> account_pb2.ConfirmTotpEnrollmentResponse:
        request = account_pb2.ConfirmTotpEnrollmentRequest(totp_code=code or self.code())
        response: account_pb2.ConfirmTotpEnrollmentResponse = (
            await self.account.ConfirmTotpEnrollment(request, metadata=self.bearer())
        )
        self.backup_codes = list(response.backup_codes)
        return response

    async def enrolled(self) -> Client:
        """Register, log in, enrol and confirm: TOTP on, one session (this client's)."""
        await self.register()
        await self.login()
        await self.begin()
        await self.confirm()
        self.tick()  # the confirming code's step is spent: log-ins use the next one
        return self

    def tick(self, steps: int = 1) -> None:
        clock = self.running.container.auth.clock
        assert isinstance(clock, FakeClock)
        clock.advance(timedelta(seconds=30 * steps))

    async def legacy_login(self, password: str = PASSWORD) -> Any:
        request = legacy_pb2.LoginRequest(
            email=self.email, password=password, app_id=self.running.app.id
        )
        return await self.legacy.Login(request)
