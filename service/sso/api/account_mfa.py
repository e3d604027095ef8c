"""`sso.v1.Account` two-factor RPCs: TOTP enrolment, backup codes, disabling, status.

Why this module exists: the protobuf side of `sso.domain.two_factor`. Every RPC
here acts on the caller's own account, named by the access token in
`authorization: Bearer …`; the rules (re-authentication, single use, caps,
revoking other sessions) live in the domain. `factor_of` turns the
`totp_code`/`backup_code` oneof into a domain `Factor` for these RPCs and for
`sso.v1.Auth/VerifyMfa`.
"""

from __future__ import annotations

from typing import Any

import grpc
from google.protobuf.message import Message

from sso.api.context import bearer_token
from sso.domain.auth import AccessClaims
from sso.domain.two_factor import BACKUP, TOTP, Factor, TwoFactorService
from sso_proto.sso.v1 import account_pb2

Context = grpc.aio.ServicerContext[Any, Any]
_KINDS = {"totp_code": TOTP, "backup_code": BACKUP}


def factor_of(request: Message, oneof: str) -> Factor | None:
    """The set member of `oneof` (`totp_code` or `backup_code`) as a `Factor`; None if unset."""
    field = request.WhichOneof(oneof)
    if field is None:
        return None
    return Factor(_KINDS[field], str(getattr(request, field)))


class TwoFactorRpcs:
    """BeginTotpEnrollment, ConfirmTotpEnrollment, DisableTotp, RegenerateBackupCodes,
    GetTwoFactorStatus (mixed into `sso.api.account.AccountV1`)."""

    def __init__(self, *, two_factor: TwoFactorService, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._two_factor = two_factor

    async def _mfa_caller(self, context: Context) -> AccessClaims:
        return await self._two_factor.auth.validate(bearer_token(context))

    async def BeginTotpEnrollment(
        self, request: account_pb2.BeginTotpEnrollmentRequest, context: Context
    ) -> account_pb2.BeginTotpEnrollmentResponse:
        caller = await self._mfa_caller(context)
        enrollment = await self._two_factor.begin(caller, request.password)
        return account_pb2.BeginTotpEnrollmentResponse(
            secret=enrollment.secret,
            otpauth_uri=enrollment.otpauth_uri,
            qr_png=enrollment.qr_png,
            expires_in=enrollment.expires_in,
        )

    async def ConfirmTotpEnrollment(
        self, request: account_pb2.ConfirmTotpEnrollmentRequest, context: Context
    ) -> account_pb2.ConfirmTotpEnrollmentResponse:
        caller = await self._mfa_caller(context)
        codes, revoked = await self._two_factor.confirm(caller, request.totp_code)
        return account_pb2.ConfirmTotpEnrollmentResponse(
            backup_codes=codes, sessions_revoked=revoked
        )

    async def DisableTotp(
        self, request: account_pb2.DisableTotpRequest, context: Context
    ) -> account_pb2.DisableTotpResponse:
        caller = await self._mfa_caller(context)
        factor = factor_of(request, "second_factor")
        revoked = await self._two_factor.disable(caller, request.password, factor)
        return account_pb2.DisableTotpResponse(disabled=True, sessions_revoked=revoked)

    async def RegenerateBackupCodes(
        self, request: account_pb2.RegenerateBackupCodesRequest, context: Context
    ) -> account_pb2.RegenerateBackupCodesResponse:
        caller = await self._mfa_caller(context)
        factor = factor_of(request, "second_factor")
        codes = await self._two_factor.regenerate(caller, request.password, factor)
        return account_pb2.RegenerateBackupCodesResponse(backup_codes=codes)

    async def GetTwoFactorStatus(
        self, request: account_pb2.GetTwoFactorStatusRequest, context: Context
    ) -> account_pb2.GetTwoFactorStatusResponse:
        caller = await self._mfa_caller(context)
        status = await self._two_factor.status(caller.user_id)
        return account_pb2.GetTwoFactorStatusResponse(
            totp_enabled=status.enabled,
            enabled_at=status.enabled_at,
            backup_codes_remaining=status.backup_codes_remaining,
            enrollment_pending=status.enrollment_pending,
        )
