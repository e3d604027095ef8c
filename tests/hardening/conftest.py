"""Fixtures for the brute-force and audit tests: the in-process service with chosen limits.

These tests reuse the API harness (`tests/api/sso_harness.py`) and change only
what each one measures: rate limits, lockout policy, argon2 cost, Redis timeout.
"""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "api"))

from sso_harness import Running, start, stop

from sso.config import Settings

Starter = Callable[[Settings], Awaitable[Running]]


@pytest.fixture
async def serve() -> AsyncIterator[Starter]:
    """Start services with given settings; every one is stopped after the test."""
    started: list[Running] = []

    async def run(settings: Settings) -> Running:
        running = await start(settings)
        started.append(running)
        return running

    yield run
    for running in reversed(started):
        await stop(running)
