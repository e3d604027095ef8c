"""`sso maintenance` (the production CronJob) deletes expired verification/reset links too,
not only what the embedded cleanup loop of `make run` deletes: both run `sso.app.cleanup_once`."""

from __future__ import annotations

import asyncio
import json
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy import func, select

from sso.config import DatabaseSettings
from sso.domain.account import hash_link_token, new_link_token
from sso.domain.account_models import Purpose
from sso.storage.account_tokens import SqlAccountTokens
from sso.storage.db import create_engine
from sso.storage.tables import account_tokens
from sso.storage.users import SqlUserRepository

TESTS = Path(__file__).resolve().parent.parent
if str(TESTS / "service_e2e") not in sys.path:
    sys.path.append(str(TESTS / "service_e2e"))

from test_cli_flow import Workdir  # noqa: E402


async def _links(url: str, *, add_expired: bool) -> int:
    """Issue one link that expired three hours ago (when asked); the number of links stored."""
    engine = create_engine(DatabaseSettings(url=url))
    try:
        if add_expired:
            user = await SqlUserRepository(engine).create("old.link@example.com", "x")
            then = datetime.now(UTC) - timedelta(hours=3)
            assert await SqlAccountTokens(engine).issue(
                user.id,
                Purpose.RESET_PASSWORD,
                hash_link_token(new_link_token()),
                now=then,
                expires_at=then + timedelta(minutes=30),
                max_per_hour=3,
            )
        async with engine.connect() as conn:
            count = select(func.count()).select_from(account_tokens)
            return int((await conn.execute(count)).scalar_one())
    finally:
        await engine.dispose()


def test_maintenance_deletes_expired_links(tmp_path: Path) -> None:
    workdir = Workdir(tmp_path)
    url = f"sqlite+aiosqlite:///{tmp_path / 'sso.db'}"
    workdir.env["SSO_DATABASE__URL"] = url
    workdir.run("migrate")
    workdir.run("keys", "ensure")
    assert asyncio.run(_links(url, add_expired=True)) == 1
    report = json.loads(workdir.run("maintenance").stdout)
    assert report["removed_rows"] >= 1
    assert asyncio.run(_links(url, add_expired=False)) == 0
