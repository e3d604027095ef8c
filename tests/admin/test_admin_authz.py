"""Deny by default (SECURITY_CHECKLIST I1, I2): generated from the proto descriptors.

Every method of sso.v1.Admin is called with no credentials, a user's access token,
an expired access token of an admin user, a wrong admin token of the right length
and garbage: each answer is UNAUTHENTICATED or PERMISSION_DENIED, and each refusal
is an audit row. A new RPC fails `test_every_method_is_classified` until it is in
the gate's table. Then the IP allow-list, with a trusted proxy and a spoofed header.
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import grpc
import pytest
from admin_support import (
    AdminEnv,
    admin_settings,
    bearer,
    expect_error,
    make_settings,
    reason_of,
    start,
    stop,
)
from google.protobuf.descriptor import Descriptor
from google.protobuf.message import Message

from sso.api.admin_auth import METHOD_ACCESS, SERVICE, Access
from sso.config import RateLimitSettings
from sso_proto.sso.v1 import admin_pb2

S = grpc.StatusCode
DENIED = {S.UNAUTHENTICATED, S.PERMISSION_DENIED}


def methods() -> list[tuple[str, type[Message]]]:
    return [(m.name, getattr(admin_pb2, m.input_type.name)) for m in SERVICE.methods]


def test_every_method_is_classified() -> None:
    assert {name for name, _ in methods()} == set(METHOD_ACCESS)
    assert all(isinstance(v, Access) for v in METHOD_ACCESS.values())


def _response_types() -> set[Descriptor]:
    seen: set[Descriptor] = set()
    stack = [m.output_type for m in SERVICE.methods]
    while stack:
        message = stack.pop()
        if message in seen:
            continue
        seen.add(message)
        stack.extend(f.message_type for f in message.fields if f.message_type is not None)
    return seen


SECRET_LIKE = ("hash", "secret", "totp", "password", "otp", "recovery", "backup")
# The two responses that hand out an app secret, once.
SECRET_CARRIERS = {("CreateAppResponse", "secret"), ("RotateAppSecretResponse", "secret")}


def test_no_response_type_can_carry_a_hash_or_secret() -> None:
    """Any field named like a credential is a number or a bool (a timestamp, a flag, a scheme
    name is allowed by its exact name), except the two creation responses' `secret`."""
    allowed_text = {("User", "password_scheme")}
    found = []
    for message in _response_types():
        for f in message.fields:
            if not any(word in f.name for word in SECRET_LIKE):
                continue
            key = (message.name, f.name)
            textual = f.type in (f.TYPE_STRING, f.TYPE_BYTES) or f.message_type is not None
            if textual and key not in SECRET_CARRIERS | allowed_text:
                found.append(key)
    assert found == []
    names = {m.name for m in _response_types()}
    assert {"CreateAppResponse", "RotateAppSecretResponse", "User", "App"} <= names


async def _expired_admin_token(env: AdminEnv) -> str:
    uid, _, _ = await env.user("oldadmin")
    await env.admin.SetAdmin(admin_pb2.SetAdminRequest(user_id=uid, is_admin=True), metadata=env.md)
    issuer = env.running.container.bundle.access_tokens
    now = datetime.now(UTC) - timedelta(hours=1)
    claims: dict[str, Any] = {
        "sub": str(uid),
        "aud": str(env.running.app.id),
        "sid": "s" * 43,
        "email": "x@example.com",
        "email_verified": False,
        "amr": ["pwd"],
        "app_id": env.running.app.id,
    }
    return issuer.issue(claims, ttl=timedelta(minutes=5), now=now)


async def test_every_method_denies_every_wrong_credential(env: AdminEnv) -> None:
    _, _, user_token = await env.user("plain")
    expired = await _expired_admin_token(env)
    wrong_admin = secrets.token_urlsafe(32)
    assert len(wrong_admin) == len(env.token)  # same length: only the digest comparison decides
    credentials: dict[str, tuple[tuple[str, str], ...]] = {
        "none": (),
        "user token": bearer(user_token),
        "expired admin-user token": bearer(expired),
        "wrong admin token": bearer(wrong_admin),
        "garbage": bearer("not.a.token"),
        "basic scheme": (("authorization", f"Basic {env.token}"),),
    }
    before = len(await env.audit_rows(event="authz_admin", outcome="failure"))
    calls = 0
    for name, request_type in methods():
        call = getattr(env.admin, name)
        for label, metadata in credentials.items():
            # Authenticated but not an admin → PERMISSION_DENIED; anything else → UNAUTHENTICATED.
            code = S.PERMISSION_DENIED if label == "user token" else S.UNAUTHENTICATED
            await expect_error(call(request_type(), metadata=metadata), code)
            calls += 1
        # The right token passes the gate (the empty request may still be invalid).
        try:
            await call(request_type(), metadata=env.md)
        except grpc.aio.AioRpcError as error:
            assert error.code() not in DENIED, (name, error.details())
    refusals = await env.audit_rows(event="authz_admin", outcome="failure")
    denied_rows = [r for r in refusals[before:] if str(r["target"]).startswith("rpc:")]
    assert len(denied_rows) >= calls
    assert {r["details"]["reason"] for r in denied_rows} >= {
        "TOKEN_MISSING",
        "NOT_ADMIN",
        "TOKEN_EXPIRED",
        "ADMIN_CREDENTIALS_INVALID",
    }


