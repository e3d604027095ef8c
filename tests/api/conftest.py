"""An in-process SSO server on a free port, over real SQLite or real PostgreSQL (+ Redis).

`sso_server` runs the exact composition the `sso serve` command runs (Container
+ SSOServer); only the argon2 cost is lowered (m=8 MiB, t=1) so the suite can
afford thousands of hashes. Tests talk to it over real gRPC channels.
"""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import grpc
import pytest

from sso.api.server import SSOServer
from sso.app import Container
from sso.config import (
    DatabaseSettings,
    KeySettings,
    PasswordSettings,
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
        redis=RedisSettings(url=redis_url),
        keys=KeySettings(dir=tmp / "keys", generate_if_missing=False),
        server=ServerSettings(host="127.0.0.1", port=0, http_host="127.0.0.1", http_port=0),
        passwords=PasswordSettings(memory_kib=8192, time_cost=1, workers=2, max_queue=4096),
        tokens=TokenSettings(issuer="http://127.0.0.1/sso", **tokens),  # type: ignore[arg-type]
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


@pytest.fixture
async def sso_server(tmp_path: Path, db_url: str) -> AsyncIterator[Running]:
    """The service on SQLite and on PostgreSQL (parametrised by `db_url`)."""
    running = await start(make_settings(tmp_path, db_url))
    yield running
    await stop(running)


@pytest.fixture
async def sso_pg_redis(tmp_path: Path, pg_url: str, redis_server: str) -> AsyncIterator[Running]:
    """The production shape: PostgreSQL + Redis."""
    running = await start(make_settings(tmp_path, pg_url, redis_server))
    yield running
    await stop(running)


def short_lived(**kwargs: timedelta) -> dict[str, timedelta]:
    return kwargs
