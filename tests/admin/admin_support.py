"""Shared pieces of the Admin API tests: the service with admin credentials, a client, users.

The service is the real one (`tests/api/sso_harness.py`: Container + SSOServer on
free ports) with an admin token configured; tests talk to it over real gRPC.
"""

from __future__ import annotations

import secrets
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc

TESTS = Path(__file__).resolve().parent.parent
for _sub in ("api",):
    if str(TESTS / _sub) not in sys.path:
        sys.path.append(str(TESTS / _sub))

from api_helpers import STRONG, expect_error, reason_of  # noqa: E402
from sso_harness import Running, make_settings, start, stop  # noqa: E402

from sso.config import AdminSettings, Settings  # noqa: E402
from sso_proto.sso.v1 import admin_pb2, admin_pb2_grpc, auth_pb2, auth_pb2_grpc  # noqa: E402

__all__ = [
    "STRONG",
    "AdminEnv",
    "Running",
    "admin_settings",
    "expect_error",
    "make_settings",
    "reason_of",
    "start",
    "stop",
]

S = grpc.StatusCode


def bearer(token: str) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {token}"),)


def admin_settings(base: Settings, token: str, **admin: Any) -> Settings:
    """`base` with the Admin API configured: one admin token plus `admin` overrides."""
    base.admin = AdminSettings(tokens=[token], **admin)  # type: ignore[list-item]
    return base


@dataclass
class AdminEnv:
    running: Running
    token: str

    @property
    def channel(self) -> grpc.aio.Channel:
        return self.running.channel

    @property
    def admin(self) -> admin_pb2_grpc.AdminStub:
        return admin_pb2_grpc.AdminStub(self.running.channel)

    @property
    def auth(self) -> auth_pb2_grpc.AuthStub:
        return auth_pb2_grpc.AuthStub(self.running.channel)

    @property
    def md(self) -> tuple[tuple[str, str], ...]:
        return bearer(self.token)

    async def user(self, tag: str = "", *, app_id: int | None = None) -> tuple[int, str, str]:
        """Register a user and log in: (user id, email, access token)."""
        email = f"{tag or 'u'}.{secrets.token_hex(4)}@example.com"
        reg = await self.auth.Register(auth_pb2.RegisterRequest(email=email, password=STRONG))
        login = await self.auth.Login(
            auth_pb2.LoginRequest(
                email=email, password=STRONG, app_id=app_id or self.running.app.id
            )
        )
        return reg.user_id, email, login.tokens.access_token

    async def create_app(self, name: str = "", **fields: Any) -> admin_pb2.CreateAppResponse:
        return await self.admin.CreateApp(
            admin_pb2.CreateAppRequest(name=name or f"app-{secrets.token_hex(4)}", **fields),
            metadata=self.md,
        )

    async def audit_rows(self, **where: Any) -> Sequence[dict[str, Any]]:
        """Rows of the audit table (optionally filtered by equality on columns)."""
        from sqlalchemy import select

        from sso.storage.tables import audit_events

        engine = self.running.container.auth.apps._raw  # type: ignore[attr-defined]
        stmt = select(audit_events).order_by(audit_events.c.id)
        for column, value in where.items():
            stmt = stmt.where(audit_events.c[column] == value)
        async with engine.connect() as conn:
            return [dict(r._mapping) for r in (await conn.execute(stmt)).all()]
