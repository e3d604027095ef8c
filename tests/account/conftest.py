"""Fixtures for the account lifecycle tests: a real SMTP server and the real service.

`smtp_sink` is an aiosmtpd server in this test process (its own thread and
loop, a free port) that keeps every message it accepts; `fail_next` makes it
answer the next DATA commands with a 4xx (to test retries), `delay` makes it
slow (to show mail work is off the response path). `account_server` is the
service from `tests/api/sso_harness.py` sending mail to that server. The handler
and the helpers the tests import live in `account_helpers.py` (a test module
importing from `conftest` breaks as soon as pytest collects another directory
with its own conftest in the same run).
"""

from __future__ import annotations

import logging
import socket
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from account_helpers import SmtpSink, start_account_server
from aiosmtpd.controller import Controller
from sso_harness import Running, stop


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


@pytest.fixture(
    params=[pytest.param("sqlite"), pytest.param("postgres", marks=pytest.mark.postgres)]
)
def account_backend(request: pytest.FixtureRequest) -> str:
    name = "sqlite_url" if request.param == "sqlite" else "pg_url"
    return str(request.getfixturevalue(name))


@pytest.fixture
async def account_server(
    tmp_path: Path, account_backend: str, smtp_sink: SmtpSink
) -> AsyncIterator[Running]:
    running = await start_account_server(tmp_path, account_backend, smtp_sink)
    yield running
    await stop(running)
