"""Read routing against a real primary and a real streaming replica (docs/architecture.md).

- lag-tolerant reads really are served by the replica (paused replay + a huge
  lag bound: the replica's stale answer comes back);
- security reads never are: with replay paused, a revoked session stays revoked
  and a locked account stays locked although the replica still says otherwise;
- once the replica lags past `max_replica_lag` the router notices and reads move
  to the primary; when replay resumes the replica is used again;
- replica killed: reads (50 concurrent) fall back to the primary without an
  error; restarted: it is sampled healthy and used again.
"""

from __future__ import annotations

import asyncio
import math
import secrets
import time
from collections.abc import Awaitable, Callable

import grpc
import pytest
from api_helpers import STRONG, expect_error
from pg_pair import Pair
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncConnection
from sso_harness import Running

from sso.storage.replicas import ReadRouter
from sso_proto.sso.v1 import auth_pb2, auth_pb2_grpc

pytestmark = pytest.mark.postgres


def router(sso: Running) -> ReadRouter:
    assert sso.container.database is not None
    return sso.container.database.reads


async def eventually(check: Callable[[], Awaitable[bool]], timeout: float, what: str) -> float:
    """Poll `check` until true; seconds it took. Fails after `timeout`."""
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        if await check():
            return time.monotonic() - start
        await asyncio.sleep(0.05)
    raise AssertionError(f"not within {timeout}s: {what}")


async def login(sso: Running, email: str) -> auth_pb2.LoginResponse:
    stub = auth_pb2_grpc.AuthStub(sso.channel)
    return await stub.Login(auth_pb2.LoginRequest(email=email, password=STRONG, app_id=sso.app.id))


async def test_replica_sampled_healthy_and_serves_lag_tolerant_reads(
    replicated_sso: Running, pg_pair: Pair, pair_db: str
) -> None:
    r = router(replicated_sso)
    [replica] = r.replicas
    assert replica.healthy and replica.up
    assert replica.lag_seconds == 0.0  # idle: everything received is replayed
    apps = replicated_sso.container.auth.apps
    pg_pair.wait_replayed(pair_db)
    before = await apps.count()  # type: ignore[attr-defined]
    r.max_lag = 3600.0  # keep the paused replica in use: its stale answer proves the route
    pg_pair.standby_sql("SELECT pg_wal_replay_pause()")
    await apps.create(f"late-{secrets.token_hex(3)}", secrets.token_urlsafe(32))
    await asyncio.sleep(0.5)  # a few samples: the replica stays healthy under this bound
    assert replica.healthy
    assert await apps.count() == before  # type: ignore[attr-defined]
    assert pg_pair.primary.execute("SELECT count(*) FROM apps", pair_db).strip() == str(before + 1)
    pg_pair.standby_sql("SELECT pg_wal_replay_resume()")
    await eventually(lambda: _eq(apps.count(), before + 1), 10, "replica catches up")  # type: ignore[attr-defined]


async def _eq(value: Awaitable[object], expected: object) -> bool:
    return await value == expected


async def test_security_reads_use_the_primary_while_replay_is_paused(
    replicated_sso: Running, pg_pair: Pair, pair_db: str
) -> None:
    sso = replicated_sso
    router(sso).max_lag = 3600.0  # the stale replica stays eligible for lag-tolerant reads
    stub = auth_pb2_grpc.AuthStub(sso.channel)
    await stub.Register(auth_pb2.RegisterRequest(email="a@example.com", password=STRONG))
    await stub.Register(auth_pb2.RegisterRequest(email="b@example.com", password=STRONG))
    await stub.Register(auth_pb2.RegisterRequest(email="c@example.com", password=STRONG))
    pair = (await login(sso, "a@example.com")).tokens
    await login(sso, "b@example.com")
    await login(sso, "c@example.com")  # control: both passwords work before the changes
    pg_pair.wait_replayed(pair_db)
    pg_pair.standby_sql("SELECT pg_wal_replay_pause()")

    await stub.Logout(auth_pb2.LogoutRequest(refresh_token=pair.refresh_token))
    pg_pair.primary.execute(
        "UPDATE users SET admin_locked = true WHERE email = 'b@example.com'", pair_db
    )
    # The replica has seen neither change: a stale read would accept both.
    sid = pair.session_id  # server-made, URL-safe base64: safe to inline in test SQL
    revoked = f"SELECT revoked_at IS NULL FROM sessions WHERE id = '{sid}'"  # noqa: S608
    locked = "SELECT admin_locked FROM users WHERE email = 'b@example.com'"
    assert pg_pair.standby_sql(revoked, pair_db) == "t"
    assert pg_pair.standby_sql(locked, pair_db) == "f"
    assert router(sso).healthy()  # lag-tolerant reads still go to the replica

    await expect_error(
        stub.Refresh(auth_pb2.RefreshRequest(refresh_token=pair.refresh_token)),
        grpc.StatusCode.UNAUTHENTICATED,
    )
    await expect_error(
        stub.ValidateToken(auth_pb2.ValidateTokenRequest(token=pair.access_token)),
        grpc.StatusCode.UNAUTHENTICATED,
    )
    # Locked looks like a wrong password from outside (no account enumeration); the same
    # password logged in before the lock, and the replica's copy is still unlocked.
    await expect_error(login(sso, "b@example.com"), grpc.StatusCode.UNAUTHENTICATED)

    # Checklist E8: 5 failures (the lockout threshold), then the right password: locked.
    wrong = auth_pb2.LoginRequest(email="c@example.com", password="wrong" * 4, app_id=sso.app.id)
    for _ in range(5):
        await expect_error(stub.Login(wrong), grpc.StatusCode.UNAUTHENTICATED)
    failures = "SELECT failed_logins FROM users WHERE email = 'c@example.com'"
    assert pg_pair.standby_sql(failures, pair_db) == "0"  # the replica has not seen them
    await expect_error(login(sso, "c@example.com"), grpc.StatusCode.UNAUTHENTICATED)
    assert int(pg_pair.primary.execute(failures, pair_db)) >= 5


