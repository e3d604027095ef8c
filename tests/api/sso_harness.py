"""Starting the real service in-process for tests: the composition `sso serve` runs.

Container + SSOServer on free ports, with only the argon2 cost lowered
(m=8 MiB, t=1) so the suite can afford thousands of hashes, and the per-IP
rate limits raised (every test client is 127.0.0.1). Tests talk to it
over real gRPC channels.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from pathlib import Path

import grpc

from sso.api.server import SSOServer
from sso.app import Container
from sso.config import (
    DatabaseSettings,
    KeySettings,
    PasswordSettings,
    RateLimitSettings,
    RedisSettings,
    ServerSettings,
    Settings,
    TokenSettings,
)
from sso.domain.models import App
from sso.security import keys as keyset
from sso.security.secretbox import generate_data_key


@dataclass
class Running:
    settings: Settings
    container: Container
    server: SSOServer
    channel: grpc.aio.Channel
    app: App

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.server.port}"

    @property
    def http(self) -> str:
        return f"http://127.0.0.1:{self.server.http_port}"


def make_settings(
    tmp: Path, db_url: str, redis_url: str | None = None, **tokens: object
) -> Settings:
    keyset.ensure(tmp / "keys", "RS256")
    return Settings(
        home=tmp,
        data_key=generate_data_key(),
        database=DatabaseSettings(url=db_url),
        # A key prefix per server: tests share one Redis and must not share counters.
        redis=RedisSettings(url=redis_url, key_prefix=f"sso-{secrets.token_hex(4)}:"),
        keys=KeySettings(dir=tmp / "keys", generate_if_missing=False),
        server=ServerSettings(host="127.0.0.1", port=0, http_host="127.0.0.1", http_port=0),
        passwords=PasswordSettings(memory_kib=8192, time_cost=1, workers=2, max_queue=4096),
        tokens=TokenSettings(issuer="http://127.0.0.1/sso", **tokens),  # type: ignore[arg-type]
        # Every test client is 127.0.0.1: per-IP limits high enough for load tests
        # (tests/hardening sets production-like ones where it measures them).
        ratelimit=RateLimitSettings(login_per_ip=100_000, register_per_ip=100_000),
        cleanup_interval=0,
    )


async def start(settings: Settings) -> Running:
    container = await Container.build(settings)
    server = SSOServer(container.bundle, settings.server)
    await server.start(reuse_port=False)
    app = await container.auth.apps.create(f"app-{secrets.token_hex(4)}", secrets.token_urlsafe(32))
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{server.port}")
    return Running(settings, container, server, channel, app)


async def stop(running: Running) -> None:
    await running.channel.close()
    await running.server.stop(grace=1)
    await running.container.close()
