"""`AccountTokenRepository` on SQLAlchemy Core: one-time email verification and reset links.

Why this module exists: a link token is a bearer credential for one account
and one purpose (SECURITY_CHECKLIST D1-D4). The database holds only its
SHA-256; spending it is a compare-and-swap (`UPDATE … SET used_at = now WHERE
token_hash = … AND purpose = … AND used_at IS NULL AND expires_at > now
RETURNING user_id`), so of 50 concurrent uses exactly one sees a row. The write
the token unlocks (mark verified, set the password) commits in the same
transaction as the spend: there is no window in which a token is spent and its
effect missing, or the reverse.

Issuing a token supersedes the user's unused ones of the same purpose and
enforces the per-account hourly mail limit, under a row lock on the user
(PostgreSQL) or this process's writer lock (SQLite, one writer anyway), so
concurrent requests cannot both see room for one more mail.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta

from sqlalchemy import delete, func, insert, select, true, update
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from sso.domain.account_models import AccountTokenInfo, Purpose
from sso.storage._sql import autocommit, sqlite_writer
from sso.storage.errors import translated
from sso.storage.tables import account_tokens as t
from sso.storage.tables import users

HOUR = timedelta(hours=1)


class SqlAccountTokens:
    """Link tokens and the account writes they unlock; give it the primary's engine."""

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine
        self._auto = autocommit(engine)
        self._pg = engine.dialect.name == "postgresql"
        # SQLite: queue this process's writers instead of busy-polling the file lock.
        self._writer = sqlite_writer(engine)

    async def _spend(
        self, conn: AsyncConnection, token_hash: bytes, purpose: Purpose, now: datetime
    ) -> int | None:
        stmt = (
            update(t)
            .where(
                t.c.token_hash == token_hash,
                t.c.purpose == purpose.value,
                t.c.used_at.is_(None),
                t.c.expires_at > now,
            )
            .values(used_at=now)
            .returning(t.c.user_id)
        )
        row = (await conn.execute(stmt)).first()
        return None if row is None else int(row.user_id)

    async def _void(
        self, conn: AsyncConnection, user_id: int, purpose: Purpose, now: datetime
    ) -> None:
        await conn.execute(
            update(t)
            .where(t.c.user_id == user_id, t.c.purpose == purpose.value, t.c.used_at.is_(None))
            .values(used_at=now)
        )

    @translated
    async def issue(
        self,
        user_id: int,
        purpose: Purpose,
        token_hash: bytes,
        *,
        now: datetime,
        expires_at: datetime,
        max_per_hour: int,
    ) -> bool:
        async with self._writer, self._engine.begin() as conn:
            if self._pg:  # serialise issuers per user: the count below then holds
                await conn.execute(
                    select(users.c.id).where(users.c.id == user_id).with_for_update()
                )
            recent = (
                await conn.execute(
                    select(func.count())
                    .select_from(t)
                    .where(
                        t.c.user_id == user_id,
                        t.c.purpose == purpose.value,
                        t.c.created_at > now - HOUR,
                    )
                )
            ).scalar_one()
            if recent >= max_per_hour:
                return False
            await self._void(conn, user_id, purpose, now)
            await conn.execute(
                insert(t).values(
                    token_hash=token_hash,
                    user_id=user_id,
                    purpose=purpose.value,
                    created_at=now,
                    expires_at=expires_at,
                )
            )
        return True

    @translated
    async def peek(self, token_hash: bytes, purpose: Purpose, now: datetime) -> int | None:
        stmt = select(t.c.user_id).where(
            t.c.token_hash == token_hash,
            t.c.purpose == purpose.value,
            t.c.used_at.is_(None),
            t.c.expires_at > now,
        )
        async with self._auto.connect() as conn:
            row = (await conn.execute(stmt)).first()
        return None if row is None else int(row.user_id)

    @translated
    async def verify_email(self, token_hash: bytes, now: datetime) -> int | None:
        async with self._writer, self._engine.begin() as conn:
            user_id = await self._spend(conn, token_hash, Purpose.VERIFY_EMAIL, now)
            if user_id is None:
                return None
            await conn.execute(
                update(users)
                .where(users.c.id == user_id)
                .values(email_verified=true(), updated_at=now)
            )
            await self._void(conn, user_id, Purpose.VERIFY_EMAIL, now)
        return user_id

    @translated
    async def reset_password(
        self, token_hash: bytes, now: datetime, password_hash: str
    ) -> int | None:
        async with self._writer, self._engine.begin() as conn:
            user_id = await self._spend(conn, token_hash, Purpose.RESET_PASSWORD, now)
            if user_id is None:
                return None
            # A reset proves control of the mailbox: it also lifts a lockout (C4).
            await conn.execute(
                update(users)
                .where(users.c.id == user_id)
                .values(
                    password_hash=password_hash,
                    updated_at=now,
                    tokens_valid_after=now,
                    failed_logins=0,
                    last_failed_at=None,
                    locked_until=None,
                    hard_locked=False,
                )
            )
            await self._void(conn, user_id, Purpose.RESET_PASSWORD, now)
        return user_id

    @translated
    async def change_password(self, user_id: int, password_hash: str, now: datetime) -> None:
        async with self._writer, self._engine.begin() as conn:
            await conn.execute(
                update(users)
                .where(users.c.id == user_id)
                .values(password_hash=password_hash, updated_at=now, tokens_valid_after=now)
            )
            await self._void(conn, user_id, Purpose.RESET_PASSWORD, now)

    @translated
    async def list_for_user(self, user_id: int) -> Sequence[AccountTokenInfo]:
        stmt = (
            select(t.c.purpose, t.c.created_at, t.c.expires_at, t.c.used_at)
            .where(t.c.user_id == user_id)
            .order_by(t.c.created_at, t.c.id)
        )
        async with self._auto.connect() as conn:
            rows = (await conn.execute(stmt)).all()
        return [
            AccountTokenInfo(Purpose(r.purpose), r.created_at, r.expires_at, r.used_at)
            for r in rows
        ]

    @translated
    async def cleanup(self, now: datetime) -> int:
        """Delete expired tokens at least an hour old (the hourly mail limit counts them)."""
        stmt = delete(t).where(t.c.expires_at <= now, t.c.created_at <= now - HOUR)
        async with self._auto.connect() as conn:
            result = await conn.execute(stmt)
        return int(result.rowcount or 0)
