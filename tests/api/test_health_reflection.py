"""Health (grpc.health.v1) and server reflection, as probes and grpcurl use them."""

from __future__ import annotations

import grpc
from api_helpers import expect_error, http_get_json
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc


async def test_health_services(sso_server) -> None:
    stub = health_pb2_grpc.HealthStub(sso_server.channel)
    for name in ["", "liveness", "readiness", "auth.Auth", "sso.v1.Auth", "sso.v1.Sessions"]:
        resp = await stub.Check(health_pb2.HealthCheckRequest(service=name))
        assert resp.status == health_pb2.HealthCheckResponse.SERVING, name
    await expect_error(
        stub.Check(health_pb2.HealthCheckRequest(service="nope")), grpc.StatusCode.NOT_FOUND
    )
    assert await http_get_json(f"{sso_server.http}/readyz") == {"status": "ready"}


async def test_health_goes_not_serving_on_shutdown(sso_server) -> None:
    stub = health_pb2_grpc.HealthStub(sso_server.channel)
    await sso_server.server.health.shutdown()
    resp = await stub.Check(health_pb2.HealthCheckRequest(service="readiness"))
    assert resp.status == health_pb2.HealthCheckResponse.NOT_SERVING


async def test_reflection_lists_every_service(sso_server) -> None:
    stub = reflection_pb2_grpc.ServerReflectionStub(sso_server.channel)

    async def requests():  # type: ignore[no-untyped-def]
        yield reflection_pb2.ServerReflectionRequest(list_services="")

    names = set()
    async for resp in stub.ServerReflectionInfo(requests()):
        names |= {s.name for s in resp.list_services_response.service}
    assert {"auth.Auth", "auth.Permissions", "sso.v1.Auth", "sso.v1.Sessions"} <= names
    assert "grpc.health.v1.Health" in names