async def test_lagging_replica_is_skipped_then_used_again(
    replicated_sso: Running, pg_pair: Pair, pair_db: str
) -> None:
    sso = replicated_sso
    r = router(sso)
    [replica] = r.replicas
    apps = sso.container.auth.apps
    pg_pair.wait_replayed(pair_db)
    before = await apps.count()  # type: ignore[attr-defined]
    pg_pair.standby_sql("SELECT pg_wal_replay_pause()")
    paused_at = time.monotonic()
    app = await apps.create(f"new-{secrets.token_hex(3)}", secrets.token_urlsafe(32))
    # Through the service: Login for the new app works at once (an app missing on the
    # replica is looked up on the primary), before and after the router notices.
    stub = auth_pb2_grpc.AuthStub(sso.channel)
    await stub.Register(auth_pb2.RegisterRequest(email="n@example.com", password=STRONG))
    resp = await stub.Login(
        auth_pb2.LoginRequest(email="n@example.com", password=STRONG, app_id=app.id)
    )
    assert resp.tokens.access_token
    # The listing, served by the replica, catches up once the lag passes the 1 s bound.
    await eventually(lambda: _eq(apps.count(), before + 1), 10, "reads move to the primary")  # type: ignore[attr-defined]
    noticed = time.monotonic() - paused_at
    assert not replica.healthy and replica.lag_seconds > r.max_lag
    assert replica.lag_bytes > 0
    # bound (1 s) + sample interval (0.2 s) + sampling and scheduling slack on a shared box
    assert noticed < 1.0 + 0.2 + 3.0, noticed
    metrics = await _metrics(sso)
    assert 'sso_db_replica_healthy{replica="0"} 0.0' in metrics
    lag_line = next(x for x in metrics.splitlines() if x.startswith("sso_db_replica_lag_seconds{"))
    assert float(lag_line.split()[-1]) > 1.0
    assert pg_pair.standby.url(pair_db).split("@")[1] not in metrics  # no DSN in labels

    pg_pair.standby_sql("SELECT pg_wal_replay_resume()")
    await eventually(lambda: _true(replica.healthy), 10, "replica healthy again")
    assert replica.lag_seconds <= r.max_lag


async def _true(value: bool) -> bool:
    return value


async def _metrics(sso: Running) -> str:
    loop = asyncio.get_running_loop()

    def fetch() -> str:
        import urllib.request

        with urllib.request.urlopen(f"{sso.http}/metrics", timeout=5) as resp:  # noqa: S310
            return str(resp.read().decode())

    return await loop.run_in_executor(None, fetch)


async def test_replica_killed_then_recovered(
    replicated_sso: Running, pg_pair: Pair, pair_db: str
) -> None:
    sso = replicated_sso
    r = router(sso)
    [replica] = r.replicas
    stub = auth_pb2_grpc.AuthStub(sso.channel)
    emails = [f"k{i}@example.com" for i in range(5)]  # per-email login limit: 10 a minute
    for email in emails:
        await stub.Register(auth_pb2.RegisterRequest(email=email, password=STRONG))
    apps = sso.container.auth.apps
    pg_pair.wait_replayed(pair_db)
    expected = await apps.count()  # type: ignore[attr-defined]
    sso.container.auth.forget_apps()  # Login's app lookup must reach the database
    assert replica.healthy

    pg_pair.standby.kill()
    # At once, before any sample noticed: 50 concurrent reads, none fails.
    results = await asyncio.gather(
        *(apps.count() for _ in range(25)),  # type: ignore[attr-defined]
        *(login(sso, emails[i % 5]) for i in range(25)),
    )
    assert results[:25] == [expected] * 25
    assert all(x.tokens.access_token for x in results[25:])  # type: ignore[union-attr]
    assert not replica.healthy and r.fallbacks >= 1
    await asyncio.sleep(0.5)  # samples keep it out while it is down
    assert not replica.healthy and math.isinf(replica.lag_seconds)

    await asyncio.to_thread(pg_pair.standby.restart)
    await eventually(lambda: _true(replica.healthy), 20, "replica used again after restart")
    # Used again: with replay paused and a huge bound, the replica's stale answer shows.
    r.max_lag = 3600.0
    pg_pair.wait_replayed(pair_db)
    pg_pair.standby_sql("SELECT pg_wal_replay_pause()")
    await apps.create(f"after-{secrets.token_hex(3)}", secrets.token_urlsafe(32))
    fallbacks = r.fallbacks
    await eventually(lambda: _eq(apps.count(), expected), 5, "served by the replica")  # type: ignore[attr-defined]
    assert r.fallbacks == fallbacks


async def test_a_statement_error_does_not_take_the_replica_out(replicated_sso: Running) -> None:
    r = router(replicated_sso)
    [replica] = r.replicas
    assert replica.healthy

    async def bad(conn: AsyncConnection) -> object:
        return (await conn.execute(text("SELECT 1 / 0"))).scalar_one()

    with pytest.raises(DBAPIError):  # retried on the primary, which fails the same way
        await r.run(bad)
    assert replica.healthy and r.fallbacks == 1
