"""App secret semantics: x-client-secret on Login, rotation overlap, legacy tokens."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import grpc
from admin_support import STRONG, AdminEnv, expect_error, reason_of

from sso.security.legacy import verify_legacy
from sso_proto.auth import auth_pb2 as legacy_pb2
from sso_proto.auth import auth_pb2_grpc as legacy_grpc
from sso_proto.sso.v1 import admin_pb2, auth_pb2

S = grpc.StatusCode


def secret_md(secret: str) -> tuple[tuple[str, str], ...]:
    return (("x-client-secret", secret),)


async def test_rotation_overlap_then_only_the_new_secret(env: AdminEnv) -> None:
    created = await env.create_app("rotating")
    app_id, old = created.app.app_id, created.secret
    _, email, _ = await env.user("rot")
    login = auth_pb2.LoginRequest(email=email, password=STRONG, app_id=app_id)
    legacy = legacy_grpc.AuthStub(env.channel)
    legacy_login = legacy_pb2.LoginRequest(email=email, password=STRONG, app_id=app_id)

    # Before rotation: the secret authenticates the app; a wrong one is refused; none = public.
    assert (await env.auth.Login(login, metadata=secret_md(old))).tokens.access_token
    wrong = await expect_error(
        env.auth.Login(login, metadata=secret_md("x" * len(old))), S.UNAUTHENTICATED
    )
    assert reason_of(wrong) == "CLIENT_AUTH_FAILED"
    assert (await env.auth.Login(login)).tokens.access_token
    old_token = (await legacy.Login(legacy_login)).token
    assert verify_legacy(old_token, old).app_id == app_id

    started = datetime.now(UTC)
    rotated = await env.admin.RotateAppSecret(
        admin_pb2.RotateAppSecretRequest(app_id=app_id, overlap_seconds=3600), metadata=env.md
    )
    new = rotated.secret
    assert new and new != old
    assert rotated.app.secret_rotated_at >= int(started.timestamp()) - 1
    expires = rotated.app.previous_secret_expires_at
    assert abs(expires - (started.timestamp() + 3600)) < 60

    # During the overlap both secrets work; new legacy tokens are signed with the new one;
    # tokens signed with the old one still verify in the service (legacy Logout).
    for secret in (old, new):
        assert (await env.auth.Login(login, metadata=secret_md(secret))).tokens.access_token
    new_token = (await legacy.Login(legacy_login)).token
    assert verify_legacy(new_token, new).uid > 0
    for token in (old_token, new_token):
        assert (await legacy.Logout(legacy_pb2.LogoutRequest(token=token))).success

    # After the overlap (the domain clock moved past it) only the new secret works.
    auth = env.running.container.auth
    real_clock = auth.clock
    auth.clock = lambda: real_clock() + timedelta(seconds=3601)
    try:
        late = await expect_error(env.auth.Login(login, metadata=secret_md(old)), S.UNAUTHENTICATED)
        assert reason_of(late) == "CLIENT_AUTH_FAILED"
        assert (await env.auth.Login(login, metadata=secret_md(new))).tokens.access_token
        assert not (await legacy.Logout(legacy_pb2.LogoutRequest(token=old_token))).success
        assert (await legacy.Logout(legacy_pb2.LogoutRequest(token=new_token))).success
        got = await env.admin.GetApp(admin_pb2.GetAppRequest(app_id=app_id), metadata=env.md)
        assert got.app.previous_secret_expires_at == 0
    finally:
        auth.clock = real_clock


async def test_rotation_without_overlap_uses_the_configured_default(env: AdminEnv) -> None:
    created = await env.create_app("default-overlap")
    rotated = await env.admin.RotateAppSecret(
        admin_pb2.RotateAppSecretRequest(app_id=created.app.app_id), metadata=env.md
    )
    default = env.running.settings.admin.secret_overlap.total_seconds()
    assert rotated.app.previous_secret_expires_at - rotated.app.secret_rotated_at == default
    negative = await expect_error(
        env.admin.RotateAppSecret(
            admin_pb2.RotateAppSecretRequest(app_id=created.app.app_id, overlap_seconds=-1),
            metadata=env.md,
        ),
        S.INVALID_ARGUMENT,
    )
    assert reason_of(negative) == "OVERLAP_INVALID"
    await expect_error(
        env.admin.RotateAppSecret(
            admin_pb2.RotateAppSecretRequest(app_id=999_999), metadata=env.md
        ),
        S.NOT_FOUND,
    )


async def test_two_rotations_leave_only_the_last_two_secrets(env: AdminEnv) -> None:
    created = await env.create_app("twice")
    app_id, first = created.app.app_id, created.secret
    req = admin_pb2.RotateAppSecretRequest(app_id=app_id, overlap_seconds=600)
    second = (await env.admin.RotateAppSecret(req, metadata=env.md)).secret
    third = (await env.admin.RotateAppSecret(req, metadata=env.md)).secret
    _, email, _ = await env.user("twice")
    login = auth_pb2.LoginRequest(email=email, password=STRONG, app_id=app_id)
    for secret in (second, third):
        assert (await env.auth.Login(login, metadata=secret_md(secret))).tokens.access_token
    refused = await expect_error(
        env.auth.Login(login, metadata=secret_md(first)), S.UNAUTHENTICATED
    )
    assert reason_of(refused) == "CLIENT_AUTH_FAILED"
