"""`UserRepository` on SQLAlchemy Core (PostgreSQL and SQLite).

Registration is atomic under any concurrency because the database decides:
`INSERT ... ON CONFLICT (email) DO NOTHING RETURNING` against the UNIQUE index
on the (already normalised) email either inserts or returns nothing, in one
statement, and nothing becomes `AlreadyExists` (SECURITY_CHECKLIST K6). There is
no check-then-insert window, and no exception path on the common duplicate.
"""

from __future__ import annotations

from sqlalchemy import RowMapping, select, update
from sqlalchemy.ext.asyncio import AsyncEngine

from sso.domain.models import User
from sso.errors import AlreadyExists, NotFound
from sso.storage._sql import Clock, autocommit, insert_or_nothing, utc_now
from sso.storage.errors import translated
from sso.storage.tables import users

_COLUMNS = (
    users.c.id,
    users.c.email,
    users.c.password_hash,
    users.c.is_admin,
    users.c.email_verified,
    users.c.created_at,
    users.c.tokens_valid_after,
)


def _user(m: RowMapping) -> User:
    return User(
        id=m["id"],
        email=m["email"],
        password_hash=m["password_hash"],
        is_admin=m["is_admin"],
        email_verified=m["email_verified"],
        created_at=m["created_at"],
        tokens_valid_after=m["tokens_valid_after"],
    )


class SqlUserRepository:
    """Users table access; every method is one statement in autocommit mode."""

    def __init__(self, engine: AsyncEngine, *, clock: Clock = utc_now) -> None:
        self._engine = autocommit(engine)
        self._clock = clock
        self._insert = insert_or_nothing(engine, users, "email").returning(*_COLUMNS)

    @translated
    async def create(self, email: str, password_hash: str, *, is_admin: bool = False) -> User:
        """Insert a user; `AlreadyExists` when the email is taken (atomic)."""
        now = self._clock()
        async with self._engine.connect() as conn:
            result = await conn.execute(
                self._insert,
                {
                    "email": email,
                    "password_hash": password_hash,
                    "is_admin": is_admin,
                    "email_verified": False,
                    "created_at": now,
                    "updated_at": now,
                },
            )
            row = result.first()
        if row is None:
            raise AlreadyExists("email already registered")
        return _user(row._mapping)

    @translated
    async def get_by_email(self, email: str) -> User | None:
        async with self._engine.connect() as conn:
            row = (await conn.execute(select(*_COLUMNS).where(users.c.email == email))).first()
        return None if row is None else _user(row._mapping)

    @translated
    async def get_by_id(self, user_id: int) -> User | None:
        async with self._engine.connect() as conn:
            row = (await conn.execute(select(*_COLUMNS).where(users.c.id == user_id))).first()
        return None if row is None else _user(row._mapping)

    @translated
    async def update_password_hash(self, user_id: int, password_hash: str) -> None:
        """Replace the hash (a rehash or a password change); `NotFound` for an unknown id."""
        stmt = (
            update(users)
            .where(users.c.id == user_id)
            .values(password_hash=password_hash, updated_at=self._clock())
            .returning(users.c.id)
        )
        async with self._engine.connect() as conn:
            row = (await conn.execute(stmt)).first()
        if row is None:
            raise NotFound("user not found")

    @translated
    async def set_admin(self, user_id: int, is_admin: bool) -> bool:
        """Return False when the user does not exist."""
        stmt = (
            update(users)
            .where(users.c.id == user_id)
            .values(is_admin=is_admin, updated_at=self._clock())
            .returning(users.c.id)
        )
        async with self._engine.connect() as conn:
            row = (await conn.execute(stmt)).first()
        return row is not None
