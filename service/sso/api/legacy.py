"""The seed service's API (`auth.Auth`, `auth.Permissions`), served unchanged.

Its clients send email/password/app_id and get an HS256 token signed with the
app's secret (claims uid, email, exp, app_id). Validation messages are the seed's
own (`email is required`, …); the error table in `sso.api.errors` maps bad
credentials to INVALID_ARGUMENT as the seed did.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import grpc

from sso.api.context import metadata_value
from sso.domain.auth import AuthService
from sso.domain.ports import LegacyTokens
from sso.errors import InvalidArgument, SSOError
from sso_proto.auth import auth_pb2, auth_pb2_grpc

Context = grpc.aio.ServicerContext[Any, Any]


def _require(value: object, message: str, reason: str) -> None:
    if not value:
        raise InvalidArgument(message, reason=reason)


class LegacyAuth(auth_pb2_grpc.AuthServicer):
    def __init__(self, auth: AuthService, tokens: LegacyTokens, ttl: timedelta) -> None:
        self._auth, self._tokens, self._ttl = auth, tokens, ttl

    async def Register(
        self, request: auth_pb2.RegisterRequest, context: Context
    ) -> auth_pb2.RegisterResponse:
        _require(request.email, "email is required", "EMAIL_REQUIRED")
        _require(request.password, "password is required", "PASSWORD_REQUIRED")
        user = await self._auth.register(request.email, request.password)
        return auth_pb2.RegisterResponse(user_id=user.id)

    async def Login(
        self, request: auth_pb2.LoginRequest, context: Context
    ) -> auth_pb2.LoginResponse:
        _require(request.email, "email is required", "EMAIL_REQUIRED")
        _require(request.password, "password is required", "PASSWORD_REQUIRED")
        _require(request.app_id, "app_id is required", "APP_ID_REQUIRED")
        # Per-app rate limit, and the app secret when the client presents one (docs/admin.md).
        secret = metadata_value(context, "x-client-secret") or None
        app = await self._auth.app_for_login(request.app_id, secret)
        user = await self._auth.authenticate(request.email, request.password)
        if self._auth.second_factor is not None:
            # The seed API has no field for a second factor: a TOTP user gets no token here
            # (FAILED_PRECONDITION MFA_REQUIRED, after the password verified; docs/two-factor.md).
            await self._auth.second_factor.refuse_single_factor(user, api="auth.Auth/Login")
        token = self._tokens.issue(
            user_id=user.id,
            email=user.email,
            app_id=app.id,
            secret=app.secret,
            ttl=self._ttl,
            now=self._auth.clock(),
        )
        return auth_pb2.LoginResponse(token=token)

    async def IsAdmin(
        self, request: auth_pb2.IsAdminRequest, context: Context
    ) -> auth_pb2.IsAdminResponse:
        _require(request.user_id, "user_id is required", "USER_ID_REQUIRED")
        return auth_pb2.IsAdminResponse(is_admin=await self._auth.is_admin(request.user_id))

    async def Logout(
        self, request: auth_pb2.LogoutRequest, context: Context
    ) -> auth_pb2.LogoutResponse:
        """Legacy tokens are stateless HS256; Logout reports whether the token is genuine."""
        _require(request.token, "token is required", "TOKEN_REQUIRED")
        claims = self._tokens.peek(request.token)
        app_id = claims.get("app_id")
        if not isinstance(app_id, int) or app_id <= 0:
            return auth_pb2.LogoutResponse(success=False)
        try:
            app = await self._auth.app(app_id)
        except SSOError:
            return auth_pb2.LogoutResponse(success=False)
        # During a secret rotation's overlap, tokens signed with the previous secret count too.
        for secret in app.secrets_at(self._auth.clock()):
            try:
                self._tokens.verify(request.token, secret)
            except SSOError:
                continue
            return auth_pb2.LogoutResponse(success=True)
        return auth_pb2.LogoutResponse(success=False)


class LegacyPermissions(auth_pb2_grpc.PermissionsServicer):
    def __init__(self, auth: AuthService) -> None:
        self._auth = auth

    async def IsAdmin(
        self, request: auth_pb2.IsAdminRequest, context: Context
    ) -> auth_pb2.IsAdminResponse:
        _require(request.user_id, "user_id is required", "USER_ID_REQUIRED")
        return auth_pb2.IsAdminResponse(is_admin=await self._auth.is_admin(request.user_id))
