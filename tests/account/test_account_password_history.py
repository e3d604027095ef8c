"""ChangePassword (E5), login history, new-device notices, connected apps, data export."""

from __future__ import annotations

import json
import secrets

import grpc
from account_helpers import (
    STRONG,
    SmtpSink,
    account,
    auth,
    bearer,
    expect_error,
    login,
    reason_of,
    register,
    settle,
    unique,
)
from sso_harness import Running

from sso_proto.sso.v1 import account_pb2, auth_pb2

S = grpc.StatusCode
NEW = "another correct horse staple"


async def test_change_password_keeps_only_the_callers_session(
    account_server: Running, smtp_sink: SmtpSink
) -> None:
    """E5: after ChangePassword every other refresh token is UNAUTHENTICATED at once; the
    caller's session keeps working; a notice goes to the stored address."""
    email = unique("change")
    await register(account_server, email)
    me, *others = [await login(account_server, email, device=f"d{i}") for i in range(3)]
    stub = account(account_server)

    wrong = await expect_error(
        stub.ChangePassword(
            account_pb2.ChangePasswordRequest(current_password="not my password", new_password=NEW),
            metadata=bearer(me.access_token),
        ),
        S.UNAUTHENTICATED,
    )
    assert reason_of(wrong) == "INVALID_CREDENTIALS"
    weak = account_pb2.ChangePasswordRequest(current_password=STRONG, new_password="short")
    await expect_error(
        stub.ChangePassword(weak, metadata=bearer(me.access_token)), S.INVALID_ARGUMENT
    )
    await expect_error(
        stub.ChangePassword(account_pb2.ChangePasswordRequest(current_password=STRONG)),
        S.UNAUTHENTICATED,  # no bearer token
    )

    request = account_pb2.ChangePasswordRequest(current_password=STRONG, new_password=NEW)
    response = await stub.ChangePassword(request, metadata=bearer(me.access_token))
    assert response.sessions_revoked == 2
    a = auth(account_server)
    for other in others:
        await expect_error(
            a.Refresh(auth_pb2.RefreshRequest(refresh_token=other.refresh_token)),
            S.UNAUTHENTICATED,
        )
        await expect_error(
            a.ValidateToken(auth_pb2.ValidateTokenRequest(token=other.access_token)),
            S.UNAUTHENTICATED,
        )
    assert (await a.Refresh(auth_pb2.RefreshRequest(refresh_token=me.refresh_token))).tokens
    await expect_error(
        a.Login(auth_pb2.LoginRequest(email=email, password=STRONG, app_id=account_server.app.id)),
        S.UNAUTHENTICATED,
    )
    assert (await login(account_server, email, NEW)).access_token
    await settle(account_server)
    notices = smtp_sink.to(email, "password_changed")
    assert len(notices) == 1 and "2 other session(s)" in notices[0].text


async def test_history_pages_and_new_device_notice(
    account_server: Running, smtp_sink: SmtpSink
) -> None:
    email = unique("history")
    await register(account_server, email)
    first = await login(account_server, email, device="laptop")
    await settle(account_server)
    assert smtp_sink.to(email, "new_device") == []  # the first login ever: nothing to compare
    await login(account_server, email, device="laptop")
    await settle(account_server)
    assert smtp_sink.to(email, "new_device") == []  # a known device
    a = auth(account_server)
    bad = auth_pb2.LoginRequest(
        email=email, password="wrong horse battery", app_id=account_server.app.id
    )
    await expect_error(a.Login(bad), S.UNAUTHENTICATED)
    await settle(account_server)  # history rows are written after the answer, in this order
    await login(account_server, email, device="phone")
    await settle(account_server)
    notices = smtp_sink.to(email, "new_device")
    assert len(notices) == 1 and notices[0].rcpt == [email]
    assert "phone" in notices[0].text and account_server.app.name in notices[0].text

    stub = account(account_server)
    meta = bearer(first.access_token)
    page1 = await stub.ListLoginHistory(
        account_pb2.ListLoginHistoryRequest(page_size=2), metadata=meta
    )
    assert [e.result for e in page1.entries] == ["success", "failure"]
    assert page1.entries[0].device_name == "phone"
    assert page1.entries[0].app_id == account_server.app.id
    assert page1.entries[0].ip == "127.0.0.1"
    assert page1.next_page_token
    page2 = await stub.ListLoginHistory(
        account_pb2.ListLoginHistoryRequest(page_size=2, page_token=page1.next_page_token),
        metadata=meta,
    )
    assert [e.result for e in page2.entries] == ["success", "success"]
    assert page2.next_page_token == ""
    times = [e.time for e in (*page1.entries, *page2.entries)]
    assert times == sorted(times, reverse=True)
    await expect_error(
        stub.ListLoginHistory(
            account_pb2.ListLoginHistoryRequest(page_token="not-a-token"), metadata=meta
        ),
        S.INVALID_ARGUMENT,
    )
    # Another user sees only their own history.
    other = unique("other")
    await register(account_server, other)
    theirs = await login(account_server, other)
    await settle(account_server)
    listed = await stub.ListLoginHistory(
        account_pb2.ListLoginHistoryRequest(), metadata=bearer(theirs.access_token)
    )
    assert len(listed.entries) == 1


async def test_connected_apps_revoke_and_export(
    account_server: Running, smtp_sink: SmtpSink
) -> None:
    email = unique("apps")
    await register(account_server, email)
    other_app = await account_server.container.auth.apps.create(
        f"other-{secrets.token_hex(3)}", secrets.token_urlsafe(32)
    )
    mine = await login(account_server, email, device="web")
    await login(account_server, email, device="web")
    request = auth_pb2.LoginRequest(email=email, password=STRONG, app_id=other_app.id)
    elsewhere = (await auth(account_server).Login(request)).tokens
    stub = account(account_server)
    meta = bearer(mine.access_token)

    apps = await stub.ListConnectedApps(account_pb2.ListConnectedAppsRequest(), metadata=meta)
    assert {(a.app_id, a.name, a.sessions) for a in apps.apps} == {
        (account_server.app.id, account_server.app.name, 2),
        (other_app.id, other_app.name, 1),
    }
    revoked = await stub.RevokeAppAccess(
        account_pb2.RevokeAppAccessRequest(app_id=other_app.id), metadata=meta
    )
    assert revoked.sessions_revoked == 1
    await expect_error(
        auth(account_server).Refresh(
            auth_pb2.RefreshRequest(refresh_token=elsewhere.refresh_token)
        ),
        S.UNAUTHENTICATED,
    )
    apps = await stub.ListConnectedApps(account_pb2.ListConnectedAppsRequest(), metadata=meta)
    assert [a.app_id for a in apps.apps] == [account_server.app.id]
    await expect_error(
        stub.RevokeAppAccess(account_pb2.RevokeAppAccessRequest(), metadata=meta),
        S.INVALID_ARGUMENT,
    )

    await settle(account_server)
    exported = await stub.ExportMyData(account_pb2.ExportMyDataRequest(), metadata=meta)
    document = json.loads(exported.json)
    assert len(document["login_history"]) == 3
    assert {d["device_name"] for d in document["known_devices"]} == {"web", ""}
    verification = document["email_verification"]
    assert verification["email_verified"] is False
    assert [link["purpose"] for link in verification["links"]] == ["verify_email"]
    token = smtp_sink.to(email, "verify_email")[0].token
    assert token not in exported.json and "token_hash" not in exported.json
    assert "password_hash" not in exported.json and "$argon2" not in exported.json
