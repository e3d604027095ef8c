"""J1 to J3 at the API: message size, field limits before any database access, deadlines.

- J1: the server refuses a request over 64 KiB with RESOURCE_EXHAUSTED; one of
  exactly 64 KiB reaches the service.
- J2: every string field of every request is checked for NUL bytes and an octet
  limit (email ≤ 254, local part ≤ 64) in the interceptor, before any servicer
  runs: 0 SQL statements for such requests, and never INTERNAL.
- J3: a call without a client deadline is capped by the server; with one, the
  client's deadline rules. The database and Redis timeouts are in place.
"""

from __future__ import annotations

import asyncio
import io
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import observability_support as support
import psutil
import pytest
from google.protobuf.message import Message
from observability_support import Running, client_texts, log_lines, make_settings, start, stop
from sqlalchemy import event, text
from sqlalchemy.engine import Engine

from sso.api import interceptors
from sso.config import ServerSettings
from sso.storage.db import create_engine
from sso.storage.redis import create_redis
from sso_proto.auth import auth_pb2 as legacy_pb2
from sso_proto.sso.v1 import auth_pb2, auth_pb2_grpc, sessions_pb2

# Fixtures shared by the observability tests (bound here so pytest finds them).
obs_backend, obs_server, captured = support.obs_backend, support.obs_server, support.captured
S = grpc.StatusCode
KIB64 = 64 * 1024
STRONG = "correct horse battery staple"


def sized(make: Any, size: int) -> Message:
    """A request whose serialised size is exactly `size` bytes (padding the password)."""
    n = size
    while True:
        request: Message = make("p" * n)
        if request.ByteSize() == size:
            return request
        n -= request.ByteSize() - size


def method_call(channel: grpc.aio.Channel, path: str, request: Message, **kw: Any) -> Any:
    return channel.unary_unary(
        path,
        request_serializer=type(request).SerializeToString,
        response_deserializer=lambda raw: raw,
    )(request, **kw)


BIG = {
    "/sso.v1.Auth/Register": lambda p: auth_pb2.RegisterRequest(email="a@b.example", password=p),
    "/sso.v1.Auth/Login": lambda p: auth_pb2.LoginRequest(email="a@b.example", password=p),
    "/auth.Auth/Register": lambda p: legacy_pb2.RegisterRequest(email="a@b.example", password=p),
    "/auth.Auth/Login": lambda p: legacy_pb2.LoginRequest(email="a@b.ex", password=p, app_id=1),
}


@pytest.mark.parametrize("path", sorted(BIG))
async def test_64_kib_is_the_message_limit(obs_server: Running, path: str) -> None:
    at_limit, over = sized(BIG[path], KIB64), sized(BIG[path], KIB64 + 1)
    assert (at_limit.ByteSize(), over.ByteSize()) == (65536, 65537)
    _, texts, code = await client_texts(method_call(obs_server.channel, path, at_limit))
    assert code == S.INVALID_ARGUMENT and "password is too long" in texts  # it got in
    _, _, code = await client_texts(method_call(obs_server.channel, path, over))
    assert code == S.RESOURCE_EXHAUSTED


async def test_4_mib_requests_are_refused_with_stable_memory(obs_server: Running) -> None:
    request = auth_pb2.RegisterRequest(email="a@b.example", password="p" * (4 * 1024 * 1024 + 1))
    process = psutil.Process(os.getpid())
    codes, rss = [], []
    for _ in range(20):
        _, _, code = await client_texts(
            method_call(obs_server.channel, "/sso.v1.Auth/Register", request)
        )
        codes.append(code)
        rss.append(process.memory_info().rss)
    growth = (rss[-1] - rss[4]) / 2**20
    print(f"\n20 x 4 MiB+1 requests: RSS growth after warm-up {growth:.1f} MiB")
    assert set(codes) == {S.RESOURCE_EXHAUSTED}
    assert growth < 64


def email_of(local: int, total: int) -> str:
    """An address with a `local`-octet local part and `total` octets in all."""
    domain_len = total - local - 1 - len(".example")
    labels, rest = [], domain_len
    while rest > 0:
        take = min(63, rest if rest <= 63 else rest - 2)
        labels.append("d" * take)
        rest -= take + 1
    return "a" * local + "@" + ".".join(labels) + ".example"


async def test_email_octet_limits(obs_server: Running) -> None:
    stub = auth_pb2_grpc.AuthStub(obs_server.channel)
    ok_email = email_of(64, 254)
    assert len(ok_email.encode()) == 254
    await stub.Register(auth_pb2.RegisterRequest(email=ok_email, password=STRONG))
    too_long = [email_of(64, 255), "a" * 65 + "@example.com", "é" * 33 + "@example.com"]
    assert [len(e.encode()) for e in too_long][:1] == [255]
    for email in too_long:
        _, texts, code = await client_texts(
            stub.Register(auth_pb2.RegisterRequest(email=email, password=STRONG))
        )
        assert code == S.INVALID_ARGUMENT and "EMAIL_INVALID" in texts, email[:20]


