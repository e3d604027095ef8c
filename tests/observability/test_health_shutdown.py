"""Health and graceful shutdown as Kubernetes uses them (checklist M1, M2, M3).

- M1: `grpc.health.v1` Check for "", `liveness`, `readiness` and the served
  services; NOT_FOUND for an unknown one; Watch sends the current status, then
  each change.
- M2: a PostgreSQL outage (a private server, stopped and restarted) turns
  readiness NOT_SERVING and back, while liveness stays SERVING throughout and
  every Check keeps answering at once. A Redis outage only degrades the pod
  (it keeps serving, L1) unless Redis is configured as required. A lagging
  event loop fails liveness.
- M3: a real `sso serve` with 200 Logins in flight (real argon2) gets SIGTERM:
  readiness goes NOT_SERVING within 100 ms, every accepted Login succeeds, new
  calls after the stop get UNAVAILABLE, and the process exits well within 30 s.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from telemetry_support import (
    PASSWORD,
    PrivatePostgres,
    Running,
    ServeProcess,
    fetch,
    make_settings,
    scrape,
    start,
    stop,
)

from sso.security.secretbox import generate_data_key
from sso.storage import migrate
from sso_proto.sso.v1 import auth_pb2, auth_pb2_grpc

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
SERVICE_UNKNOWN = health_pb2.HealthCheckResponse.SERVICE_UNKNOWN
LOGIN = "/sso.v1.Auth/Login"


async def check(stub: health_pb2_grpc.HealthStub, service: str) -> int:
    response = await stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=5)
    return int(response.status)


async def next_status(stream: AsyncIterator[health_pb2.HealthCheckResponse]) -> int:
    return int((await asyncio.wait_for(anext(stream), timeout=15)).status)


@pytest.fixture
async def served(tmp_path: Path, sqlite_url: str) -> AsyncIterator[Running]:
    settings = make_settings(tmp_path, sqlite_url)
    settings.observability.max_loop_lag = 0.3
    running = await start(settings)
    yield running
    await stop(running)


# -- M1 -----------------------------------------------------------------------------------------


async def test_check_and_watch(served: Running) -> None:
    stub = health_pb2_grpc.HealthStub(served.channel)
    for name in ["", "liveness", "readiness", "auth.Auth", "sso.v1.Auth", "sso.v1.Sessions"]:
        assert await check(stub, name) == SERVING, name
    with pytest.raises(grpc.aio.AioRpcError) as unknown:
        await check(stub, "nope")
    assert unknown.value.code() == grpc.StatusCode.NOT_FOUND

    readiness = stub.Watch(health_pb2.HealthCheckRequest(service="readiness")).__aiter__()
    overall = stub.Watch(health_pb2.HealthCheckRequest(service="")).__aiter__()
    liveness = stub.Watch(health_pb2.HealthCheckRequest(service="liveness")).__aiter__()
    nope = stub.Watch(health_pb2.HealthCheckRequest(service="nope")).__aiter__()
    assert await next_status(readiness) == SERVING  # the current status first
    assert await next_status(overall) == SERVING
    assert await next_status(liveness) == SERVING
    assert await next_status(nope) == SERVICE_UNKNOWN

    async def broken() -> bool:
        return False

    served.container.bundle.checks["broken"] = broken  # a backend check starts failing
    await served.server.health.refresh()
    assert await next_status(readiness) == NOT_SERVING
    assert await next_status(overall) == NOT_SERVING
    del served.container.bundle.checks["broken"]
    await served.server.health.refresh()
    assert await next_status(readiness) == SERVING
    assert await next_status(overall) == SERVING

    await served.server.health.shutdown()  # SIGTERM's first step
    assert await next_status(readiness) == NOT_SERVING
    assert await check(stub, "sso.v1.Auth") == NOT_SERVING
    assert await check(stub, "liveness") == SERVING  # draining, not dead
    await served.server.health.refresh()  # a late check result cannot undo the drain
    assert await check(stub, "readiness") == NOT_SERVING


async def test_event_loop_lag_fails_liveness(served: Running) -> None:
    stub = health_pb2_grpc.HealthStub(served.channel)
    liveness = stub.Watch(health_pb2.HealthCheckRequest(service="liveness")).__aiter__()
    assert await next_status(liveness) == SERVING
    time.sleep(1.0)  # the point: a blocked loop (limit 0.3 s)
    assert await next_status(liveness) == NOT_SERVING
    samples = await scrape(served.http)
    assert samples.value("sso_event_loop_lag_seconds") > 0.3
    assert await next_status(liveness) == SERVING  # the next tick is on time again
    assert await check(stub, "readiness") == SERVING  # readiness never depended on it


# -- M2 -----------------------------------------------------------------------------------------


@pytest.fixture
def private_pg() -> Iterator[PrivatePostgres]:
    server = PrivatePostgres()
    try:
        server.start()
        migrate.upgrade(server.url())
        yield server
    finally:
        server.destroy()


async def _poll(stub: health_pb2_grpc.HealthStub, want: int, timeout: float) -> list[float]:
    """Check readiness until it is `want`; every Check's latency in seconds."""
    latencies: list[float] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        started = time.perf_counter()
        status = await check(stub, "readiness")
        latencies.append(time.perf_counter() - started)
        if status == want:
            return latencies
        await asyncio.sleep(0.1)
    raise AssertionError(f"readiness never became {want}")


