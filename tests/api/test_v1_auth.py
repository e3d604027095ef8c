"""sso.v1.Auth over real gRPC: register, login, refresh rotation and reuse, validate, logout."""

from __future__ import annotations

import asyncio
import json

import grpc
import jwt
import pytest
from api_helpers import STRONG, expect_error, http_get_json, reason_of

from sso_proto.sso.v1 import auth_pb2, auth_pb2_grpc


@pytest.fixture
def stub(sso_server):  # type: ignore[no-untyped-def]
    return auth_pb2_grpc.AuthStub(sso_server.channel)


async def login(stub, app_id: int, email: str = "user@example.com") -> auth_pb2.TokenPair:  # type: ignore[no-untyped-def]
    try:
        await stub.Register(auth_pb2.RegisterRequest(email=email, password=STRONG))
    except grpc.aio.AioRpcError as error:
        assert error.code() == grpc.StatusCode.ALREADY_EXISTS
    resp = await stub.Login(auth_pb2.LoginRequest(email=email, password=STRONG, app_id=app_id))
    assert resp.WhichOneof("result") == "tokens"
    return resp.tokens


async def test_login_returns_a_verifiable_token_pair(sso_server, stub) -> None:
    pair = await login(stub, sso_server.app.id)
    assert pair.token_type == "Bearer" and pair.expires_in == 300 and pair.session_id
    assert len(pair.refresh_token) >= 43
    header = jwt.get_unverified_header(pair.access_token)
    assert header["alg"] == "RS256" and header["kid"] and header["typ"] == "at+jwt"
    claims = (
        await stub.ValidateToken(auth_pb2.ValidateTokenRequest(token=pair.access_token))
    ).claims
    assert claims.sid == pair.session_id and claims.email == "user@example.com"
    assert claims.iss == "http://127.0.0.1/sso" and list(claims.aud) == [str(sso_server.app.id)]
    assert claims.exp - claims.iat == 300 and list(claims.amr) == ["pwd"] and claims.jti
    assert claims.email_verified is False and claims.user_id > 0


async def test_jwks_and_discovery_let_a_standard_library_verify(sso_server, stub) -> None:
    pair = await login(stub, sso_server.app.id)
    discovery = await http_get_json(f"{sso_server.http}/.well-known/openid-configuration")
    assert discovery["issuer"] == "http://127.0.0.1/sso"
    jwks_uri = f"{sso_server.http}/.well-known/jwks.json"
    client = jwt.PyJWKClient(jwks_uri)
    key = await asyncio.to_thread(client.get_signing_key_from_jwt, pair.access_token)
    claims = jwt.decode(
        pair.access_token,
        key.key,
        algorithms=["RS256"],
        audience=str(sso_server.app.id),
        issuer="http://127.0.0.1/sso",
        options={"require": ["exp", "iat", "sub", "aud", "iss"]},
    )
    assert claims["sid"] == pair.session_id
    grpc_jwks = json.loads((await stub.GetJwks(auth_pb2.GetJwksRequest())).jwks_json)
    assert await http_get_json(jwks_uri) == grpc_jwks


async def test_register_errors_carry_reasons(stub) -> None:
    cases = [
        (auth_pb2.RegisterRequest(email="not-an-email", password=STRONG), "EMAIL_INVALID"),
        (auth_pb2.RegisterRequest(email="", password=STRONG), "EMAIL_REQUIRED"),
        (auth_pb2.RegisterRequest(email="a@example.com", password="short"), "PASSWORD_TOO_SHORT"),
        (auth_pb2.RegisterRequest(email="a@example.com", password="x" * 129), "PASSWORD_TOO_LONG"),
        (auth_pb2.RegisterRequest(email="a\x00b@example.com", password=STRONG), "EMAIL_INVALID"),
        (
            auth_pb2.RegisterRequest(email="a" * 65 + "@example.com", password=STRONG),
            "EMAIL_INVALID",
        ),
        (
            auth_pb2.RegisterRequest(email="a@" + "b" * 250 + ".com", password=STRONG),
            "EMAIL_INVALID",
        ),
    ]
    for request, reason in cases:
        error = await expect_error(stub.Register(request), grpc.StatusCode.INVALID_ARGUMENT)
        assert reason_of(error) == reason, (request.email[:20], error.details())
    await stub.Register(auth_pb2.RegisterRequest(email="taken@example.com", password=STRONG))
    error = await expect_error(
        stub.Register(auth_pb2.RegisterRequest(email="Taken@EXAMPLE.com", password=STRONG)),
        grpc.StatusCode.ALREADY_EXISTS,
    )
    assert reason_of(error) == "EMAIL_TAKEN"


async def test_wrong_password_and_unknown_user_look_the_same(sso_server, stub) -> None:
    await login(stub, sso_server.app.id, "known@example.com")
    errors = []
    for email, password in [("known@example.com", STRONG + "!"), ("unknown@example.com", STRONG)]:
        request = auth_pb2.LoginRequest(email=email, password=password, app_id=sso_server.app.id)
        errors.append(await expect_error(stub.Login(request), grpc.StatusCode.UNAUTHENTICATED))
    assert {e.details() for e in errors} == {"invalid email or password"}
    assert {reason_of(e) for e in errors} == {"INVALID_CREDENTIALS"}


