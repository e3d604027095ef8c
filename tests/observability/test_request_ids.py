"""Request ids, access lines and the INTERNAL boundary (H5), through real gRPC calls.

Every RPC answers with `x-request-id` in its trailing metadata (the caller's
when well-formed, else a fresh one), every log line of the call carries it,
and exactly one access line per call records method, code and duration. An
unexpected exception becomes INTERNAL "internal error (ref=…)" and nothing
else; the traceback is logged under that ref.
"""

from __future__ import annotations

import asyncio
import io
import re
from pathlib import Path
from typing import Any

import grpc
import observability_support as support
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from observability_support import Running, client_texts, log_lines
from sso_harness import make_settings, start, stop

from sso_proto.auth import auth_pb2 as legacy_pb2
from sso_proto.auth import auth_pb2_grpc as legacy_grpc
from sso_proto.sso.v1 import auth_pb2, auth_pb2_grpc

# Fixtures shared by the observability tests (bound here so pytest finds them).
obs_backend, obs_server, captured = support.obs_backend, support.obs_server, support.captured
REF = re.compile(r"^internal error \(ref=([0-9a-f]{12})\)$")


def access_lines(stream: io.StringIO, request_id: str) -> list[dict[str, Any]]:
    return [e for e in log_lines(stream) if e["msg"] == "rpc" and e["request_id"] == request_id]


async def test_caller_request_id_is_echoed_and_logged(
    obs_server: Running, captured: io.StringIO
) -> None:
    stub = auth_pb2_grpc.AuthStub(obs_server.channel)
    call = stub.GetJwks(auth_pb2.GetJwksRequest(), metadata=(("x-request-id", "caller-id.1"),))
    await call
    assert ("x-request-id", "caller-id.1") in tuple(await call.trailing_metadata())
    (line,) = access_lines(captured, "caller-id.1")
    assert line["method"] == "/sso.v1.Auth/GetJwks" and line["code"] == "OK"
    assert isinstance(line["duration_ms"], float) and line["duration_ms"] >= 0
    assert line["client_ip"] == "127.0.0.1" and line["level"] == "INFO"


async def test_missing_or_malformed_ids_are_replaced(
    obs_server: Running, captured: io.StringIO
) -> None:
    stub = auth_pb2_grpc.AuthStub(obs_server.channel)
    for metadata in [(), (("x-request-id", "has spaces"),), (("x-request-id", "a" * 65),)]:
        call = stub.GetJwks(auth_pb2.GetJwksRequest(), metadata=metadata)
        await call
        ids = [v for k, v in await call.trailing_metadata() if k == "x-request-id"]
        assert len(ids) == 1 and re.fullmatch(r"[0-9a-f]{16}", ids[0])
        assert len(access_lines(captured, ids[0])) == 1


async def test_failures_carry_the_id_and_one_access_line(
    obs_server: Running, captured: io.StringIO
) -> None:
    stub = auth_pb2_grpc.AuthStub(obs_server.channel)
    request = auth_pb2.LoginRequest(email="nobody@example.com", password="x" * 12, app_id=1)
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await stub.Login(request, metadata=(("x-request-id", "fail-1"),))
    error = info.value
    trailers = tuple(error.trailing_metadata())
    assert ("x-request-id", "fail-1") in trailers
    assert [k for k, _ in trailers].count("x-request-id") == 1
    assert any(k == "grpc-status-details-bin" for k, _ in trailers)  # ErrorInfo kept
    lines = [e for e in log_lines(captured) if e["request_id"] == "fail-1"]
    (access,) = [e for e in lines if e["msg"] == "rpc"]
    assert access["code"] == error.code().name and access["method"] == "/sso.v1.Auth/Login"
    assert lines[-1] is access  # the access line is the call's last


async def test_concurrent_calls_keep_their_own_ids(
    obs_server: Running, captured: io.StringIO
) -> None:
    stub = auth_pb2_grpc.AuthStub(obs_server.channel)
    ids = [f"concurrent-{i}" for i in range(50)]
    calls = [
        stub.IsAdmin(auth_pb2.IsAdminRequest(user_id=10_000 + i), metadata=(("x-request-id", r),))
        for i, r in enumerate(ids)
    ]
    await asyncio.gather(*(client_texts(c) for c in calls))
    for rid, call in zip(ids, calls, strict=True):
        assert ("x-request-id", rid) in tuple(await call.trailing_metadata())
        (line,) = access_lines(captured, rid)
        assert line["code"] == "NOT_FOUND"


