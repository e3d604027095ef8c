"""The Redis client of the service, configured for failing fast.

Redis sits on the request path (rate limits, the revocation denylist), so a
dead or slow Redis must cost at most about `RedisSettings.timeout` per call and
surface as `Unavailable` (callers then fall back, DESIGN.md §2), never hang.
redis-py's default retry policy (three attempts with exponential backoff up to
seconds) is replaced by a single immediate retry on a broken connection, which
covers a server restart without stretching an outage into seconds of latency.
Replies are parsed by hiredis when it is installed (it is: `redis[hiredis]`).
"""

from __future__ import annotations

from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError

from sso.config import RedisSettings
from sso.storage.errors import redis_errors

# Seconds a pooled connection may sit idle before it is PINGed on checkout.
HEALTH_CHECK_INTERVAL = 30
MAX_CONNECTIONS = 256


def create_redis(settings: RedisSettings) -> Redis:
    """A `redis.asyncio.Redis` for `settings.url` with socket timeouts from settings."""
    if settings.url is None:
        raise ValueError("RedisSettings.url is not set (embedded mode uses in-process adapters)")
    return Redis.from_url(
        settings.url.get_secret_value(),
        socket_timeout=settings.timeout,
        socket_connect_timeout=settings.timeout,
        retry=Retry(NoBackoff(), 1, supported_errors=(RedisConnectionError,)),
        health_check_interval=HEALTH_CHECK_INTERVAL,
        max_connections=MAX_CONNECTIONS,
        decode_responses=False,
    )


async def ping(redis: Redis) -> None:
    """Readiness check: `Unavailable` unless Redis answers PING within the socket timeout."""
    with redis_errors():
        await redis.ping()