async def test_unknown_app_is_not_found(stub) -> None:
    request = auth_pb2.LoginRequest(email="a@example.com", password=STRONG, app_id=99999)
    error = await expect_error(stub.Login(request), grpc.StatusCode.NOT_FOUND)
    assert reason_of(error) == "APP_NOT_FOUND"


async def test_refresh_rotates_and_old_token_is_spent(sso_server, stub) -> None:
    rt1 = (await login(stub, sso_server.app.id)).refresh_token
    rt2 = (await stub.Refresh(auth_pb2.RefreshRequest(refresh_token=rt1))).tokens
    assert rt2.refresh_token != rt1
    rt3 = (await stub.Refresh(auth_pb2.RefreshRequest(refresh_token=rt2.refresh_token))).tokens
    assert rt3.session_id == rt2.session_id
    # RT1 is two generations old: reuse → the whole family is revoked (RFC 9700).
    error = await expect_error(
        stub.Refresh(auth_pb2.RefreshRequest(refresh_token=rt1)), grpc.StatusCode.UNAUTHENTICATED
    )
    assert reason_of(error) == "TOKEN_REUSED"
    error = await expect_error(
        stub.Refresh(auth_pb2.RefreshRequest(refresh_token=rt3.refresh_token)),
        grpc.StatusCode.UNAUTHENTICATED,
    )
    assert reason_of(error) == "TOKEN_REVOKED"
    # ... and the family's access tokens fail at once (denylist).
    error = await expect_error(
        stub.ValidateToken(auth_pb2.ValidateTokenRequest(token=rt3.access_token)),
        grpc.StatusCode.UNAUTHENTICATED,
    )
    assert reason_of(error) == "TOKEN_REVOKED"


async def test_retry_within_grace_returns_the_same_successor(sso_server, stub) -> None:
    rt1 = (await login(stub, sso_server.app.id)).refresh_token
    first = (await stub.Refresh(auth_pb2.RefreshRequest(refresh_token=rt1))).tokens
    again = (await stub.Refresh(auth_pb2.RefreshRequest(refresh_token=rt1))).tokens
    assert again.refresh_token == first.refresh_token
    # The successor is still the one valid head of the family.
    nxt = (await stub.Refresh(auth_pb2.RefreshRequest(refresh_token=first.refresh_token))).tokens
    assert nxt.refresh_token not in (rt1, first.refresh_token)


async def test_fifty_concurrent_refreshes_never_fork_the_family(sso_server, stub) -> None:
    rt = (await login(stub, sso_server.app.id)).refresh_token
    results = await asyncio.gather(
        *(stub.Refresh(auth_pb2.RefreshRequest(refresh_token=rt)) for _ in range(50)),
        return_exceptions=True,
    )
    successes = [r.tokens.refresh_token for r in results if not isinstance(r, BaseException)]
    failures = [r for r in results if isinstance(r, BaseException)]
    assert all(isinstance(f, grpc.aio.AioRpcError) for f in failures)
    assert all(f.code() != grpc.StatusCode.INTERNAL for f in failures)  # type: ignore[union-attr]
    assert len(set(successes)) == 1, "at most one distinct successor"
    assert len(successes) >= 1


async def test_logout_revokes_session_and_its_access_token(sso_server, stub) -> None:
    pair = await login(stub, sso_server.app.id)
    assert (await stub.Logout(auth_pb2.LogoutRequest(refresh_token=pair.refresh_token))).success
    error = await expect_error(
        stub.ValidateToken(auth_pb2.ValidateTokenRequest(token=pair.access_token)),
        grpc.StatusCode.UNAUTHENTICATED,
    )
    assert reason_of(error) == "TOKEN_REVOKED"
    error = await expect_error(
        stub.Refresh(auth_pb2.RefreshRequest(refresh_token=pair.refresh_token)),
        grpc.StatusCode.UNAUTHENTICATED,
    )
    assert reason_of(error) == "TOKEN_REVOKED"


async def test_validate_rejects_garbage_and_audience_mismatch(sso_server, stub) -> None:
    pair = await login(stub, sso_server.app.id)
    for token in ["garbage", pair.access_token + "x", pair.access_token.rsplit(".", 1)[0] + "."]:
        error = await expect_error(
            stub.ValidateToken(auth_pb2.ValidateTokenRequest(token=token)),
            grpc.StatusCode.UNAUTHENTICATED,
        )
        assert reason_of(error) == "TOKEN_INVALID"
    error = await expect_error(
        stub.ValidateToken(
            auth_pb2.ValidateTokenRequest(token=pair.access_token, audience="other")
        ),
        grpc.StatusCode.UNAUTHENTICATED,
    )
    assert reason_of(error).startswith("TOKEN_")
    ok = await stub.ValidateToken(
        auth_pb2.ValidateTokenRequest(token=pair.access_token, audience=str(sso_server.app.id))
    )
    assert ok.valid


async def test_oversized_request_is_resource_exhausted(stub) -> None:
    request = auth_pb2.RegisterRequest(email="big@example.com", password="p" * (64 * 1024 + 1))
    await expect_error(stub.Register(request), grpc.StatusCode.RESOURCE_EXHAUSTED)