@pytest.mark.parametrize("api", ["v1", "legacy"])
async def test_forced_exception_is_generic_internal_with_logged_ref(
    obs_server: Running, captured: io.StringIO, monkeypatch: pytest.MonkeyPatch, api: str
) -> None:
    """H5. The fault (a repository raising RuntimeError with SQL in its message) cannot be
    produced for real, so the repository method is replaced for this call."""

    async def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("SELECT * FROM users WHERE id = 7 -- exploded")

    monkeypatch.setattr(obs_server.container.auth.users, "get_by_id", broken)
    metadata = (("x-request-id", f"boom-{api}"),)
    if api == "v1":
        call = auth_pb2_grpc.AuthStub(obs_server.channel).IsAdmin(
            auth_pb2.IsAdminRequest(user_id=7), metadata=metadata
        )
    else:
        call = legacy_grpc.AuthStub(obs_server.channel).IsAdmin(
            legacy_pb2.IsAdminRequest(user_id=7), metadata=metadata
        )
    _, texts, code = await client_texts(call)
    assert code is grpc.StatusCode.INTERNAL
    match = REF.match(texts.splitlines()[0])
    assert match is not None, texts
    assert "SELECT" not in texts and "RuntimeError" not in texts and "Traceback" not in texts
    (error,) = [e for e in log_lines(captured) if e.get("ref") == match.group(1)]
    assert error["level"] == "ERROR" and error["request_id"] == f"boom-{api}"
    assert "Traceback" in error["exc"] and "RuntimeError" in error["exc"]
    (access,) = access_lines(captured, f"boom-{api}")
    assert access["code"] == "INTERNAL"


@pytest.mark.parametrize("policy", ["writes", "errors"])
async def test_access_log_policy_leaves_out_only_what_it_says(
    tmp_path: Path, sqlite_url: str, captured: io.StringIO, policy: str
) -> None:
    """`server.access_log`: successful lookups (or all successes) write no line;
    failures always do, whatever the method."""
    settings = make_settings(tmp_path, sqlite_url)
    settings.server.access_log = policy  # type: ignore[assignment]
    running = await start(settings)
    try:
        stub = auth_pb2_grpc.AuthStub(running.channel)
        meta = (("x-request-id", f"{policy}-jwks"),)
        await stub.GetJwks(auth_pb2.GetJwksRequest(), metadata=meta)
        with pytest.raises(grpc.aio.AioRpcError):
            bad = auth_pb2.ValidateTokenRequest(token="a.b.c")
            await stub.ValidateToken(bad, metadata=(("x-request-id", f"{policy}-bad"),))
        email = f"{policy}@example.com"
        register = auth_pb2.RegisterRequest(email=email, password="correct horse battery 9")
        await stub.Register(register, metadata=(("x-request-id", f"{policy}-reg"),))
        assert access_lines(captured, f"{policy}-jwks") == []
        (failed,) = access_lines(captured, f"{policy}-bad")
        assert failed["method"] == "/sso.v1.Auth/ValidateToken" and failed["code"] != "OK"
        logged = access_lines(captured, f"{policy}-reg")
        assert len(logged) == (1 if policy == "writes" else 0)
    finally:
        await stop(running)


async def test_a_servicers_own_abort_keeps_the_id(obs_server: Running) -> None:
    """The health servicer aborts by itself (NOT_FOUND, no trailers of its own)."""
    stub = health_pb2_grpc.HealthStub(obs_server.channel)
    request = health_pb2.HealthCheckRequest(service="no.such.Service")
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await stub.Check(request, metadata=(("x-request-id", "health-404"),))
    assert info.value.code() is grpc.StatusCode.NOT_FOUND
    assert ("x-request-id", "health-404") in tuple(info.value.trailing_metadata())
