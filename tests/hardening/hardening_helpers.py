"""Helpers for the hardening tests: settings, a fake clock, logins, audit rows, a TCP proxy."""

from __future__ import annotations

import asyncio
import contextlib
import statistics
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import grpc
from sqlalchemy import select
from sso_harness import Running, make_settings

from sso.config import LockoutSettings, PasswordSettings, RateLimitSettings, Settings
from sso.storage.db import create_engine
from sso.storage.tables import audit_events
from sso_proto.sso.v1 import auth_pb2, auth_pb2_grpc

PASSWORD = "correct horse battery staple"
WRONG = "incorrect horse battery staple"
# The OWASP argon2id floor the service ships with (B1 and A6 need the real cost).
REAL_ARGON2 = {"memory_kib": 19456, "time_cost": 2}


def settings(
    tmp: Path,
    db_url: str,
    redis_url: str | None = None,
    *,
    ratelimit: dict[str, Any] | None = None,
    lockout: dict[str, Any] | None = None,
    passwords: dict[str, Any] | None = None,
    database: dict[str, Any] | None = None,
    redis_timeout: float | None = None,
) -> Settings:
    """The harness settings with some fields of some groups replaced."""
    base = make_settings(tmp, db_url, redis_url)
    update: dict[str, Any] = {}
    if ratelimit is not None:
        update["ratelimit"] = RateLimitSettings(**(base.ratelimit.model_dump() | ratelimit))
    if lockout is not None:
        update["lockout"] = LockoutSettings(**(base.lockout.model_dump() | lockout))
    if passwords is not None:
        update["passwords"] = PasswordSettings(**(base.passwords.model_dump() | passwords))
    if database is not None:
        update["database"] = base.database.model_copy(update=database)
    if redis_timeout is not None:
        update["redis"] = base.redis.model_copy(update={"timeout": redis_timeout})
    return base.model_copy(update=update)


@dataclass
class FakeClock:
    now: datetime = field(default_factory=lambda: datetime(2026, 11, 28, 12, 0, tzinfo=UTC))

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


async def add_users(running: Running, emails: Sequence[str], password: str = PASSWORD) -> None:
    """Create accounts directly (one hash shared by all: no per-user argon2 cost)."""
    auth = running.container.auth
    password_hash = await auth.hasher.hash(password)
    for email in emails:
        await auth.users.create(email, password_hash)


def stub(running: Running) -> auth_pb2_grpc.AuthStub:
    return auth_pb2_grpc.AuthStub(running.channel)


async def login(
    running: Running, email: str, password: str, *, ip: str | None = None, timeout: float = 30
) -> tuple[str, float, grpc.aio.AioRpcError | None]:
    """One v1 Login: (status code name, seconds, the error or None)."""
    metadata = (("x-forwarded-for", ip),) if ip else None
    request = auth_pb2.LoginRequest(email=email, password=password, app_id=running.app.id)
    started = time.perf_counter()
    try:
        await stub(running).Login(request, metadata=metadata, timeout=timeout)
    except grpc.aio.AioRpcError as error:
        return error.code().name, time.perf_counter() - started, error
    return "OK", time.perf_counter() - started, None


def trailers(error: grpc.aio.AioRpcError) -> tuple[tuple[str, Any], ...]:
    """The error's trailers but the per-call `x-request-id`: what must not tell answers apart."""
    return tuple(kv for kv in error.trailing_metadata() or () if kv[0] != "x-request-id")


def hash_calls(running: Running) -> int:
    return int(running.container.auth.hasher.calls)  # type: ignore[attr-defined]


def percentile(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def median_ms(values: Sequence[float]) -> float:
    return statistics.median(values) * 1000


async def audit_rows(db_url: str) -> list[dict[str, Any]]:
    from sso.config import DatabaseSettings

    engine = create_engine(DatabaseSettings(url=db_url))
    try:
        async with engine.connect() as conn:
            rows = await conn.execute(select(audit_events).order_by(audit_events.c.id))
            return [dict(r._mapping) for r in rows]
    finally:
        await engine.dispose()


class TcpProxy:
    """A TCP forwarder in this process: `close()` makes the backend look down (refused)."""

    def __init__(self, host: str, port: int) -> None:
        self._target = (host, port)
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self.port = 0

    async def start(self) -> TcpProxy:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection(*self._target)
        except OSError:
            writer.close()
            return
        self._writers |= {writer, up_writer}

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            with contextlib.suppress(Exception):
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            with contextlib.suppress(Exception):
                dst.close()

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None
        for writer in self._writers:
            with contextlib.suppress(Exception):
                writer.transport.abort()
        self._writers.clear()


def client_ip(i: int) -> str:
    """The i-th of many distinct client addresses (10.x.y.z)."""
    return f"10.{i // 62500 % 250}.{i // 250 % 250}.{i % 250 + 1}"


async def c1_run(running: Running, email: str, attempts: int, seconds: float) -> int:
    """C1: `attempts` wrong passwords, each from its own IP, over `seconds` of (fake) time.

    Returns the argon2 verifications it cost.
    """
    clock = FakeClock()
    running.container.auth.clock = clock
    batch = 20
    before = hash_calls(running)
    codes: Counter[str] = Counter()
    for start in range(0, attempts, batch):
        results = await asyncio.gather(
            *(login(running, email, WRONG, ip=client_ip(i)) for i in range(start, start + batch))
        )
        codes.update(code for code, _, _ in results)
        clock.advance(seconds * batch / attempts)
    assert codes == {"UNAUTHENTICATED": attempts}, codes
    return hash_calls(running) - before
