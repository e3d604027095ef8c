"""Calls the account tests repeat: register, log in, the Account stub, bearer metadata."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

TESTS = Path(__file__).resolve().parent.parent
if str(TESTS / "api") not in sys.path:
    sys.path.append(str(TESTS / "api"))

from api_helpers import STRONG, expect_error, reason_of  # noqa: E402
from sso_harness import Running  # noqa: E402

from sso_proto.sso.v1 import account_pb2_grpc, auth_pb2, auth_pb2_grpc  # noqa: E402

__all__ = ["STRONG", "expect_error", "reason_of"]


def account(running: Running) -> account_pb2_grpc.AccountStub:
    return account_pb2_grpc.AccountStub(running.channel)


def auth(running: Running) -> auth_pb2_grpc.AuthStub:
    return auth_pb2_grpc.AuthStub(running.channel)


def bearer(access_token: str) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {access_token}"),)


async def register(running: Running, email: str, password: str = STRONG) -> int:
    response = await auth(running).Register(
        auth_pb2.RegisterRequest(email=email, password=password)
    )
    return int(response.user_id)


async def login(
    running: Running,
    email: str,
    password: str = STRONG,
    *,
    device: str = "test-device",
) -> Any:
    request = auth_pb2.LoginRequest(
        email=email, password=password, app_id=running.app.id, device_name=device
    )
    response = await auth(running).Login(request)
    return response.tokens
