"""`AuthService.app()` reuses a found app for `app_cache_ttl` seconds; misses are not kept."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any

import pytest

from sso.domain.auth import AuthService
from sso.domain.models import App
from sso.errors import NotFound


class FakeApps:
    def __init__(self) -> None:
        self.apps: dict[int, App] = {}
        self.reads = 0

    async def get(self, app_id: int) -> App | None:
        self.reads += 1
        return self.apps.get(app_id)


def _auth(apps: FakeApps, ttl: float) -> AuthService:
    none: Any = None
    return AuthService(
        users=none,
        apps=apps,
        sessions=none,
        denylist=none,
        hasher=none,
        rules=none,
        access_tokens=none,
        opaque=none,
        app_cache_ttl=ttl,
    )


def _app(secret: str) -> App:
    return App(id=1, name="a", secret=secret, created_at=datetime.now(UTC))


async def test_found_apps_are_cached_until_the_ttl(monkeypatch: pytest.MonkeyPatch) -> None:
    apps = FakeApps()
    auth = _auth(apps, ttl=30)
    with pytest.raises(NotFound):
        await auth.app(1)
    apps.apps[1] = _app("old")
    assert (await auth.app(1)).secret == "old"  # a miss was not cached
    apps.apps[1] = _app("new")
    assert (await auth.app(1)).secret == "old" and apps.reads == 2
    later = time.monotonic() + 31
    monkeypatch.setattr("sso.domain.auth.time.monotonic", lambda: later)
    assert (await auth.app(1)).secret == "new" and apps.reads == 3


async def test_ttl_zero_reads_every_time() -> None:
    apps = FakeApps()
    apps.apps[1] = _app("s")
    auth = _auth(apps, ttl=0)
    await auth.app(1)
    await auth.app(1)
    assert apps.reads == 2
