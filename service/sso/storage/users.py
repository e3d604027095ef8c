"""`UserRepository` on SQLAlchemy Core (PostgreSQL and SQLite).

Registration is atomic under any concurrency because the database decides:
`INSERT ... ON CONFLICT (email) DO NOTHING RETURNING` against the UNIQUE index
on the (already normalised) email either inserts or returns nothing, in one
statement, and nothing becomes `AlreadyExists` (SECURITY_CHECKLIST K6). There is
no check-then-insert window, and no exception path on the common duplicate.

`SqlLoginAttempts` keeps the lockout counters on the same rows (C1-C3): one
conditional `UPDATE ... RETURNING` counts an attempt as a failure *before* the
password is checked and computes the resulting lock in the same statement, so
N concurrent attempts on a locked account hash nothing, and of N concurrent
attempts on an open one at most `threshold` get through (row locks serialise
the updates; each re-checks the lock condition on the row it finally updates).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Update,
    bindparam,
    case,
    false,
    null,
    or_,
    select,
    true,
    update,
)
from sqlalchemy.ext.asyncio import AsyncEngine

from sso.domain.limits import LockoutPolicy, LockState, Reservation
from sso.domain.models import User
from sso.errors import AlreadyExists, NotFound
from sso.storage._sql import Clock, autocommit, insert_or_nothing, utc_now
from sso.storage.errors import translated
from sso.storage.prebuilt import Prebuilt, Row
from sso.storage.tables import UtcDateTime, users

_COLUMNS = (
    users.c.id,
    users.c.email,
    users.c.password_hash,
    users.c.is_admin,
    users.c.email_verified,
    users.c.created_at,
    users.c.tokens_valid_after,
)


def _user(m: Row) -> User:
    return User(
        id=m["id"],
        email=m["email"],
        password_hash=m["password_hash"],
        is_admin=m["is_admin"],
        email_verified=m["email_verified"],
        created_at=m["created_at"],
        tokens_valid_after=m["tokens_valid_after"],
    )


# The hot statements (every Login runs them), built once: see sso.storage.prebuilt.
_BY_EMAIL = select(*_COLUMNS).where(users.c.email == bindparam("email"))
_ADMIN_LOCKED = select(users.c.admin_locked).where(users.c.id == bindparam("user_id"))
_EXISTS = select(users.c.id).where(users.c.id == bindparam("user_id"))
_CLEAR = (
    update(users)
    .where(users.c.id == bindparam("user_id"))
    .values(failed_logins=0, last_failed_at=None, locked_until=None, hard_locked=False)
    .returning(users.c.id)
)


class SqlUserRepository:
    """Users table access; every method is one statement in autocommit mode."""

    def __init__(self, engine: AsyncEngine, *, clock: Clock = utc_now) -> None:
        self._engine = autocommit(engine)
        self._clock = clock
        self._insert = insert_or_nothing(engine, users, "email").returning(*_COLUMNS)
        self._prebuilt = Prebuilt(engine)

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
        row = await self._prebuilt.first(_BY_EMAIL, {"email": email})
        return None if row is None else _user(row)

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


def _reserve_statement(policy: LockoutPolicy) -> Update:
    """Count one attempt as a failure unless the account is locked, and compute the
    resulting lock, in one conditional `UPDATE ... RETURNING` (see the module doc).

    Built once per policy with named parameters (`_Reserve.params` fills them):
    `locked_until` is one CASE over the policy's steps, each step's end a parameter.
    """
    c = users.c
    now = bindparam("now", type_=UtcDateTime())
    stale = or_(
        c.last_failed_at.is_(None),
        c.last_failed_at <= bindparam("stale_before", type_=UtcDateTime()),
    )
    count = case((stale, 1), else_=c.failed_logins + 1)
    steps = policy.steps()
    whens: list[tuple[ColumnElement[bool], Any]] = [(count < steps[0][0], null())]
    for i, (next_start, _) in enumerate(steps[1:]):
        whens.append((count < next_start, bindparam(f"until_{i}", type_=UtcDateTime())))
    locked_until = case(*whens, else_=bindparam("until_last", type_=UtcDateTime()))
    return (
        update(users)
        .where(
            c.id == bindparam("user_id"),
            c.hard_locked == false(),
            # An administrative lock (sso.v1.Admin/LockUser) refuses every attempt too.
            c.admin_locked == false(),
            or_(c.locked_until.is_(None), c.locked_until <= now),
        )
        .values(
            failed_logins=count,
            last_failed_at=now,
            locked_until=locked_until,
            hard_locked=case((count >= policy.hard_limit, true()), else_=false()),
        )
        .returning(c.failed_logins, c.locked_until, c.hard_locked)
    )


@dataclass(frozen=True, slots=True)
class _Reserve:
    """The reserve statement of one policy and the lock delays its parameters need."""

    stmt: Update
    delays: tuple[timedelta, ...]  # one per step of `policy.steps()`
    reset_after: timedelta

    @classmethod
    def of(cls, policy: LockoutPolicy) -> _Reserve:
        delays = tuple(delay for _, delay in policy.steps())
        return cls(_reserve_statement(policy), delays, policy.reset_after)

    def params(self, user_id: int, now: datetime) -> dict[str, Any]:
        params: dict[str, Any] = {
            "user_id": user_id,
            "now": now,
            "stale_before": now - self.reset_after,
            "until_last": now + self.delays[-1],
        }
        for i, delay in enumerate(self.delays[:-1]):
            params[f"until_{i}"] = now + delay
        return params


class SqlLoginAttempts:
    """The `LoginAttempts` port on the users table (PostgreSQL and SQLite).

    `counting=False` (lockout switched off) counts nothing and locks nothing by
    itself; it still refuses attempts on an administratively locked account
    (`sso.v1.Admin/LockUser`), which must hold whatever the lockout setting.
    """

    def __init__(self, engine: AsyncEngine, *, counting: bool = True) -> None:
        self._engine = autocommit(engine)
        self._counting = counting
        self._prebuilt = Prebuilt(engine)
        self._reserve: dict[LockoutPolicy, _Reserve] = {}

    @translated
    async def reserve(self, user_id: int, *, now: datetime, policy: LockoutPolicy) -> Reservation:
        if not self._counting:
            row = await self._prebuilt.first(_ADMIN_LOCKED, {"user_id": user_id})
            return Reservation(granted=row is None or not row["admin_locked"])
        shape = self._reserve.get(policy)
        if shape is None:
            shape = self._reserve[policy] = _Reserve.of(policy)
        row = await self._prebuilt.first(shape.stmt, shape.params(user_id, now))
        if row is None:
            return Reservation(granted=False)
        return Reservation(
            True, row["failed_logins"], row["locked_until"], bool(row["hard_locked"])
        )

    @translated
    async def release(self, user_id: int, reservation: Reservation, *, now: datetime) -> None:
        """Give back a reservation, unless another attempt has counted since (then keep it)."""
        if not reservation.granted or not self._counting:
            return
        c = users.c
        stmt = (
            update(users)
            .where(
                c.id == user_id,
                c.failed_logins == reservation.failures,
                c.last_failed_at == now,
            )
            .values(failed_logins=c.failed_logins - 1, locked_until=None, hard_locked=False)
        )
        async with self._engine.connect() as conn:
            await conn.execute(stmt)

    @translated
    async def clear(self, user_id: int) -> bool:
        if not self._counting:  # nothing counted: no write on every successful login
            return await self._prebuilt.first(_EXISTS, {"user_id": user_id}) is not None
        return await self._prebuilt.first(_CLEAR, {"user_id": user_id}) is not None

    @translated
    async def state(self, user_id: int) -> LockState | None:
        c = users.c
        stmt = select(c.failed_logins, c.last_failed_at, c.locked_until, c.hard_locked).where(
            c.id == user_id
        )
        async with self._engine.connect() as conn:
            row = (await conn.execute(stmt)).first()
        if row is None:
            return None
        return LockState(row.failed_logins, row.last_failed_at, row.locked_until, row.hard_locked)