@pytest.mark.postgres
async def test_database_outage_is_readiness_not_liveness(
    tmp_path: Path, private_pg: PrivatePostgres
) -> None:
    running = await start(make_settings(tmp_path, private_pg.url()))
    try:
        stub = health_pb2_grpc.HealthStub(running.channel)
        liveness = stub.Watch(health_pb2.HealthCheckRequest(service="liveness")).__aiter__()
        readiness = stub.Watch(health_pb2.HealthCheckRequest(service="readiness")).__aiter__()
        assert await next_status(liveness) == SERVING
        assert await next_status(readiness) == SERVING

        await asyncio.to_thread(private_pg.stop)
        down = await _poll(stub, NOT_SERVING, timeout=15)
        assert await next_status(readiness) == NOT_SERVING
        body, _ = await asyncio.to_thread(fetch, f"{running.http}/healthz")
        assert "ok" in body
        with pytest.raises(Exception, match="503"):
            await asyncio.to_thread(fetch, f"{running.http}/readyz")
        outage: list[float] = []
        for _ in range(10):  # the outage goes on: liveness stays, every Check is instant
            started = time.perf_counter()
            assert await check(stub, "liveness") == SERVING
            outage.append(time.perf_counter() - started)
            assert await check(stub, "readiness") == NOT_SERVING
            await asyncio.sleep(0.3)

        await asyncio.to_thread(private_pg.start)
        await _poll(stub, SERVING, timeout=20)
        assert await next_status(readiness) == SERVING
        assert max(down + outage) < 0.1, (max(down), max(outage))
        # Liveness never changed: its stream has nothing new to say.
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(anext(liveness), timeout=0.5)
    finally:
        await stop(running)


@pytest.mark.redis
@pytest.mark.parametrize("requires_redis", [False, True])
async def test_redis_outage_degrades_unless_required(
    tmp_path: Path, sqlite_url: str, redis_factory, requires_redis: bool
) -> None:
    redis = redis_factory()
    settings = make_settings(tmp_path, sqlite_url, redis.url)
    settings.observability.readiness_requires_redis = requires_redis
    running = await start(settings)
    try:
        stub = health_pb2_grpc.HealthStub(running.channel)
        assert await check(stub, "readiness") == SERVING
        redis.stop()
        await running.server.health.refresh()  # what the 2 s background loop does
        samples = await scrape(running.http)
        assert samples.value("sso_health_check_up", check="redis") == 0
        assert samples.value("sso_health_check_up", check="database") == 1
        assert await check(stub, "liveness") == SERVING
        if requires_redis:
            assert await check(stub, "readiness") == NOT_SERVING
        else:  # SECURITY_CHECKLIST L1/M2: keep serving, rate limits per pod
            assert await check(stub, "readiness") == SERVING
            body, _ = await asyncio.to_thread(fetch, f"{running.http}/readyz")
            assert json.loads(body) == {"status": "ready", "degraded": ["redis"]}
    finally:
        await stop(running)


# -- M3 -----------------------------------------------------------------------------------------

IN_FLIGHT = 200
DRAIN_DELAY = 0.5


