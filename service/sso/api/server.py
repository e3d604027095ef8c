"""Builds and runs the gRPC server (and the HTTP listener) around the domain services.

Start: register servicers, health, reflection; bind with SO_REUSEPORT so
`sso serve --workers N` processes share one port. With `admin_port` set,
sso.v1.Admin moves to a second gRPC server on that port (gRPC registers
services per server, not per port), so the public port answers it UNIMPLEMENTED
and a deployment can keep the admin port off its public Service and behind a
NetworkPolicy (checklist I4). Interceptors, outermost
first: tracing (a SERVER span per call), metrics, then the error boundary.
Stop (SIGTERM): every health entry but `liveness` goes NOT_SERVING at once,
wait `drain_delay` for endpoints to update, then `server.stop(grace)` lets
in-flight RPCs finish (gRPC's graceful-shutdown guide).
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from datetime import timedelta

import grpc
from grpc_health.v1 import health_pb2_grpc
from grpc_reflection.v1alpha import reflection
from opentelemetry.trace import Tracer

from sso.api import metrics
from sso.api.account import AccountV1
from sso.api.account_lifecycle import Lifecycle
from sso.api.admin import AdminV1
from sso.api.admin_auth import SERVICE_NAME as ADMIN_SERVICE_NAME
from sso.api.admin_auth import AdminGate, add_admin_service
from sso.api.health import Check, HealthState
from sso.api.http import HttpListener, Response, Route
from sso.api.interceptors import ErrorBoundary
from sso.api.legacy import LegacyAuth, LegacyPermissions
from sso.api.tracing import TracingInterceptor
from sso.api.v1 import AuthV1, SessionsV1
from sso.config import AdminSettings, ObservabilitySettings, ServerSettings
from sso.domain.admin import AdminService
from sso.domain.auth import AuthService
from sso.domain.ports import AccessTokenIssuer, LegacyTokens
from sso.domain.sessions import SessionService
from sso.domain.two_factor import TwoFactorService
from sso_proto.auth import auth_pb2, auth_pb2_grpc
from sso_proto.sso.v1 import account_pb2, account_pb2_grpc, sessions_pb2, sessions_pb2_grpc
from sso_proto.sso.v1 import auth_pb2 as v1_auth_pb2
from sso_proto.sso.v1 import auth_pb2_grpc as v1_auth_pb2_grpc

log = logging.getLogger("sso.server")

SERVICE_NAMES = (
    auth_pb2.DESCRIPTOR.services_by_name["Auth"].full_name,
    auth_pb2.DESCRIPTOR.services_by_name["Permissions"].full_name,
    v1_auth_pb2.DESCRIPTOR.services_by_name["Auth"].full_name,
    sessions_pb2.DESCRIPTOR.services_by_name["Sessions"].full_name,
    account_pb2.DESCRIPTOR.services_by_name["Account"].full_name,
    ADMIN_SERVICE_NAME,
)


@dataclass
class ServiceBundle:
    """Everything the edge needs from the composition root."""

    auth: AuthService
    sessions: SessionService
    access_tokens: AccessTokenIssuer
    legacy_tokens: LegacyTokens
    legacy_ttl: timedelta
    issuer: str
    checks: dict[str, Check] = field(default_factory=dict)
    # Metrics switch and liveness lag limit; the tracer when OTEL_* configure export.
    observability: ObservabilitySettings = field(default_factory=ObservabilitySettings)
    tracer: Tracer | None = None
    # sso.v1.Admin (served only behind its gate, sso.api.admin_auth); None = not served.
    admin: AdminService | None = None
    admin_settings: AdminSettings = field(default_factory=AdminSettings)
    # TOTP second factor (sso.v1.Auth/VerifyMfa, the two-factor half of sso.v1.Account).
    two_factor: TwoFactorService | None = None
    # The lifecycle half of sso.v1.Account (verification, reset, history, export).
    lifecycle: Lifecycle | None = None


class SSOServer:
    def __init__(self, bundle: ServiceBundle, settings: ServerSettings) -> None:
        self.bundle, self.settings = bundle, settings
        obs = bundle.observability
        self.health = HealthState(
            bundle.checks,
            SERVICE_NAMES,
            max_loop_lag=obs.max_loop_lag,
            # Redis down = degraded (per-pod limits), not unready: see sso.api.health.
            advisory=() if obs.readiness_requires_redis else ("redis",),
        )
        self.http = HttpListener(self._routes())
        self.port = 0
        # Where sso.v1.Admin answers: `port`, or the admin listener's; 0 when not served.
        self.admin_port = 0
        self.http_port = 0
        self._servers: list[grpc.aio.Server] = []

    def _routes(self) -> dict[str, Route]:
        issuer = self.bundle.issuer.rstrip("/")

        def jwks() -> tuple[int, dict[str, object]]:
            return 200, dict(self.bundle.access_tokens.jwks())

        def discovery() -> tuple[int, dict[str, object]]:
            return 200, {
                "issuer": self.bundle.issuer,
                "jwks_uri": f"{issuer}/.well-known/jwks.json",
                "id_token_signing_alg_values_supported": sorted(
                    {str(k.get("alg")) for k in self.bundle.access_tokens.jwks().get("keys", [])}
                ),
                "subject_types_supported": ["public"],
                "response_types_supported": ["token"],
            }

        def healthz() -> tuple[int, dict[str, object]]:
            if self.health.alive:
                return 200, {"status": "ok"}
            return 503, {"status": "event loop lagging", "lag_seconds": self.health.loop_lag}

        async def prometheus() -> Response:
            body, content_type = await asyncio.to_thread(metrics.render)
            return Response(200, body, content_type)

        def readyz() -> tuple[int, dict[str, object]]:
            if self.health.ready and self.health.degraded:
                return 200, {"status": "ready", "degraded": list(self.health.degraded)}
            if self.health.ready:
                return 200, {"status": "ready"}
            return 503, {"status": "not ready", "failing": list(self.health.failing)}

        routes: dict[str, Route] = {
            "/.well-known/jwks.json": jwks,
            "/.well-known/openid-configuration": discovery,
            "/healthz": healthz,
            "/readyz": readyz,
        }
        if self.bundle.observability.metrics_enabled:
            routes["/metrics"] = prometheus
        return routes

    def _interceptors(self) -> list[grpc.aio.ServerInterceptor]:
        """Outermost first: tracing, metrics, then the error boundary (innermost)."""
        chain: list[grpc.aio.ServerInterceptor] = []
        if self.bundle.tracer is not None:
            chain.append(TracingInterceptor(self.bundle.tracer))
        if self.bundle.observability.metrics_enabled:
            chain.append(metrics.MetricsInterceptor())
        return chain

    def _server(self, reuse_port: bool) -> grpc.aio.Server:
        s = self.settings
        return grpc.aio.server(
            interceptors=[
                *self._interceptors(),
                ErrorBoundary(default_deadline=s.default_deadline, access_log=s.access_log),
            ],
            maximum_concurrent_rpcs=s.max_concurrent_rpcs,
            options=[
                ("grpc.so_reuseport", 1 if reuse_port else 0),
                ("grpc.max_receive_message_length", s.max_message_bytes),
                ("grpc.max_send_message_length", 4 * 1024 * 1024),
                ("grpc.keepalive_time_ms", 60_000),
                ("grpc.http2.max_pings_without_data", 0),
            ],
        )

    def _common(self, server: grpc.aio.Server, names: tuple[str, ...]) -> None:
        """Health (the same state on every listener) and, when on, reflection of `names`."""
        health_pb2_grpc.add_HealthServicer_to_server(self.health.servicer, server)
        if self.settings.reflection:
            listed = (*names, "grpc.health.v1.Health", reflection.SERVICE_NAME)
            reflection.enable_server_reflection(listed, server)

    @staticmethod
    def _bind(server: grpc.aio.Server, host: str, port: int) -> int:
        bound = server.add_insecure_port(f"{host}:{port}")
        if bound == 0:
            raise OSError(f"cannot bind gRPC to {host}:{port}")
        return bound

    async def start(self, *, reuse_port: bool = True) -> int:
        s, b = self.settings, self.bundle
        separate_admin = b.admin is not None and s.admin_port is not None
        server = self._server(reuse_port)
        auth_pb2_grpc.add_AuthServicer_to_server(
            LegacyAuth(b.auth, b.legacy_tokens, b.legacy_ttl), server
        )
        auth_pb2_grpc.add_PermissionsServicer_to_server(LegacyPermissions(b.auth), server)
        v1_auth_pb2_grpc.add_AuthServicer_to_server(
            AuthV1(b.auth, b.access_tokens, b.two_factor), server
        )
        if b.two_factor is not None and b.lifecycle is not None:
            account_pb2_grpc.add_AccountServicer_to_server(
                AccountV1(lifecycle=b.lifecycle, two_factor=b.two_factor), server
            )
        sessions_pb2_grpc.add_SessionsServicer_to_server(SessionsV1(b.sessions), server)
        public_names: tuple[str, ...] = SERVICE_NAMES
        admin_server: grpc.aio.Server | None = None
        if b.admin is not None:
            gate = AdminGate(b.admin, b.admin_settings)
            if separate_admin:
                admin_server = self._server(reuse_port)
                add_admin_service(admin_server, AdminV1(b.admin), gate)
                self._common(admin_server, (ADMIN_SERVICE_NAME,))
                public_names = tuple(n for n in SERVICE_NAMES if n != ADMIN_SERVICE_NAME)
            else:
                add_admin_service(server, AdminV1(b.admin), gate)
        self._common(server, public_names)
        self.port = self._bind(server, s.host, s.port)
        if admin_server is not None and s.admin_port is not None:
            self.admin_port = self._bind(admin_server, s.admin_host or s.host, s.admin_port)
        else:
            self.admin_port = self.port if b.admin is not None else 0
        await self.health.start()
        await server.start()
        self._servers = [server]
        if admin_server is not None:
            await admin_server.start()
            self._servers.append(admin_server)
        if s.http_enabled:
            self.http_port = await self.http.start(s.http_host, s.http_port, reuse_port=reuse_port)
        log.info(
            "serving",
            extra={
                "grpc_port": self.port,
                "admin_port": self.admin_port,
                "http_port": self.http_port,
            },
        )
        return self.port

    async def stop(self, grace: float | None = None, drain_delay: float = 0.0) -> None:
        await self.health.shutdown()
        if drain_delay:
            await asyncio.sleep(drain_delay)
        await self.http.stop()
        self.health.close_watches()
        servers, self._servers = self._servers, []
        if servers:
            seconds = self.settings.shutdown_grace if grace is None else grace
            await asyncio.gather(*(server.stop(seconds) for server in servers))

    async def wait(self) -> None:
        if self._servers:
            await self._servers[0].wait_for_termination()
