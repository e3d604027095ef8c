"""Apps through sso.v1.Admin: create (secret once), get, list pages, update, delete, rotate."""

from __future__ import annotations

import asyncio
import secrets

import grpc
from admin_support import STRONG, AdminEnv, expect_error, reason_of

from sso_proto.auth import auth_pb2 as legacy_pb2
from sso_proto.auth import auth_pb2_grpc as legacy_grpc
from sso_proto.sso.v1 import admin_pb2, auth_pb2

S = grpc.StatusCode


async def test_create_get_update_and_secret_shown_once(env: AdminEnv) -> None:
    created = await env.create_app(
        "billing",
        display_name="Billing",
        redirect_uris=["https://billing.example.com/cb", "http://localhost:8000/cb"],
        login_rate_limit_per_minute=120,
    )
    app = created.app
    assert app.app_id > 0 and app.name == "billing" and app.display_name == "Billing"
    assert list(app.redirect_uris) == [
        "https://billing.example.com/cb",
        "http://localhost:8000/cb",
    ]
    assert app.login_rate_limit_per_minute == 120 and app.created_at > 0
    assert len(created.secret) >= 43  # 256 bits, URL-safe

    got = await env.admin.GetApp(admin_pb2.GetAppRequest(app_id=app.app_id), metadata=env.md)
    assert got.app == app
    assert created.secret not in str(got)

    updated = await env.admin.UpdateApp(
        admin_pb2.UpdateAppRequest(
            app_id=app.app_id,
            update_mask=["display_name"],
            display_name="Billing (EU)",
            login_rate_limit_per_minute=5,  # not in the mask: kept
        ),
        metadata=env.md,
    )
    assert updated.app.display_name == "Billing (EU)"
    assert updated.app.login_rate_limit_per_minute == 120
    assert list(updated.app.redirect_uris) == list(app.redirect_uris)

    again = await expect_error(env.create_app("billing"), S.ALREADY_EXISTS)
    assert reason_of(again) == "APP_NAME_TAKEN"
    bad = await expect_error(
        env.create_app(redirect_uris=["http://evil.example.com/cb"]), S.INVALID_ARGUMENT
    )
    assert reason_of(bad) == "REDIRECT_URIS_INVALID"
    mask = await expect_error(
        env.admin.UpdateApp(
            admin_pb2.UpdateAppRequest(app_id=app.app_id, update_mask=["secret"]),
            metadata=env.md,
        ),
        S.INVALID_ARGUMENT,
    )
    assert reason_of(mask) == "UPDATE_MASK_INVALID"
    missing = await expect_error(
        env.admin.GetApp(admin_pb2.GetAppRequest(app_id=999_999), metadata=env.md), S.NOT_FOUND
    )
    assert reason_of(missing) == "APP_NOT_FOUND"


async def test_imported_id_and_secret_then_next_allocation_does_not_collide(
    env: AdminEnv,
) -> None:
    secret = secrets.token_urlsafe(24)
    imported = await env.create_app("moved", app_id=5000, secret=secret)
    assert imported.app.app_id == 5000 and imported.secret == secret
    fresh = await env.create_app("fresh")
    assert fresh.app.app_id != 5000
    short = await expect_error(env.create_app("short", secret="abc"), S.INVALID_ARGUMENT)
    assert reason_of(short) == "SECRET_INVALID"
    # The imported secret signs legacy tokens at once.
    uid, email, _ = await env.user("imp")
    legacy = legacy_grpc.AuthStub(env.channel)
    token = await legacy.Login(legacy_pb2.LoginRequest(email=email, password=STRONG, app_id=5000))
    from sso.security.legacy import verify_legacy

    assert verify_legacy(token.token, secret).uid == uid


async def test_list_apps_pages_in_a_stable_order(env: AdminEnv) -> None:
    made = [(await env.create_app(f"page-{i:02d}")).app.app_id for i in range(7)]
    seen: list[int] = []
    token = ""
    pages = 0
    while True:
        page = await env.admin.ListApps(
            admin_pb2.ListAppsRequest(page_size=3, page_token=token), metadata=env.md
        )
        pages += 1
        assert len(page.apps) <= 3
        seen.extend(a.app_id for a in page.apps)
        token = page.next_page_token
        if not token:
            break
    assert seen == sorted(seen) and len(seen) == len(set(seen))
    assert set(made) <= set(seen) and env.running.app.id in seen
    assert pages == -(-len(seen) // 3)
    bad = await expect_error(
        env.admin.ListApps(admin_pb2.ListAppsRequest(page_token="!!"), metadata=env.md),
        S.INVALID_ARGUMENT,
    )
    assert reason_of(bad) == "PAGE_TOKEN_INVALID"


async def test_delete_app_fails_login_like_an_unknown_app_and_revokes_sessions(
    env: AdminEnv,
) -> None:
    app = (await env.create_app("doomed")).app
    _, email, access = await env.user("del", app_id=app.app_id)
    valid = await env.auth.ValidateToken(auth_pb2.ValidateTokenRequest(token=access))
    assert valid.valid
    login = auth_pb2.LoginRequest(email=email, password=STRONG, app_id=app.app_id)
    second = await env.auth.Login(login)  # warms this process's app cache too

    deleted = await env.admin.DeleteApp(
        admin_pb2.DeleteAppRequest(app_id=app.app_id), metadata=env.md
    )
    assert deleted.deleted

    unknown = auth_pb2.LoginRequest(email=email, password=STRONG, app_id=987_654)
    want = await expect_error(env.auth.Login(unknown), S.NOT_FOUND)
    got = await expect_error(env.auth.Login(login), S.NOT_FOUND)
    assert (got.code(), got.details(), reason_of(got)) == (
        want.code(),
        want.details(),
        reason_of(want),
    )
    for token in (access, second.tokens.access_token):
        await expect_error(
            env.auth.ValidateToken(auth_pb2.ValidateTokenRequest(token=token)), S.UNAUTHENTICATED
        )
    await expect_error(
        env.auth.Refresh(auth_pb2.RefreshRequest(refresh_token=second.tokens.refresh_token)),
        S.UNAUTHENTICATED,
    )
    await expect_error(
        env.admin.DeleteApp(admin_pb2.DeleteAppRequest(app_id=app.app_id), metadata=env.md),
        S.NOT_FOUND,
    )
    # The id is never handed out again (it was the highest: SQLite would reuse it by default).
    assert (await env.create_app("after-doomed")).app.app_id > app.app_id


async def test_per_app_login_rate_limit(env: AdminEnv) -> None:
    app = (await env.create_app("throttled", login_rate_limit_per_minute=3)).app
    _, email, _ = await env.user("rl", app_id=env.running.app.id)
    login = auth_pb2.LoginRequest(email=email, password=STRONG, app_id=app.app_id)
    results = await asyncio.gather(
        *(env.auth.Login(login) for _ in range(6)), return_exceptions=True
    )
    ok = [r for r in results if not isinstance(r, BaseException)]
    refused = [r for r in results if isinstance(r, grpc.aio.AioRpcError)]
    assert len(ok) == 3 and len(refused) == 3
    assert {(e.code(), reason_of(e)) for e in refused} == {
        (S.RESOURCE_EXHAUSTED, "APP_RATE_LIMITED")
    }
    # Another app is not affected.
    other = auth_pb2.LoginRequest(email=email, password=STRONG, app_id=env.running.app.id)
    assert (await env.auth.Login(other)).tokens.access_token
