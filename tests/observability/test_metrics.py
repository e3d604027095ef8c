"""Prometheus metrics as a scraper sees them: `/metrics` in-process and from `sso serve --workers`.

In-process (SQLite, and PostgreSQL + Redis): the gRPC interceptor's counters,
per-method histograms and in-flight gauge; the business and security counters
moving after real calls; database and Redis metrics; labels that never carry a
user's email, id or address. Then a real `sso serve --workers 2`: every scrape,
whichever worker answers it, reports the sum over both workers
(prometheus-client multiprocess mode), and a killed worker's live gauges go.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest
from telemetry_support import (
    PASSWORD,
    Running,
    Samples,
    ServeProcess,
    embedded_env,
    fetch,
    make_settings,
    scrape,
    start,
    stop,
)

from sso.config import LockoutSettings, RateLimitSettings
from sso_proto.sso.v1 import auth_pb2, auth_pb2_grpc

LOGIN = "/sso.v1.Auth/Login"


@pytest.fixture(
    params=[
        pytest.param("sqlite"),
        pytest.param("postgres+redis", marks=[pytest.mark.postgres, pytest.mark.redis]),
    ]
)
async def metered(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Running]:
    if request.param == "sqlite":
        urls: tuple[str, str | None] = (str(request.getfixturevalue("sqlite_url")), None)
    else:
        urls = (
            str(request.getfixturevalue("pg_url")),
            str(request.getfixturevalue("redis_server")),
        )
    running = await start(make_settings(tmp_path, *urls))
    yield running
    await stop(running)


async def _rpc_error(call: object) -> grpc.StatusCode:
    try:
        await call  # type: ignore[misc]
    except grpc.aio.AioRpcError as error:
        return error.code()
    return grpc.StatusCode.OK


async def test_scrape_after_real_calls(metered: Running) -> None:
    stub = auth_pb2_grpc.AuthStub(metered.channel)
    email = "metrics.user@example.com"
    before = await scrape(metered.http)

    await stub.Register(auth_pb2.RegisterRequest(email=email, password=PASSWORD))
    login = await stub.Login(
        auth_pb2.LoginRequest(email=email, password=PASSWORD, app_id=metered.app.id)
    )
    bad = auth_pb2.LoginRequest(email=email, password="wrong " + PASSWORD, app_id=metered.app.id)
    assert await _rpc_error(stub.Login(bad)) == grpc.StatusCode.UNAUTHENTICATED
    await stub.ValidateToken(auth_pb2.ValidateTokenRequest(token=login.tokens.access_token))
    assert (
        await _rpc_error(stub.ValidateToken(auth_pb2.ValidateTokenRequest(token="x.y.z")))
        == grpc.StatusCode.UNAUTHENTICATED
    )
    first = login.tokens.refresh_token
    second = (await stub.Refresh(auth_pb2.RefreshRequest(refresh_token=first))).tokens
    await stub.Refresh(auth_pb2.RefreshRequest(refresh_token=second.refresh_token))
    reuse = stub.Refresh(auth_pb2.RefreshRequest(refresh_token=first))  # two generations back
    assert await _rpc_error(reuse) == grpc.StatusCode.UNAUTHENTICATED

    body, content_type = await asyncio.to_thread(fetch, f"{metered.http}/metrics")
    assert content_type.startswith("text/plain")
    after = Samples(body)

    def delta(name: str, **labels: str) -> float:
        return after.value(name, **labels) - before.value(name, **labels)

    # gRPC interceptor: counts by method and code, errors, per-method histograms, in-flight.
    assert delta("sso_grpc_requests_total", method=LOGIN, code="OK") == 1
    assert delta("sso_grpc_requests_total", method=LOGIN, code="UNAUTHENTICATED") == 1
    assert delta("sso_grpc_errors_total", method=LOGIN, code="UNAUTHENTICATED") == 1
    assert delta("sso_grpc_errors_total", method=LOGIN, code="OK") == 0
    assert delta("sso_grpc_request_duration_seconds_count", method=LOGIN) == 2
    assert after.types["sso_grpc_request_duration_seconds"] == "histogram"
    buckets = [lab["le"] for lab in after.labels("sso_grpc_request_duration_seconds_bucket")]
    assert "+Inf" in buckets and "0.1" in buckets
    assert after.value("sso_grpc_request_duration_seconds_bucket", method=LOGIN, le="+Inf") >= 2
    for method in ("Register", "Refresh", "ValidateToken"):
        assert after.has(
            "sso_grpc_request_duration_seconds_bucket", method=f"/sso.v1.Auth/{method}"
        )
    assert after.has("sso_grpc_requests_in_flight", method=LOGIN)
    assert after.value("sso_grpc_requests_in_flight") == 0

    # Business and security counters, fed by the security events and the interceptor.
    assert delta("sso_registrations_total") == 1
    assert delta("sso_logins_total", result="success") == 1
    assert delta("sso_logins_total", result="failure") == 1
    assert delta("sso_login_failures_total", reason="bad_password") == 1
    assert delta("sso_token_validations_total", result="valid") == 1
    assert delta("sso_token_validations_total", result="invalid") == 1
    assert delta("sso_token_refreshes_total") == 2
    assert delta("sso_refresh_token_reuse_total") == 1
    assert delta("sso_security_events_total", event="authn_login_success", outcome="success") == 1

    # Database: statement histogram by operation, pool gauges.
    assert delta("sso_db_query_duration_seconds_count", operation="SELECT") > 0
    assert delta("sso_db_query_duration_seconds_count", operation="INSERT") > 0
    assert after.types["sso_db_query_duration_seconds"] == "histogram"
    for gauge in ("sso_db_pool_size", "sso_db_pool_checked_out", "sso_db_pool_overflow"):
        assert gauge in after.types
    if metered.settings.redis.url is not None:
        # The denylist: SET + PUBLISH (one MULTI) on the reuse (session revoked); validations
        # read the process's copy of the denylist (no EXISTS while it is in sync).
        assert delta("sso_redis_command_duration_seconds_count", command="MULTI") >= 1
        assert after.types["sso_redis_command_duration_seconds"] == "histogram"

    # No personal data in any label: not the email, not the user id, not the address.
    user_id = str(login.tokens.session_id)  # an identifier that must never be a label
    for _name, labels, _value in after.rows:
        values = " ".join(labels.values())
        assert "@" not in values and "127.0.0.1" not in values and user_id not in values


async def test_rate_limits_and_lockouts_are_counted(tmp_path: Path, sqlite_url: str) -> None:
    settings = make_settings(tmp_path, sqlite_url)
    settings.ratelimit = RateLimitSettings(login_per_email=3, login_per_ip=100_000)
    settings.lockout = LockoutSettings(threshold=2)
    running = await start(settings)
    try:
        stub = auth_pb2_grpc.AuthStub(running.channel)
        email = "locked.user@example.com"
        await stub.Register(auth_pb2.RegisterRequest(email=email, password=PASSWORD))
        before = await scrape(running.http)
        wrong = auth_pb2.LoginRequest(
            email=email, password="nope " + PASSWORD, app_id=running.app.id
        )
        codes = [await _rpc_error(stub.Login(wrong)) for _ in range(4)]
        assert codes[:3] == [grpc.StatusCode.UNAUTHENTICATED] * 3
        assert codes[3] == grpc.StatusCode.RESOURCE_EXHAUSTED
        after = await scrape(running.http)
    finally:
        await stop(running)

    def delta(name: str, **labels: str) -> float:
        return after.value(name, **labels) - before.value(name, **labels)

    # 1st: bad password; 2nd: bad password that locks; 3rd: refused, locked; 4th: throttled.
    assert delta("sso_login_failures_total", reason="bad_password") == 2
    assert delta("sso_lockouts_total", kind="temporary") == 1
    assert delta("sso_logins_total", result="locked") == 1
    assert delta("sso_rate_limited_total", rule="login_email") == 1
    assert delta("sso_grpc_errors_total", method=LOGIN, code="RESOURCE_EXHAUSTED") == 1


@pytest.mark.redis
async def test_redis_outage_counts_errors_and_degraded_limits(
    tmp_path: Path, sqlite_url: str, redis_factory
) -> None:
    redis = redis_factory()
    running = await start(make_settings(tmp_path, sqlite_url, redis.url))
    try:
        stub = auth_pb2_grpc.AuthStub(running.channel)
        await stub.Register(auth_pb2.RegisterRequest(email="r@example.com", password=PASSWORD))
        before = await scrape(running.http)
        redis.stop()
        login = auth_pb2.LoginRequest(
            email="r@example.com", password=PASSWORD, app_id=running.app.id
        )
        await stub.Login(login)  # the limits fall back to this process: the login still works
        after = await scrape(running.http)
    finally:
        await stop(running)
    assert (
        after.value("sso_ratelimit_degraded_total") - before.value("sso_ratelimit_degraded_total")
        >= 1
    )
    assert after.value("sso_redis_errors_total") - before.value("sso_redis_errors_total") >= 1
    assert after.has("sso_redis_errors_total", command="EVALSHA")


# -- sso serve --workers 2 -------------------------------------------------------------------


async def test_two_workers_report_one_sum(tmp_path: Path) -> None:
    metrics_dir = tmp_path / "prom"
    serve = ServeProcess(
        tmp_path,
        embedded_env(tmp_path, PROMETHEUS_MULTIPROC_DIR=str(metrics_dir)),
        ("--workers", "2"),
    )
    metrics_dir.mkdir()
    (metrics_dir / "counter_999999.db").write_bytes(b"stale")  # a previous run's: removed
    serve.cli("migrate")
    serve.cli("keys", "ensure")
    serve.cli("apps", "ensure-demo")
    serve.start()
    try:
        workers = serve.children()
        assert len(workers) == 2
        async with grpc.aio.insecure_channel(serve.target) as channel:
            await auth_pb2_grpc.AuthStub(channel).Register(
                auth_pb2.RegisterRequest(email="w@example.com", password=PASSWORD)
            )
        logins = 24
        for _ in range(logins):  # a new connection each time: the kernel spreads them
            async with grpc.aio.insecure_channel(serve.target) as channel:
                await auth_pb2_grpc.AuthStub(channel).Login(
                    auth_pb2.LoginRequest(email="w@example.com", password=PASSWORD, app_id=1)
                )
        files = {p.name for p in metrics_dir.iterdir()}
        assert "counter_999999.db" not in files
        assert all(f"counter_{pid}.db" in files for pid in workers), files  # both served calls
        scrapes = [await scrape(serve.http) for _ in range(8)]  # answered by either worker
        for samples in scrapes:
            assert samples.value("sso_logins_total", result="success") == logins
            assert samples.value("sso_grpc_requests_total", method=LOGIN, code="OK") == logins
            assert samples.value("sso_grpc_request_duration_seconds_count", method=LOGIN) == logins
            assert samples.value("sso_registrations_total") == 1
            assert samples.has("sso_grpc_requests_in_flight", method=LOGIN)
            assert samples.has("sso_db_query_duration_seconds_bucket", operation="SELECT")

        # A worker dies: its live gauges are dropped, its counters still count.
        os.kill(workers[0], signal.SIGKILL)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and any(
            str(workers[0]) in p.name and "livesum" in p.name for p in metrics_dir.iterdir()
        ):
            await asyncio.sleep(0.1)
        assert not [p for p in metrics_dir.iterdir() if f"livesum_{workers[0]}" in p.name]
        samples = await scrape(serve.http)
        assert samples.value("sso_logins_total", result="success") == logins
    finally:
        code = serve.stop()
    assert code in (0, -signal.SIGKILL), serve.output()
    assert metrics_dir.is_dir()  # given by the operator: kept
