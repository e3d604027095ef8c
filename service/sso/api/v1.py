"""`sso.v1.Auth` and `sso.v1.Sessions`: thin translation between protobuf and the domain."""

from __future__ import annotations

import json
from typing import Any

import grpc

from sso.api.account_mfa import factor_of
from sso.api.context import bearer_token, client_info, metadata_value
from sso.domain.auth import AccessClaims, AuthService, IssuedTokens
from sso.domain.models import Session
from sso.domain.ports import AccessTokenIssuer, MfaChallengeIssued
from sso.domain.sessions import SessionService
from sso.domain.two_factor import TwoFactorService
from sso.errors import Unauthenticated
from sso_proto.sso.v1 import auth_pb2, auth_pb2_grpc, sessions_pb2, sessions_pb2_grpc

Context = grpc.aio.ServicerContext[Any, Any]
JWK_FIELDS = ("kty", "kid", "use", "alg", "n", "e", "crv", "x", "y")


def _pair(tokens: IssuedTokens) -> auth_pb2.TokenPair:
    return auth_pb2.TokenPair(
        access_token=tokens.access_token,
        refresh_token=tokens.refresh_token,
        expires_in=tokens.expires_in,
        session_id=tokens.session_id,
        token_type="Bearer",  # noqa: S106 (the OAuth token type, not a secret)
        refresh_expires_in=tokens.refresh_expires_in,
    )


def _claims(claims: AccessClaims) -> auth_pb2.Claims:
    raw = claims.raw
    aud = raw.get("aud", [])
    amr = raw.get("amr", [])
    return auth_pb2.Claims(
        iss=str(raw.get("iss", "")),
        sub=str(raw.get("sub", "")),
        aud=[aud] if isinstance(aud, str) else [str(a) for a in aud],
        exp=int(raw.get("exp", 0)),
        iat=int(raw.get("iat", 0)),
        nbf=int(raw.get("nbf", 0)),
        jti=str(raw.get("jti", "")),
        sid=claims.session_id,
        email=str(raw.get("email", "")),
        email_verified=bool(raw.get("email_verified", False)),
        amr=[str(a) for a in amr] if isinstance(amr, list) else [],
        user_id=claims.user_id,
        app_id=claims.app_id,
    )


class AuthV1(auth_pb2_grpc.AuthServicer):
    def __init__(
        self,
        auth: AuthService,
        keys: AccessTokenIssuer,
        two_factor: TwoFactorService | None = None,
    ) -> None:
        self._auth, self._keys, self._two_factor = auth, keys, two_factor

    async def Register(
        self, request: auth_pb2.RegisterRequest, context: Context
    ) -> auth_pb2.RegisterResponse:
        user = await self._auth.register(request.email, request.password)
        return auth_pb2.RegisterResponse(user_id=user.id)

    async def Login(
        self, request: auth_pb2.LoginRequest, context: Context
    ) -> auth_pb2.LoginResponse:
        result = await self._auth.login(
            request.email,
            request.password,
            request.app_id,
            client_info(context, request.device_name),
            # A confidential client proves itself with its app secret (docs/admin.md).
            client_secret=metadata_value(context, "x-client-secret") or None,
        )
        if isinstance(result, MfaChallengeIssued):
            challenge = auth_pb2.MfaChallenge(
                challenge_id=result.challenge_id,
                methods=list(result.methods),
                expires_in=result.expires_in,
            )
            return auth_pb2.LoginResponse(mfa_required=challenge)
        return auth_pb2.LoginResponse(tokens=_pair(result))

    async def VerifyMfa(
        self, request: auth_pb2.VerifyMfaRequest, context: Context
    ) -> auth_pb2.VerifyMfaResponse:
        if self._two_factor is None:
            raise Unauthenticated("no second factor is configured", reason="MFA_CHALLENGE_INVALID")
        tokens = await self._two_factor.verify(request.challenge_id, factor_of(request, "factor"))
        return auth_pb2.VerifyMfaResponse(tokens=_pair(tokens))

    async def Refresh(
        self, request: auth_pb2.RefreshRequest, context: Context
    ) -> auth_pb2.RefreshResponse:
        return auth_pb2.RefreshResponse(
            tokens=_pair(await self._auth.refresh(request.refresh_token))
        )

    async def Logout(
        self, request: auth_pb2.LogoutRequest, context: Context
    ) -> auth_pb2.LogoutResponse:
        ok = await self._auth.logout(
            refresh_token=request.refresh_token, access_token=request.access_token
        )
        return auth_pb2.LogoutResponse(success=ok)

    async def ValidateToken(
        self, request: auth_pb2.ValidateTokenRequest, context: Context
    ) -> auth_pb2.ValidateTokenResponse:
        claims = await self._auth.validate(request.token, request.audience or None)
        return auth_pb2.ValidateTokenResponse(valid=True, claims=_claims(claims))

    async def GetJwks(
        self, request: auth_pb2.GetJwksRequest, context: Context
    ) -> auth_pb2.GetJwksResponse:
        jwks = self._keys.jwks()
        keys = [
            auth_pb2.Jwk(**{f: str(k[f]) for f in JWK_FIELDS if f in k})
            for k in jwks.get("keys", [])
        ]
        return auth_pb2.GetJwksResponse(jwks_json=json.dumps(jwks, sort_keys=True), keys=keys)

    async def IsAdmin(
        self, request: auth_pb2.IsAdminRequest, context: Context
    ) -> auth_pb2.IsAdminResponse:
        return auth_pb2.IsAdminResponse(is_admin=await self._auth.is_admin(request.user_id))


def _session(session: Session, current: str) -> sessions_pb2.Session:
    return sessions_pb2.Session(
        session_id=session.id,
        app_id=session.app_id,
        user_agent=session.user_agent,
        ip=session.ip,
        device_name=session.device_name,
        created_at=int(session.created_at.timestamp()),
        last_used_at=int(session.last_used_at.timestamp()),
        expires_at=int(session.expires_at.timestamp()),
        current=session.id == current,
    )


class SessionsV1(sessions_pb2_grpc.SessionsServicer):
    def __init__(self, sessions: SessionService) -> None:
        self._sessions = sessions

    async def _caller(self, context: Context) -> AccessClaims:
        return await self._sessions.auth.validate(bearer_token(context))

    async def ListSessions(
        self, request: sessions_pb2.ListSessionsRequest, context: Context
    ) -> sessions_pb2.ListSessionsResponse:
        caller = await self._caller(context)
        sessions = await self._sessions.list(caller)
        return sessions_pb2.ListSessionsResponse(
            sessions=[_session(s, caller.session_id) for s in sessions]
        )

    async def RevokeSession(
        self, request: sessions_pb2.RevokeSessionRequest, context: Context
    ) -> sessions_pb2.RevokeSessionResponse:
        caller = await self._caller(context)
        return sessions_pb2.RevokeSessionResponse(
            revoked=await self._sessions.revoke(caller, request.session_id)
        )

    async def RevokeAllSessions(
        self, request: sessions_pb2.RevokeAllSessionsRequest, context: Context
    ) -> sessions_pb2.RevokeAllSessionsResponse:
        caller = await self._caller(context)
        count = await self._sessions.revoke_all(caller, keep_current=request.keep_current)
        return sessions_pb2.RevokeAllSessionsResponse(revoked=count)
