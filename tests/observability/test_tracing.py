"""Tracing end to end: the service exports OTLP/gRPC to a real receiver started by the test.

The receiver is the collector's own `TraceService` (from `opentelemetry-proto`)
on a free port; the service is configured only through the standard `OTEL_*`
variables. A client sends a W3C `traceparent` in the call metadata; the Login's
SERVER span must continue that trace (same trace id, the client's span as
parent) and the PostgreSQL statements must be its CLIENT children; a
Logout's Redis command likewise. The log lines of the call carry the
trace id. Without an exporter configured, nothing is set up at all.
"""

from __future__ import annotations

import asyncio
import io
import json
import logging
import secrets
import threading
import time
from collections.abc import AsyncIterator, Iterator
from concurrent import futures
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import pytest
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc
from opentelemetry.proto.trace.v1 import trace_pb2
from telemetry_support import PASSWORD, Running, free_port, make_settings, start, stop

from sso import logs
from sso.api.tracing import setup_tracing
from sso.config import LogSettings, ObservabilitySettings
from sso_proto.sso.v1 import auth_pb2, auth_pb2_grpc

SERVER = trace_pb2.Span.SpanKind.SPAN_KIND_SERVER
CLIENT = trace_pb2.Span.SpanKind.SPAN_KIND_CLIENT


