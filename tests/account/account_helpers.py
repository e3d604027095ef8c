"""Calls the account tests repeat: register, log in, the Account stub, bearer metadata;
the handler of the test SMTP server (`SmtpSink`) and the service that mails it."""

from __future__ import annotations

import asyncio
import re
import secrets
import sys
import threading
import time
from dataclasses import dataclass, field
from email import message_from_bytes, policy
from email.message import EmailMessage
from pathlib import Path
from typing import Any

TESTS = Path(__file__).resolve().parent.parent
if str(TESTS / "api") not in sys.path:
    sys.path.append(str(TESTS / "api"))

from api_helpers import STRONG, expect_error, reason_of  # noqa: E402
from sso_harness import Running, make_settings, start  # noqa: E402

from sso.config import AccountSettings, MailSettings  # noqa: E402
from sso.mail.dispatcher import MailDispatcher  # noqa: E402
from sso_proto.sso.v1 import account_pb2_grpc, auth_pb2, auth_pb2_grpc  # noqa: E402

__all__ = ["STRONG", "expect_error", "reason_of"]


def account(running: Running) -> account_pb2_grpc.AccountStub:
    return account_pb2_grpc.AccountStub(running.channel)


def auth(running: Running) -> auth_pb2_grpc.AuthStub:
    return auth_pb2_grpc.AuthStub(running.channel)


def unique(tag: str) -> str:
    """A fresh address, so tests sharing a server never collide."""
    return f"{tag}.{secrets.token_hex(4)}@example.com"


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


# -- the test SMTP server's handler and the service that mails it -------------------------

TOKEN_RE = re.compile(r"token=([A-Za-z0-9_\-]+)")


@dataclass
class Received:
    rcpt: list[str]
    message: EmailMessage

    @property
    def kind(self) -> str:
        return str(self.message["X-SSO-Mail-Kind"])

    @property
    def text(self) -> str:
        part = self.message.get_body(("plain",))
        assert part is not None
        return str(part.get_content())

    @property
    def html(self) -> str:
        part = self.message.get_body(("html",))
        assert part is not None
        return str(part.get_content())

    @property
    def token(self) -> str:
        found = TOKEN_RE.search(self.text)
        assert found is not None, self.text
        return found.group(1)


@dataclass
class SmtpSink:
    """The handler of the test SMTP server (called on the server's thread)."""

    port: int = 0
    messages: list[Received] = field(default_factory=list)
    attempts: int = 0
    fail_next: int = 0
    fail_code: str = "451 4.3.0 try again later"
    delay: float = 0.0
    _lock: threading.Lock = field(default_factory=threading.Lock)

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        with self._lock:
            self.attempts += 1
            if self.fail_next > 0:
                self.fail_next -= 1
                return self.fail_code
        if self.delay:
            await asyncio.sleep(self.delay)
        message = message_from_bytes(envelope.content, policy=policy.default)
        assert isinstance(message, EmailMessage)
        with self._lock:
            self.messages.append(Received(list(envelope.rcpt_tos), message))
        return "250 2.0.0 OK"

    def to(self, address: str, kind: str | None = None) -> list[Received]:
        with self._lock:
            return [
                m for m in self.messages if address in m.rcpt and (kind is None or m.kind == kind)
            ]

    def all(self, kind: str | None = None) -> list[Received]:
        with self._lock:
            return [m for m in self.messages if kind is None or m.kind == kind]

    async def wait_for(self, count: int, *, kind: str | None = None, timeout: float = 15) -> None:
        deadline = time.monotonic() + timeout
        while len(self.all(kind)) < count:
            if time.monotonic() > deadline:
                raise AssertionError(f"{len(self.all(kind))} mails of kind {kind}, want {count}")
            await asyncio.sleep(0.02)


def mail_settings(port: int, **overrides: Any) -> MailSettings:
    values: dict[str, Any] = {
        "mode": "smtp",
        "host": "127.0.0.1",
        "port": port,
        "security": "none",
        "timeout": 5.0,
        "retries": 3,
        "backoff_initial": 0.05,
        "backoff_max": 0.2,
        "from_address": "SSO test <no-reply@sso.test>",
        "base_url": "https://sso.test",
    }
    values.update(overrides)
    return MailSettings(**values)


async def start_account_server(
    tmp_path: Path, db_url: str, sink: SmtpSink, redis_url: str | None = None, **account: Any
) -> Running:
    settings = make_settings(tmp_path, db_url, redis_url)
    settings.mail = mail_settings(sink.port)
    # Every test client is 127.0.0.1: the per-IP mail-request limit is raised here
    # (test_account_reset checks the limit itself with its own server).
    settings.account = AccountSettings(**{"mail_requests_per_ip": 100_000, **account})
    return await start(settings)


async def settle(running: Running) -> None:
    """Wait until the background work and the mail queue are done."""
    lifecycle = running.container.bundle.lifecycle
    assert lifecycle is not None
    await lifecycle.account.background.drain()
    mailer = lifecycle.account.mailer
    assert isinstance(mailer, MailDispatcher)
    await mailer.join()
