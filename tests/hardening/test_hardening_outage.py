"""L1 (Redis down), L2 (Redis hung) and both stores down, against a private Redis.

Decision 1: per-IP limits degrade to this process's counts, a log line and a
counter say so, the durable per-account lockout keeps holding, latency stays
bounded by the Redis timeout; with the database down too, Login is UNAVAILABLE.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from hardening_helpers import (
    PASSWORD,
    TcpProxy,
    add_users,
    c1_run,
    client_ip,
    login,
    percentile,
    settings,
)
from prometheus_client import REGISTRY
from sqlalchemy.engine import make_url
from sso_harness import Running

from sso.storage.ratelimit import RedisRateLimiter

pytestmark = [pytest.mark.postgres, pytest.mark.redis]

LIMITS = {
    "login_per_ip": 20,
    "login_per_email": 100_000,
    "trusted_proxies": ["127.0.0.1/32"],
    "breaker_cooldown": 1.0,
}


def _limiter(running: Running) -> RedisRateLimiter:
    limiter = running.container.auth.guard.limiter
    limiter = getattr(limiter, "inner", limiter)  # under the metrics wrapper
    assert isinstance(limiter, RedisRateLimiter)
    return limiter


def _degraded_metric() -> float:
    value = REGISTRY.get_sample_value("sso_ratelimit_degraded_total", {"rule": "login_ip"})
    return value or 0.0


async def _logins(running: Running, n: int, offset: int) -> list[float]:
    results = [
        await login(running, "ok@example.com", PASSWORD, ip=client_ip(offset + i)) for i in range(n)
    ]
    assert {code for code, _, _ in results} == {"OK"}, results
    return [seconds for _, seconds, _ in results]


async def test_l1_redis_down_local_limits_lockout_holds(
    serve, tmp_path: Path, pg_url: str, redis_factory: Callable, caplog: pytest.LogCaptureFixture
) -> None:
    redis = redis_factory()
    # A stopped Redis refuses connections at once: the timeout (default 250 ms) is not
    # what bounds this case, the breaker is (L2 covers a hung Redis).
    running = await serve(settings(tmp_path, pg_url, redis.url, ratelimit=LIMITS))
    await add_users(running, ["ok@example.com", "victim@example.com"])
    before = await _logins(running, 100, 0)
    assert not _limiter(running).degraded

    metric_before = _degraded_metric()
    redis.stop()
    with caplog.at_level(logging.WARNING, logger="sso.ratelimit"):
        after = await _logins(running, 100, 1000)
    p99_before, p99_after = percentile(before, 0.99) * 1000, percentile(after, 0.99) * 1000
    limiter = _limiter(running)
    degraded_lines = [r for r in caplog.records if "rate limiter degraded" in r.getMessage()]
    print(
        f"\nL1: login p99 {p99_before:.1f} ms with Redis, {p99_after:.1f} ms without;"
        f" degraded_total={limiter.degraded_total}, log lines={len(degraded_lines)},"
        f" sso_ratelimit_degraded_total{{rule=login_ip}} +{_degraded_metric() - metric_before:.0f}"
    )
    assert limiter.degraded and limiter.degraded_total >= 100
    assert len(degraded_lines) == 1  # one line when the breaker opens, not one per call
    assert _degraded_metric() - metric_before >= 100
    assert p99_after - p99_before < 100

    # The per-IP limit still holds, in this process.
    codes = [
        (await login(running, "ok@example.com", PASSWORD, ip="10.99.0.1"))[0] for _ in range(22)
    ]
    assert codes == ["OK"] * 20 + ["RESOURCE_EXHAUSTED"] * 2

    # C1 again: the per-account cap lives in PostgreSQL and does not care.
    verifications = await c1_run(running, "victim@example.com", 1000, 3600)
    print(f"L1: C1 re-run without Redis → {verifications} argon2 verifications")
    assert verifications <= 100


async def test_l2_hung_redis_costs_at_most_its_timeout_and_health_answers(
    serve, tmp_path: Path, pg_url: str, redis_factory: Callable
) -> None:
    redis = redis_factory()
    timeout = 0.1
    running = await serve(
        settings(tmp_path, pg_url, redis.url, ratelimit=LIMITS, redis_timeout=timeout)
    )
    await add_users(running, ["ok@example.com"])
    baseline = await _logins(running, 30, 0)
    health = health_pb2_grpc.HealthStub(running.channel)
    health_times: list[float] = []
    stop = asyncio.Event()

    async def probe() -> None:
        while not stop.is_set():
            started = time.perf_counter()
            await health.Check(health_pb2.HealthCheckRequest(service=""), timeout=5)
            health_times.append(time.perf_counter() - started)
            await asyncio.sleep(0.05)

    prober = asyncio.create_task(probe())
    os.kill(redis.process.pid, signal.SIGSTOP)
    try:
        hung: list[float] = []
        deadline = time.monotonic() + 3.0
        while time.monotonic() < deadline:
            hung += await _logins(running, 1, 100 + len(hung))
    finally:
        os.kill(redis.process.pid, signal.SIGCONT)
        stop.set()
        await prober
    worst = max(hung) * 1000
    print(
        f"\nL2: Redis stopped 3 s, timeout {timeout * 1000:.0f} ms: {len(hung)} logins,"
        f" max {worst:.1f} ms (baseline p99 {percentile(baseline, 0.99) * 1000:.1f} ms);"
        f" health Check max {max(health_times) * 1000:.1f} ms over {len(health_times)}"
    )
    assert worst < (timeout + percentile(baseline, 0.99)) * 1000 + 100
    assert max(health_times) < 0.1
    assert _limiter(running).degraded_total > 0

    await asyncio.sleep(1.1)  # the cooldown passes; the next call probes and recovers
    await _logins(running, 2, 500)
    assert not _limiter(running).degraded


async def test_both_stores_down_login_is_unavailable(
    serve, tmp_path: Path, pg_url: str, redis_factory: Callable
) -> None:
    redis = redis_factory()
    url = make_url(pg_url)
    proxy = await TcpProxy(url.host or "127.0.0.1", url.port or 5432).start()
    proxied = url.set(port=proxy.port).render_as_string(hide_password=False)
    running = await serve(
        settings(tmp_path, proxied, redis.url, ratelimit=LIMITS, redis_timeout=0.05)
    )
    await add_users(running, ["ok@example.com"])
    await _logins(running, 3, 0)
    redis.stop()
    await proxy.close()
    code, seconds, error = await login(running, "ok@example.com", PASSWORD, ip=client_ip(9))
    print(f"\nboth stores down: Login → {code} in {seconds * 1000:.1f} ms")
    assert code == "UNAVAILABLE", error
    assert seconds < 2.0
