"""The seed service's clients must work unchanged: `auth.Auth` exactly as they call it."""

from __future__ import annotations

import time

import grpc
import jwt
import pytest
from api_helpers import STRONG, expect_error

from sso_proto.auth import auth_pb2, auth_pb2_grpc


@pytest.fixture
def legacy(sso_server):  # type: ignore[no-untyped-def]
    return auth_pb2_grpc.AuthStub(sso_server.channel)


async def test_register_login_and_verify_token_with_app_secret(sso_server, legacy) -> None:
    reg = await legacy.Register(
        auth_pb2.RegisterRequest(email="Go.Client@Example.com", password=STRONG)
    )
    assert reg.user_id > 0
    resp = await legacy.Login(
        auth_pb2.LoginRequest(
            email="go.client@example.com", password=STRONG, app_id=sso_server.app.id
        )
    )
    # A Go client verifies with the app secret, HS256.
    claims = jwt.decode(resp.token, sso_server.app.secret, algorithms=["HS256"])
    assert claims["uid"] == reg.user_id
    assert claims["email"] == "go.client@example.com"
    assert claims["app_id"] == sso_server.app.id
    assert isinstance(claims["exp"], int)
    assert 3500 < claims["exp"] - time.time() <= 3600
    assert jwt.get_unverified_header(resp.token)["alg"] == "HS256"
    with pytest.raises(jwt.InvalidSignatureError):
        jwt.decode(resp.token, "another-secret-of-32-bytes-or-more", algorithms=["HS256"])


@pytest.mark.parametrize(
    ("email", "password", "app_id", "message"),
    [
        ("", STRONG, 1, "email is required"),
        ("a@example.com", "", 1, "password is required"),
        ("a@example.com", STRONG, 0, "app_id is required"),
    ],
)
async def test_login_validation_messages(legacy, email, password, app_id, message) -> None:
    error = await expect_error(
        legacy.Login(auth_pb2.LoginRequest(email=email, password=password, app_id=app_id)),
        grpc.StatusCode.INVALID_ARGUMENT,
    )
    assert error.details() == message


async def test_register_validation_and_duplicate(legacy) -> None:
    for email, password, message in [
        ("", STRONG, "email is required"),
        ("b@example.com", "", "password is required"),
    ]:
        error = await expect_error(
            legacy.Register(auth_pb2.RegisterRequest(email=email, password=password)),
            grpc.StatusCode.INVALID_ARGUMENT,
        )
        assert error.details() == message
    await legacy.Register(auth_pb2.RegisterRequest(email="dup@example.com", password=STRONG))
    error = await expect_error(
        legacy.Register(auth_pb2.RegisterRequest(email="DUP@example.com", password=STRONG)),
        grpc.StatusCode.ALREADY_EXISTS,
    )
    assert error.details() == "user already exists"


async def test_bad_credentials_are_invalid_argument_as_in_the_seed(sso_server, legacy) -> None:
    await legacy.Register(auth_pb2.RegisterRequest(email="c@example.com", password=STRONG))
    for email, password in [("c@example.com", STRONG + "x"), ("nobody@example.com", STRONG)]:
        error = await expect_error(
            legacy.Login(
                auth_pb2.LoginRequest(email=email, password=password, app_id=sso_server.app.id)
            ),
            grpc.StatusCode.INVALID_ARGUMENT,
        )
        assert error.details() == "invalid email or password"


async def test_is_admin_on_both_services(sso_server, legacy) -> None:
    reg = await legacy.Register(auth_pb2.RegisterRequest(email="d@example.com", password=STRONG))
    assert (await legacy.IsAdmin(auth_pb2.IsAdminRequest(user_id=reg.user_id))).is_admin is False
    await sso_server.container.auth.users.set_admin(reg.user_id, True)
    permissions = auth_pb2_grpc.PermissionsStub(sso_server.channel)
    assert (
        await permissions.IsAdmin(auth_pb2.IsAdminRequest(user_id=reg.user_id))
    ).is_admin is True
    error = await expect_error(
        legacy.IsAdmin(auth_pb2.IsAdminRequest(user_id=reg.user_id + 1000)),
        grpc.StatusCode.NOT_FOUND,
    )
    assert error.details() == "user not found"
    error = await expect_error(
        legacy.IsAdmin(auth_pb2.IsAdminRequest(user_id=0)), grpc.StatusCode.INVALID_ARGUMENT
    )
    assert error.details() == "user_id is required"


async def test_logout_reports_whether_the_token_is_genuine(sso_server, legacy) -> None:
    await legacy.Register(auth_pb2.RegisterRequest(email="e@example.com", password=STRONG))
    token = (
        await legacy.Login(
            auth_pb2.LoginRequest(email="e@example.com", password=STRONG, app_id=sso_server.app.id)
        )
    ).token
    assert (await legacy.Logout(auth_pb2.LogoutRequest(token=token))).success is True
    forged = jwt.encode(
        {"uid": 1, "email": "x", "exp": 9999999999, "app_id": sso_server.app.id}, "k" * 32
    )
    assert (await legacy.Logout(auth_pb2.LogoutRequest(token=forged))).success is False
    assert (await legacy.Logout(auth_pb2.LogoutRequest(token="garbage"))).success is False
