"""Fixtures for the account lifecycle tests: a real SMTP server and the real service.

`smtp_sink` is an aiosmtpd server in this test process (its own thread and
loop, a free port) that keeps every message it accepts; `fail_next` makes it
answer the next DATA commands with a 4xx (to test retries), `delay` makes it
slow (to show mail work is off the response path). `account_server` is the
service from `tests/api/sso_harness.py` sending mail to that server.
"""

from __future__ import annotations

import asyncio
import logging
import re
import socket
import sys
import threading
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from email import message_from_bytes, policy
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller

TESTS = Path(__file__).resolve().parent.parent
for _sub in ("api",):
    if str(TESTS / _sub) not in sys.path:
        sys.path.append(str(TESTS / _sub))

from sso_harness import Running, make_settings, start, stop  # noqa: E402

from sso.config import AccountSettings, MailSettings  # noqa: E402
from sso.mail.dispatcher import MailDispatcher  # noqa: E402

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


@pytest.fixture
def smtp_sink() -> Iterator[SmtpSink]:
    sink = SmtpSink()
    with socket.socket() as probe:  # aiosmtpd's start-up check needs the real port
        probe.bind(("127.0.0.1", 0))
        sink.port = probe.getsockname()[1]
    controller = Controller(sink, hostname="127.0.0.1", port=sink.port)
    # The test server logs every DATA line at DEBUG: those are its logs, not the service's,
    # and would put the mails (with their links) into the log captures of the tests.
    server_log = logging.getLogger("mail.log")
    level = server_log.level
    server_log.setLevel(logging.WARNING)
    controller.start()
    try:
        yield sink
    finally:
        controller.stop()
        server_log.setLevel(level)


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


@pytest.fixture(
    params=[pytest.param("sqlite"), pytest.param("postgres", marks=pytest.mark.postgres)]
)
def account_backend(request: pytest.FixtureRequest) -> str:
    name = "sqlite_url" if request.param == "sqlite" else "pg_url"
    return str(request.getfixturevalue(name))


async def start_account_server(
    tmp_path: Path, db_url: str, sink: SmtpSink, redis_url: str | None = None, **account: Any
) -> Running:
    settings = make_settings(tmp_path, db_url, redis_url)
    settings.mail = mail_settings(sink.port)
    # Every test client is 127.0.0.1: the per-IP mail-request limit is raised here
    # (test_account_reset checks the limit itself with its own server).
    settings.account = AccountSettings(**{"mail_requests_per_ip": 100_000, **account})
    return await start(settings)


@pytest.fixture
async def account_server(
    tmp_path: Path, account_backend: str, smtp_sink: SmtpSink
) -> AsyncIterator[Running]:
    running = await start_account_server(tmp_path, account_backend, smtp_sink)
    yield running
    await stop(running)


async def settle(running: Running) -> None:
    """Wait until the background work and the mail queue are done."""
    lifecycle = running.container.bundle.lifecycle
    assert lifecycle is not None
    await lifecycle.account.background.drain()
    mailer = lifecycle.account.mailer
    assert isinstance(mailer, MailDispatcher)
    await mailer.join()
