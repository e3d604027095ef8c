"""E2 with the per-process denylist copy: two service processes share one Redis.

A session revoked through one is rejected by the other within a second (pub/sub),
and when Redis stops, validation goes on from each process's copy: revoked
sessions stay rejected, live ones stay valid.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path

import grpc
import pytest
from hardening_helpers import PASSWORD, add_users, settings, stub

from sso_proto.sso.v1 import auth_pb2

pytestmark = pytest.mark.redis


async def _valid(running, token: str) -> bool:  # type: ignore[no-untyped-def]
    try:
        await stub(running).ValidateToken(auth_pb2.ValidateTokenRequest(token=token), timeout=5)
    except grpc.aio.AioRpcError as error:
        assert error.code() is grpc.StatusCode.UNAUTHENTICATED, error
        return False
    return True


async def _synced(*running) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + 10
    while not all(r.container.auth.denylist.synced for r in running):
        assert time.monotonic() < deadline, "denylist copies never synced"
        await asyncio.sleep(0.02)


async def test_revocation_reaches_the_other_process_and_survives_redis_stopping(
    serve, tmp_path: Path, pg_url: str, redis_factory: Callable
) -> None:
    redis = redis_factory()
    shared = settings(tmp_path, pg_url, redis.url)  # same data key, keys and Redis prefix
    one = await serve(shared)
    two = await serve(shared)
    await add_users(one, ["replica@example.com"])
    request = auth_pb2.LoginRequest(
        email="replica@example.com", password=PASSWORD, app_id=one.app.id
    )
    revoked = (await stub(one).Login(request)).tokens
    kept = (await stub(one).Login(request)).tokens
    await _synced(one, two)
    assert await _valid(two, revoked.access_token)

    await stub(one).Logout(auth_pb2.LogoutRequest(refresh_token=revoked.refresh_token))
    assert not await _valid(one, revoked.access_token)  # the revoking process: at once
    started = time.monotonic()
    while await _valid(two, revoked.access_token):
        assert time.monotonic() - started < 1.0, "the other process still accepts it"
        await asyncio.sleep(0.01)

    redis.stop()
    deadline = time.monotonic() + 5
    while one.container.auth.denylist.synced or two.container.auth.denylist.synced:
        assert time.monotonic() < deadline, "the lost subscription went unnoticed"
        await asyncio.sleep(0.01)
    for running in (one, two):
        assert not await _valid(running, revoked.access_token)
        assert await _valid(running, kept.access_token)
