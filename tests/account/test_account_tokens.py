"""Link tokens at the storage and domain level, on PostgreSQL and SQLite (D1, D4, C6)."""

from __future__ import annotations

import asyncio
import secrets
from datetime import UTC, datetime, timedelta

from sqlalchemy import select

from sso.config import DatabaseSettings
from sso.domain.account import hash_link_token, new_link_token
from sso.domain.account_models import Purpose
from sso.storage.account_tokens import SqlAccountTokens
from sso.storage.db import create_engine
from sso.storage.tables import account_tokens, users
from sso.storage.users import SqlUserRepository


def test_link_tokens_are_long_and_unique() -> None:
    """D1: 10^6 tokens, no duplicate, each >= 22 base64url characters (>= 128 bits)."""
    tokens = {new_link_token() for _ in range(1_000_000)}
    assert len(tokens) == 1_000_000
    assert min(len(t) for t in tokens) >= 22
    assert all(t.replace("-", "").replace("_", "").isalnum() for t in list(tokens)[:1000])


async def test_concurrent_issues_respect_the_hourly_cap(db_url: str) -> None:
    """C6: 20 concurrent reset requests for one account store at most 3 tokens, and only
    the newest stays usable."""
    engine = create_engine(DatabaseSettings(url=db_url))
    try:
        user = await SqlUserRepository(engine).create(
            f"cap.{secrets.token_hex(3)}@example.com", "x"
        )
        repo = SqlAccountTokens(engine)
        now = datetime.now(UTC)
        raw = [new_link_token() for _ in range(20)]
        issued = await asyncio.gather(
            *(
                repo.issue(
                    user.id,
                    Purpose.RESET_PASSWORD,
                    hash_link_token(t),
                    now=now,
                    expires_at=now + timedelta(minutes=30),
                    max_per_hour=3,
                )
                for t in raw
            )
        )
        assert issued.count(True) == 3
        live = [t for t in raw if await repo.peek(hash_link_token(t), Purpose.RESET_PASSWORD, now)]
        assert len(live) == 1  # the others were superseded
        # An hour later there is room again.
        later = now + timedelta(hours=1, seconds=1)
        assert await repo.issue(
            user.id,
            Purpose.RESET_PASSWORD,
            hash_link_token(new_link_token()),
            now=later,
            expires_at=later + timedelta(minutes=30),
            max_per_hour=3,
        )
        async with engine.connect() as conn:
            rows = (await conn.execute(select(account_tokens))).all()
            assert len(rows) == 4 and all(len(bytes(r.token_hash)) == 32 for r in rows)
            # Purposes are bound: the reset token neither verifies nor is found as one.
            assert await repo.verify_email(hash_link_token(live[0]), now) is None
            verified = (
                await conn.execute(select(users.c.email_verified).where(users.c.id == user.id))
            ).scalar_one()
            assert verified is False
        # Expired and older than an hour: gone with the cleanup.
        assert await repo.cleanup(later + timedelta(hours=2)) == 4
    finally:
        await engine.dispose()


def test_link_tokens_never_start_with_a_dash() -> None:
    """`sso client verify-email TOKEN` would read a leading `-` as an option."""
    tokens = [new_link_token() for _ in range(20_000)]
    assert not any(t.startswith("-") for t in tokens) and any("-" in t for t in tokens)
