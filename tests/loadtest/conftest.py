"""The bench smoke tests use the service harness of tests/api (the embedded service)."""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

API = Path(__file__).parent.parent / "api"
if str(API) not in sys.path:
    sys.path.insert(0, str(API))

from sso_harness import Running, make_settings, start, stop  # noqa: E402


@pytest.fixture
async def embedded(tmp_path: Path, sqlite_url: str) -> AsyncIterator[Running]:
    """The service in-process on the embedded SQLite default, no Redis."""
    running = await start(make_settings(tmp_path, sqlite_url))
    yield running
    await stop(running)
