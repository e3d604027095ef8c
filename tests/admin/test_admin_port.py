"""The Admin API on its own port (SECURITY_CHECKLIST I4), as `SSO_SERVER__ADMIN_PORT` sets it.

With `admin_port` set, sso.v1.Admin is served by a second gRPC server: the public
port answers it UNIMPLEMENTED and its reflection does not list it, while the
admin port serves Admin (behind the same gate: no token, no answer) and health,
and nothing else. Both listeners close on stop. Without `admin_port` (the
default, `make run`) every other Admin test runs Admin on the public port.
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest
from admin_support import STRONG, admin_settings, bearer, expect_error, make_settings, start, stop
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from sso_harness import Running

from sso_proto.sso.v1 import admin_pb2, admin_pb2_grpc, auth_pb2, auth_pb2_grpc

S = grpc.StatusCode
SSO = str(Path(sys.executable).with_name("sso"))
TOKEN = secrets.token_urlsafe(32)


@pytest.fixture
async def running(tmp_path: Path, sqlite_url: str) -> AsyncIterator[Running]:
    settings = admin_settings(make_settings(tmp_path, sqlite_url), TOKEN)
    settings.server.admin_port = 0  # a free port of its own
    settings.server.reflection = True
    up = await start(settings)
    yield up
    await stop(up)


async def _listed(channel: grpc.aio.Channel) -> set[str]:
    stub = reflection_pb2_grpc.ServerReflectionStub(channel)

    async def requests():  # type: ignore[no-untyped-def]
        yield reflection_pb2.ServerReflectionRequest(list_services="")

    names: set[str] = set()
    async for resp in stub.ServerReflectionInfo(requests()):
        names |= {s.name for s in resp.list_services_response.service}
    return names


async def test_admin_answers_only_on_its_port(running: Running) -> None:
    server = running.server
    assert server.admin_port not in (0, server.port)
    public = admin_pb2_grpc.AdminStub(running.channel)
    async with grpc.aio.insecure_channel(f"127.0.0.1:{server.admin_port}") as channel:
        admin = admin_pb2_grpc.AdminStub(channel)
        created = await admin.CreateApp(
            admin_pb2.CreateAppRequest(name="on-admin-port"), metadata=bearer(TOKEN)
        )
        assert created.app.app_id > 0 and created.secret
        # The same gate on the admin port: a call without the token is refused.
        await expect_error(admin.CreateApp(admin_pb2.CreateAppRequest(name="x")), S.UNAUTHENTICATED)
        # The public port no longer has the service at all, token or not.
        await expect_error(
            public.CreateApp(admin_pb2.CreateAppRequest(name="x"), metadata=bearer(TOKEN)),
            S.UNIMPLEMENTED,
        )
        # And the admin port serves nothing public: no Register there.
        await expect_error(
            auth_pb2_grpc.AuthStub(channel).Register(
                auth_pb2.RegisterRequest(email="a@example.com", password=STRONG)
            ),
            S.UNIMPLEMENTED,
        )
        health = await health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(service="readiness")
        )
        assert health.status == health_pb2.HealthCheckResponse.SERVING
        assert "sso.v1.Admin" in await _listed(channel)
    public_names = await _listed(running.channel)
    assert "sso.v1.Auth" in public_names and "sso.v1.Admin" not in public_names
    # The public port still does its job.
    registered = await auth_pb2_grpc.AuthStub(running.channel).Register(
        auth_pb2.RegisterRequest(email=f"p.{secrets.token_hex(3)}@example.com", password=STRONG)
    )
    assert registered.user_id > 0


async def test_many_admin_calls_at_once_on_the_admin_port(running: Running) -> None:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{running.server.admin_port}") as channel:
        admin = admin_pb2_grpc.AdminStub(channel)
        created = await asyncio.gather(
            *(
                admin.CreateApp(admin_pb2.CreateAppRequest(name=f"c{i}"), metadata=bearer(TOKEN))
                for i in range(200)
            )
        )
    assert len({c.app.app_id for c in created}) == 200


async def test_both_listeners_close_on_stop(tmp_path: Path, sqlite_url: str) -> None:
    settings = admin_settings(make_settings(tmp_path, sqlite_url), TOKEN)
    settings.server.admin_port = 0
    up = await start(settings)
    ports = (up.server.port, up.server.admin_port)
    await stop(up)
    for port in ports:
        with pytest.raises(OSError):
            _reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.close()


async def test_without_admin_port_admin_stays_on_the_public_port(
    tmp_path: Path, sqlite_url: str
) -> None:
    up = await start(admin_settings(make_settings(tmp_path, sqlite_url), TOKEN))
    try:
        assert up.server.admin_port == up.server.port
        apps = await admin_pb2_grpc.AdminStub(up.channel).ListApps(
            admin_pb2.ListAppsRequest(), metadata=bearer(TOKEN)
        )
        assert any(a.app_id == up.app.id for a in apps.apps)
    finally:
        await stop(up)


async def _list_apps(environ: dict[str, str]) -> tuple[int, str, str]:
    """`sso admin list-apps` in a subprocess (the server runs on this test's loop)."""
    proc = await asyncio.create_subprocess_exec(
        SSO,
        "admin",
        "list-apps",
        env=environ,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await proc.communicate()
    return int(proc.returncode or 0), out.decode(), err.decode()


async def test_cli_finds_the_admin_port_from_sso_admin_target(running: Running) -> None:
    """`sso admin` reads $SSO_ADMIN_TARGET before $SSO_TARGET (which names the public port)."""
    environ = {k: v for k, v in os.environ.items() if not k.startswith("SSO_")}
    environ |= {
        "SSO_ADMIN_TOKEN": TOKEN,
        "SSO_TARGET": running.target,
        "SSO_ADMIN_TARGET": f"127.0.0.1:{running.server.admin_port}",
    }
    code, out, err = await _list_apps(environ)
    assert code == 0, err
    assert running.app.id in {a["app_id"] for a in json.loads(out)["apps"]}
    del environ["SSO_ADMIN_TARGET"]  # the public port: the CLI reports UNIMPLEMENTED
    code, _, err = await _list_apps(environ)
    assert code != 0 and "UNIMPLEMENTED" in err