async def test_admin_token_from_a_file_is_reread_when_it_changes(
    tmp_path: Path, sqlite_url: str
) -> None:
    token_file = tmp_path / "token"
    first, second = secrets.token_urlsafe(32), secrets.token_urlsafe(32)
    token_file.write_text(first + "\nshort-token\n")
    settings = make_settings(tmp_path, sqlite_url)
    settings.admin = settings.admin.model_copy(update={"token_file": token_file})
    running = await start(settings)
    try:
        env = AdminEnv(running, first)
        assert (await env.admin.GetStats(admin_pb2.GetStatsRequest(), metadata=env.md)).apps >= 1
        await expect_error(  # shorter than 32 characters: never an admin token
            env.admin.GetStats(admin_pb2.GetStatsRequest(), metadata=bearer("short-token")),
            S.UNAUTHENTICATED,
        )
        token_file.write_text(second + "\n")
        await asyncio.sleep(1.1)  # the file is looked at no more than once a second
        await expect_error(
            env.admin.GetStats(admin_pb2.GetStatsRequest(), metadata=bearer(first)),
            S.UNAUTHENTICATED,
        )
        stats = await env.admin.GetStats(admin_pb2.GetStatsRequest(), metadata=bearer(second))
        assert stats.apps >= 1
    finally:
        await stop(running)


@pytest.fixture
async def allow_listed(tmp_path: Path, sqlite_url: str) -> AsyncIterator[AdminEnv]:
    """Admin calls allowed from 10.1.0.0/16 only; 127.0.0.1 (every test client) is a proxy."""
    token = secrets.token_urlsafe(32)
    settings = admin_settings(
        make_settings(tmp_path, sqlite_url), token, allowed_cidrs=["10.1.0.0/16"]
    )
    settings.ratelimit = RateLimitSettings(
        login_per_ip=100_000, register_per_ip=100_000, trusted_proxies=["127.0.0.1/32"]
    )
    running = await start(settings)
    yield AdminEnv(running, token)
    await stop(running)


async def test_ip_allow_list_with_a_trusted_proxy(allow_listed: AdminEnv) -> None:
    env = allow_listed
    stats = admin_pb2.GetStatsRequest()
    inside = (*env.md, ("x-forwarded-for", "10.1.2.3"))
    assert (await env.admin.GetStats(stats, metadata=inside)).apps >= 1
    # The proxy itself is not in the list, and neither is another client it names.
    for metadata in (env.md, (*env.md, ("x-forwarded-for", "192.0.2.7"))):
        error = await expect_error(
            env.admin.GetStats(stats, metadata=metadata), S.PERMISSION_DENIED
        )
        assert reason_of(error) == "ADMIN_IP_NOT_ALLOWED"
    # A client that prepends an allowed address is still judged by the hop the proxy saw.
    spoof_through_proxy = (*env.md, ("x-forwarded-for", "10.1.2.3, 192.0.2.7"))
    await expect_error(env.admin.GetStats(stats, metadata=spoof_through_proxy), S.PERMISSION_DENIED)


async def test_spoofed_forwarded_for_from_an_untrusted_peer_is_ignored(
    tmp_path: Path, sqlite_url: str
) -> None:
    token = secrets.token_urlsafe(32)
    settings = admin_settings(
        make_settings(tmp_path, sqlite_url), token, allowed_cidrs=["10.1.0.0/16"]
    )  # no trusted proxies: the transport peer (127.0.0.1) is the client
    running = await start(settings)
    try:
        env = AdminEnv(running, token)
        spoofed = (*env.md, ("x-forwarded-for", "10.1.2.3"))
        error = await expect_error(
            env.admin.GetStats(admin_pb2.GetStatsRequest(), metadata=spoofed), S.PERMISSION_DENIED
        )
        assert reason_of(error) == "ADMIN_IP_NOT_ALLOWED"
    finally:
        await stop(running)