def bad_requests() -> Iterator[tuple[str, str, Message]]:
    """(method, case, request) with one string field poisoned, for every field of every RPC."""
    for file in (legacy_pb2.DESCRIPTOR, auth_pb2.DESCRIPTOR, sessions_pb2.DESCRIPTOR):
        for service in file.services_by_name.values():
            for method in service.methods:
                cls = _message_class(method.input_type.full_name)
                for fd in method.input_type.fields:
                    if fd.type != fd.TYPE_STRING:
                        continue
                    limit = interceptors.FIELD_OCTETS.get(
                        fd.name, interceptors.DEFAULT_FIELD_OCTETS
                    )
                    path = f"/{service.full_name}/{method.name}"
                    for case, value in (("NUL", "ab\x00cd"), ("long", "x" * (limit + 1))):
                        yield path, f"{fd.name}:{case}", cls(**{fd.name: value})


def _message_class(full_name: str) -> Any:
    module = legacy_pb2 if full_name.startswith("auth.") else None
    if module is None:
        module = sessions_pb2 if "Session" in full_name else auth_pb2
    return getattr(module, full_name.rsplit(".", 1)[1])


@pytest.fixture
def sql_statements() -> Iterator[list[str]]:
    seen: list[str] = []

    def record(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        if statement.strip().upper() != "SELECT 1":  # readiness probes run meanwhile
            seen.append(statement)

    event.listen(Engine, "before_cursor_execute", record)
    yield seen
    event.remove(Engine, "before_cursor_execute", record)


async def test_poisoned_fields_are_refused_before_any_database_access(
    obs_server: Running, sql_statements: list[str]
) -> None:
    bearer = (("authorization", "Bearer x.y.z"),)
    results = []
    sql_statements.clear()
    for path, case, request in bad_requests():
        _, _, code = await client_texts(
            method_call(obs_server.channel, path, request, metadata=bearer)
        )
        results.append((path, case, code.name))
    print(f"\n{len(results)} poisoned requests, {len(sql_statements)} SQL statements")
    assert len(results) >= 30
    assert sql_statements == []
    wrong = [r for r in results if r[2] not in ("INVALID_ARGUMENT", "UNAUTHENTICATED")]
    assert wrong == []
    # Token fields answer as a bad token does; every other field as a bad argument.
    for _, case, code in results:
        name = case.split(":")[0]
        assert code == (
            "UNAUTHENTICATED" if name in interceptors.TOKEN_FIELDS else "INVALID_ARGUMENT"
        )


@pytest.fixture
async def capped(tmp_path: Path, sqlite_url: str, captured: io.StringIO) -> Any:
    settings = make_settings(tmp_path, sqlite_url)
    settings.server = settings.server.model_copy(update={"default_deadline": 0.3})
    running = await start(settings)
    yield running
    await stop(running)


async def test_server_caps_calls_without_a_deadline(
    capped: Running, captured: io.StringIO, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert ServerSettings().default_deadline == 10.0
    stub = auth_pb2_grpc.AuthStub(capped.channel)

    async def slow(*args: object, **kwargs: object) -> None:
        await asyncio.sleep(0.8)

    monkeypatch.setattr(capped.container.auth.users, "get_by_id", slow)
    started = time.perf_counter()
    _, texts, code = await client_texts(
        stub.IsAdmin(auth_pb2.IsAdminRequest(user_id=5), metadata=(("x-request-id", "cap-1"),))
    )
    elapsed = time.perf_counter() - started
    assert code == S.DEADLINE_EXCEEDED and "DEADLINE_EXCEEDED" in texts and elapsed < 0.7
    (line,) = [e for e in log_lines(captured) if e["request_id"] == "cap-1" and e["msg"] == "rpc"]
    assert line["code"] == "DEADLINE_EXCEEDED"
    # A client deadline, even a longer one, replaces the server's cap.
    _, _, code = await client_texts(stub.IsAdmin(auth_pb2.IsAdminRequest(user_id=5), timeout=5))
    assert code == S.NOT_FOUND
    # A timeout inside the service is not the server deadline: INTERNAL.

    async def inner_timeout(*args: object, **kwargs: object) -> None:
        raise TimeoutError("pool")

    monkeypatch.setattr(capped.container.auth.users, "get_by_id", inner_timeout)
    _, _, code = await client_texts(stub.IsAdmin(auth_pb2.IsAdminRequest(user_id=5)))
    assert code == S.INTERNAL


@pytest.mark.postgres
@pytest.mark.redis
async def test_database_and_redis_timeouts_are_set(
    tmp_path: Path, pg_url: str, redis_server: str
) -> None:
    settings = make_settings(tmp_path, pg_url, redis_server)
    engine = create_engine(settings.database)
    try:
        async with engine.connect() as conn:
            value = (await conn.execute(text("SHOW statement_timeout"))).scalar_one()
    finally:
        await engine.dispose()
    assert value == f"{settings.database.statement_timeout_ms // 1000}s"
    redis = create_redis(settings.redis)
    try:
        kwargs = redis.connection_pool.connection_kwargs
        assert (
            kwargs["socket_timeout"] == kwargs["socket_connect_timeout"] == settings.redis.timeout
        )
    finally:
        await redis.aclose()
