"""`sso.v1.Account` lifecycle RPCs: email verification, password reset and change,
login history, connected apps, data export.

Why this module exists: the protobuf side of `sso.domain.account` and
`sso.domain.history`. The public RPCs (VerifyEmail, ResendVerification,
RequestPasswordReset, ResetPassword) take a token from a mail or an address;
the rest act on the caller named by `authorization: Bearer …`. The answers of
RequestPasswordReset and ResendVerification are empty messages, whatever
happened behind them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import grpc

from sso.api.context import bearer_token
from sso.domain.account import AccountService
from sso.domain.auth import AccessClaims
from sso.domain.export import UserExport
from sso.domain.history import HistoryService
from sso_proto.sso.v1 import account_pb2

Context = grpc.aio.ServicerContext[Any, Any]


@dataclass(frozen=True)
class Lifecycle:
    """What the lifecycle RPCs need from the composition root."""

    account: AccountService
    history: HistoryService
    exporter: UserExport


class LifecycleRpcs:
    """VerifyEmail … ExportMyData (mixed into `sso.api.account.AccountV1`)."""

    def __init__(self, *, lifecycle: Lifecycle, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._lifecycle = lifecycle

    async def _caller(self, context: Context) -> AccessClaims:
        return await self._lifecycle.account.auth.validate(bearer_token(context))

    async def VerifyEmail(
        self, request: account_pb2.VerifyEmailRequest, context: Context
    ) -> account_pb2.VerifyEmailResponse:
        await self._lifecycle.account.verify_email(request.token)
        return account_pb2.VerifyEmailResponse(verified=True)

    async def ResendVerification(
        self, request: account_pb2.ResendVerificationRequest, context: Context
    ) -> account_pb2.ResendVerificationResponse:
        await self._lifecycle.account.resend_verification(request.email)
        return account_pb2.ResendVerificationResponse()

    async def RequestPasswordReset(
        self, request: account_pb2.RequestPasswordResetRequest, context: Context
    ) -> account_pb2.RequestPasswordResetResponse:
        await self._lifecycle.account.request_password_reset(request.email)
        return account_pb2.RequestPasswordResetResponse()

    async def ResetPassword(
        self, request: account_pb2.ResetPasswordRequest, context: Context
    ) -> account_pb2.ResetPasswordResponse:
        revoked = await self._lifecycle.account.reset_password(request.token, request.new_password)
        return account_pb2.ResetPasswordResponse(success=True, sessions_revoked=revoked)

    async def ChangePassword(
        self, request: account_pb2.ChangePasswordRequest, context: Context
    ) -> account_pb2.ChangePasswordResponse:
        caller = await self._caller(context)
        revoked = await self._lifecycle.account.change_password(
            caller, request.current_password, request.new_password
        )
        return account_pb2.ChangePasswordResponse(sessions_revoked=revoked)

    async def ListLoginHistory(
        self, request: account_pb2.ListLoginHistoryRequest, context: Context
    ) -> account_pb2.ListLoginHistoryResponse:
        caller = await self._caller(context)
        rows, next_token = await self._lifecycle.history.list_history(
            caller, request.page_size, request.page_token
        )
        return account_pb2.ListLoginHistoryResponse(
            entries=[
                account_pb2.LoginHistoryEntry(
                    time=int(r.ts.timestamp()),
                    result=r.result.value,
                    ip=r.ip,
                    user_agent=r.user_agent,
                    device_name=r.device_name,
                    app_id=r.app_id or 0,
                )
                for r in rows
            ],
            next_page_token=next_token,
        )

    async def ListConnectedApps(
        self, request: account_pb2.ListConnectedAppsRequest, context: Context
    ) -> account_pb2.ListConnectedAppsResponse:
        caller = await self._caller(context)
        apps = await self._lifecycle.history.connected_apps(caller)
        return account_pb2.ListConnectedAppsResponse(
            apps=[
                account_pb2.ConnectedApp(
                    app_id=a.app_id,
                    name=a.name,
                    sessions=a.sessions,
                    first_login_at=int(a.first_login_at.timestamp()),
                    last_used_at=int(a.last_used_at.timestamp()),
                )
                for a in apps
            ]
        )

    async def RevokeAppAccess(
        self, request: account_pb2.RevokeAppAccessRequest, context: Context
    ) -> account_pb2.RevokeAppAccessResponse:
        caller = await self._caller(context)
        revoked = await self._lifecycle.history.revoke_app(caller, request.app_id)
        return account_pb2.RevokeAppAccessResponse(sessions_revoked=revoked)

    async def ExportMyData(
        self, request: account_pb2.ExportMyDataRequest, context: Context
    ) -> account_pb2.ExportMyDataResponse:
        caller = await self._caller(context)
        document = await self._lifecycle.history.export(caller, self._lifecycle.exporter)
        return account_pb2.ExportMyDataResponse(json=document)
