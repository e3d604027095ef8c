"""SqlAppRepository: app secrets are encrypted at rest (through the real SecretBox)."""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator

import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from sso.config import DatabaseSettings
from sso.errors import AlreadyExists, SSOError
from sso.security.secretbox import SecretBox
from sso.storage.apps import SqlAppRepository
from sso.storage.db import create_engine
from sso.storage.tables import apps


@pytest.fixture
async def engine(db_url: str) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(DatabaseSettings(url=db_url))  # type: ignore[arg-type]
    yield engine
    await engine.dispose()


@pytest.fixture
def cipher() -> SecretBox:
    return SecretBox(secrets.token_bytes(32))


async def test_create_and_read_back(engine: AsyncEngine, cipher: SecretBox) -> None:
    repo = SqlAppRepository(engine, cipher)
    secret = secrets.token_urlsafe(32)
    app = await repo.create("billing", secret)
    assert app.id > 0 and app.name == "billing" and app.secret == secret
    assert await repo.get(app.id) == app
    assert await repo.get_by_name("billing") == app
    assert await repo.get(app.id + 100) is None
    assert await repo.get_by_name("nope") is None
    other = await repo.create("crm", "another secret")
    assert [a.name for a in await repo.list()] == ["billing", "crm"]
    assert other.id != app.id


async def test_secret_is_stored_encrypted(engine: AsyncEngine, cipher: SecretBox) -> None:
    repo = SqlAppRepository(engine, cipher)
    secret = "plain-" + secrets.token_hex(16)
    app = await repo.create("vault", secret)
    async with engine.connect() as conn:
        raw = (await conn.execute(select(apps).where(apps.c.id == app.id))).one()._mapping
    stored = raw["secret_encrypted"]
    assert secret not in stored and secret[6:] not in stored
    assert cipher.decrypt(stored) == secret
    # Another key cannot read it: the repository surfaces the cipher's SSOError.
    with pytest.raises(SSOError):
        await SqlAppRepository(engine, SecretBox(secrets.token_bytes(32))).get(app.id)


async def test_duplicate_name(engine: AsyncEngine, cipher: SecretBox) -> None:
    repo = SqlAppRepository(engine, cipher)
    await repo.create("dup", "s1")
    with pytest.raises(AlreadyExists):
        await repo.create("dup", "s2")
    assert len(await repo.list()) == 1