@dataclass
class Receiver(trace_service_pb2_grpc.TraceServiceServicer):
    """An OTLP trace receiver: keeps every exported span with its resource attributes."""

    spans: list[tuple[dict[str, Any], trace_pb2.Span]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def Export(
        self, request: trace_service_pb2.ExportTraceServiceRequest, context: Any
    ) -> trace_service_pb2.ExportTraceServiceResponse:
        with self.lock:
            for resource_spans in request.resource_spans:
                resource = _attributes(resource_spans.resource.attributes)
                for scope_spans in resource_spans.scope_spans:
                    self.spans.extend((resource, span) for span in scope_spans.spans)
        return trace_service_pb2.ExportTraceServiceResponse()

    def of_trace(self, trace_id: str) -> list[trace_pb2.Span]:
        with self.lock:
            return [s for _, s in self.spans if s.trace_id.hex() == trace_id]


def _attributes(items: Any) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for item in items:
        kind = item.value.WhichOneof("value")
        out[item.key] = getattr(item.value, kind) if kind else None
    return out


@pytest.fixture
def receiver(monkeypatch: pytest.MonkeyPatch) -> Iterator[Receiver]:
    """A real OTLP/gRPC receiver, and the service's OTEL_* environment pointing at it."""
    servicer = Receiver()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(servicer, server)
    port = free_port()
    server.add_insecure_port(f"127.0.0.1:{port}")
    server.start()
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", f"http://127.0.0.1:{port}")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_INSECURE", "true")
    monkeypatch.setenv("OTEL_SERVICE_NAME", "sso-under-test")
    monkeypatch.setenv("OTEL_BSP_SCHEDULE_DELAY", "50")
    monkeypatch.delenv("OTEL_TRACES_EXPORTER", raising=False)
    monkeypatch.delenv("OTEL_SDK_DISABLED", raising=False)
    yield servicer
    server.stop(grace=None)


@pytest.fixture
def log_stream() -> Iterator[io.StringIO]:
    stream = io.StringIO()
    root = logging.getLogger()
    level = root.level
    handler = logs.configure("INFO", stream, LogSettings(), replace=False)
    yield stream
    root.removeHandler(handler)
    root.setLevel(level)


@pytest.fixture
async def traced(
    tmp_path: Path, pg_url: str, redis_server: str, receiver: Receiver, log_stream: io.StringIO
) -> AsyncIterator[Running]:
    running = await start(make_settings(tmp_path, pg_url, redis_server))
    yield running
    await stop(running)


def traceparent() -> tuple[str, str, str]:
    trace_id, span_id = secrets.token_hex(16), secrets.token_hex(8)
    return trace_id, span_id, f"00-{trace_id}-{span_id}-01"


async def spans_of(receiver: Receiver, trace_id: str, until: Any) -> list[trace_pb2.Span]:
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        spans = receiver.of_trace(trace_id)
        if until(spans):
            return spans
        await asyncio.sleep(0.05)
    raise AssertionError(f"spans never arrived: {[s.name for s in receiver.of_trace(trace_id)]}")


def tree(spans: list[trace_pb2.Span], root: trace_pb2.Span, depth: int = 0) -> list[str]:
    lines = [f"{'  ' * depth}{root.name} [{trace_pb2.Span.SpanKind.Name(root.kind)[10:]}]"]
    for child in sorted(spans, key=lambda s: s.start_time_unix_nano):
        if child.parent_span_id == root.span_id:
            lines += tree(spans, child, depth + 1)
    return lines


@pytest.mark.postgres
@pytest.mark.redis
async def test_login_span_tree(
    traced: Running, receiver: Receiver, log_stream: io.StringIO
) -> None:
    stub = auth_pb2_grpc.AuthStub(traced.channel)
    email = "traced@example.com"
    await stub.Register(auth_pb2.RegisterRequest(email=email, password=PASSWORD))
    trace_id, parent_id, header = traceparent()
    login = await stub.Login(
        auth_pb2.LoginRequest(email=email, password=PASSWORD, app_id=traced.app.id),
        metadata=(("traceparent", header),),
    )

    def complete(spans: list[trace_pb2.Span]) -> bool:
        server = [s for s in spans if s.kind == SERVER]
        return bool(server) and any(s.parent_span_id == server[0].span_id for s in spans)

    spans = await spans_of(receiver, trace_id, complete)
    await asyncio.sleep(0.3)  # let a second batch (if any) land
    spans = receiver.of_trace(trace_id)
    (server,) = [s for s in spans if s.kind == SERVER]
    print("\n".join(tree(spans, server)))

    # The server span continues the caller's trace.
    assert server.name == "sso.v1.Auth/Login"
    assert server.parent_span_id.hex() == parent_id
    attributes = _attributes(server.attributes)
    assert attributes["rpc.system"] == "grpc"
    assert attributes["rpc.service"] == "sso.v1.Auth"
    assert attributes["rpc.method"] == "Login"
    assert attributes["rpc.grpc.status_code"] == 0
    assert server.status.code == trace_pb2.Status.STATUS_CODE_UNSET

    # Every statement and Redis command of the login is a CLIENT child of it, inside its time.
    children = [s for s in spans if s.parent_span_id == server.span_id]
    assert children and all(s.kind == CLIENT for s in children)
    by_system: dict[str, list[dict[str, Any]]] = {}
    for child in children:
        child_attributes = _attributes(child.attributes)
        by_system.setdefault(child_attributes["db.system.name"], []).append(child_attributes)
        assert PASSWORD not in str(child_attributes) and email not in str(child_attributes)
        assert server.start_time_unix_nano <= child.start_time_unix_nano
        assert child.end_time_unix_nano <= server.end_time_unix_nano
    sql = by_system.pop("postgresql")
    assert {"SELECT", "INSERT"} <= {a["db.operation.name"] for a in sql}
    assert all(a["db.query.text"] and a["db.namespace"] for a in sql)
    # The per-IP and per-email rate limits: one EVALSHA each; this first Login of the
    # app also misses the Redis app cache (MGET) and fills it (one EVALSHA).
    # (SCRIPT LOAD when the cache's fill script is not loaded yet).
    redis_ops = [a["db.operation.name"] for a in by_system.pop("redis")]
    assert redis_ops.count("EVALSHA") >= 3 and redis_ops.count("MGET") == 1
    assert set(redis_ops) <= {"EVALSHA", "MGET", "SCRIPT"}
    assert not by_system
    assert len(spans) == 1 + len(children)  # nothing else, nothing orphaned

    # The resource comes from OTEL_SERVICE_NAME.
    resources = [r for r, s in receiver.spans if s.span_id == server.span_id]
    assert resources[0]["service.name"] == "sso-under-test"

    # Redis calls are children too: Logout denylists the session (SET + PUBLISH, one MULTI).
    # (ValidateToken reads the process's copy of the denylist: no Redis call while in sync.)
    trace2, parent2, header2 = traceparent()
    await stub.Logout(
        auth_pb2.LogoutRequest(access_token=login.tokens.access_token),
        metadata=(("traceparent", header2),),
    )

    def redis_children(ss: list[trace_pb2.Span]) -> list[trace_pb2.Span]:
        return [s for s in ss if _attributes(s.attributes).get("db.system.name") == "redis"]

    spans2 = await spans_of(
        receiver, trace2, lambda ss: any(s.kind == SERVER for s in ss) and redis_children(ss)
    )
    (logout,) = [s for s in spans2 if s.kind == SERVER]
    assert logout.parent_span_id.hex() == parent2
    redis_spans = [s for s in redis_children(spans2) if s.parent_span_id == logout.span_id]
    assert [s.name for s in redis_spans] == ["MULTI"]

    # The log lines of the traced call carry its trace id.
    lines = [json.loads(line) for line in log_stream.getvalue().splitlines() if line]
    rpc = [x for x in lines if x.get("msg") == "rpc" and x.get("method") == "/sso.v1.Auth/Login"]
    assert rpc and rpc[-1].get("trace_id") == trace_id


@pytest.mark.postgres
@pytest.mark.redis
async def test_failures_and_fresh_traces(traced: Running, receiver: Receiver) -> None:
    stub = auth_pb2_grpc.AuthStub(traced.channel)
    # No traceparent: the server starts a new trace (a root span).
    bad = auth_pb2.LoginRequest(email="nobody@example.com", password=PASSWORD, app_id=traced.app.id)
    with pytest.raises(grpc.aio.AioRpcError):
        await stub.Login(bad, metadata=(("x-request-id", "trace-me-1"),))

    def root_login(spans: list[tuple[dict[str, Any], trace_pb2.Span]]) -> list[trace_pb2.Span]:
        return [s for _, s in spans if s.kind == SERVER and s.name == "sso.v1.Auth/Login"]

    deadline = time.monotonic() + 15
    while time.monotonic() < deadline and not root_login(receiver.spans):
        await asyncio.sleep(0.05)
    (span,) = root_login(receiver.spans)
    assert span.parent_span_id == b""
    assert _attributes(span.attributes)["rpc.grpc.status_code"] == 16  # UNAUTHENTICATED
    # A client's mistake is not a server error (OpenTelemetry's gRPC conventions).
    assert span.status.code == trace_pb2.Status.STATUS_CODE_UNSET


def test_no_exporter_configured_means_no_tracing(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"):
        monkeypatch.delenv(name, raising=False)
    on = ObservabilitySettings()
    assert setup_tracing(on, {}) is None
    assert setup_tracing(on, {"OTEL_TRACES_EXPORTER": "none"}) is None
    endpoint = {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:1"}
    assert setup_tracing(on, {**endpoint, "OTEL_SDK_DISABLED": "true"}) is None
    assert setup_tracing(ObservabilitySettings(tracing_enabled=False), endpoint) is None
    provider = setup_tracing(on, endpoint)
    assert provider is not None
    provider.shutdown()