@pytest.mark.postgres
@pytest.mark.slow
async def test_sigterm_drains_200_in_flight_logins(tmp_path: Path, pg_url: str) -> None:
    serve = ServeProcess(
        tmp_path,
        {
            "SSO_DATABASE__URL": pg_url,
            "SSO_DATA_KEY": generate_data_key(),
            "SSO_KEYS__DIR": str(tmp_path / "keys"),
            "SSO_SERVER__DRAIN_DELAY": str(DRAIN_DELAY),
            "SSO_SERVER__SHUTDOWN_GRACE": "25",
            # Real argon2 (19 MiB as shipped), t=6 so each check takes ~60 ms and the
            # 200 together several seconds: all of them are still running at SIGTERM.
            "SSO_PASSWORDS__TIME_COST": "6",
            # 200 logins of one user in parallel must not trip the brute-force
            # defences this test is not about.
            "SSO_RATELIMIT__ENABLED": "false",
            "SSO_LOCKOUT__ENABLED": "false",
        },
    )
    serve.cli("keys", "ensure")
    serve.cli("apps", "ensure-demo")
    serve.start()
    channels = [grpc.aio.insecure_channel(serve.target) for _ in range(4)]
    watcher = grpc.aio.insecure_channel(serve.target)
    try:
        health = health_pb2_grpc.HealthStub(watcher)
        assert await check(health, "readiness") == SERVING
        email = "drain@example.com"
        stubs = [auth_pb2_grpc.AuthStub(c) for c in channels]
        await stubs[0].Register(auth_pb2.RegisterRequest(email=email, password=PASSWORD))
        readiness = health.Watch(health_pb2.HealthCheckRequest(service="readiness")).__aiter__()
        assert await next_status(readiness) == SERVING
        baseline = (await scrape(serve.http)).value("sso_grpc_requests_total", method=LOGIN)

        finished: list[float] = []

        async def login(i: int) -> grpc.StatusCode:
            request = auth_pb2.LoginRequest(email=email, password=PASSWORD, app_id=1)
            try:
                await stubs[i % len(stubs)].Login(request, timeout=60)
                return grpc.StatusCode.OK
            except grpc.aio.AioRpcError as error:
                return error.code()
            finally:
                finished.append(time.monotonic())

        calls = [asyncio.create_task(login(i)) for i in range(IN_FLIGHT)]
        # Accepted = the server has started handling it (in flight or already done).
        deadline = time.monotonic() + 20
        while True:
            samples = await scrape(serve.http)
            in_flight = samples.value("sso_grpc_requests_in_flight", method=LOGIN)
            handled = samples.value("sso_grpc_requests_total", method=LOGIN) - baseline
            if in_flight + handled >= IN_FLIGHT:
                break
            assert time.monotonic() < deadline, (in_flight, handled)
            await asyncio.sleep(0.02)

        sigterm = time.monotonic()
        os.kill(serve.pid, signal.SIGTERM)
        assert await next_status(readiness) == NOT_SERVING
        to_not_serving = time.monotonic() - sigterm
        assert await check(health, "liveness") == SERVING  # draining, still alive

        await asyncio.sleep(DRAIN_DELAY + 0.3)  # server.stop(grace) has begun
        request = auth_pb2.LoginRequest(email=email, password=PASSWORD, app_id=1)
        async with grpc.aio.insecure_channel(serve.target) as late:
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await auth_pb2_grpc.AuthStub(late).Login(request, timeout=5)
        assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
        with pytest.raises(grpc.aio.AioRpcError) as on_open_channel:
            await stubs[0].Login(request, timeout=5)
        assert on_open_channel.value.code() == grpc.StatusCode.UNAVAILABLE

        codes = await asyncio.gather(*calls)
        exit_code = await asyncio.to_thread(serve.wait, 30)
        exited = time.monotonic() - sigterm
    finally:
        for channel in [*channels, watcher]:
            await channel.close()
        serve.stop()
    after_stop = sum(1 for t in finished if t > sigterm + DRAIN_DELAY)
    failures = [c for c in codes if c != grpc.StatusCode.OK]
    print(
        f"\nM3: {IN_FLIGHT} accepted (in flight at SIGTERM: {in_flight:.0f}), "
        f"failures {len(failures)}, NOT_SERVING after {to_not_serving * 1000:.1f} ms, "
        f"{after_stop} completed after server.stop began, exit {exit_code} after {exited:.2f} s"
    )
    assert failures == [], failures
    assert to_not_serving < 0.1
    assert in_flight >= IN_FLIGHT * 0.75  # most were still running when SIGTERM came
    assert after_stop > 0  # the grace period, not the drain delay, finished some
    assert exit_code == 0, serve.output()
    assert exited < 30
