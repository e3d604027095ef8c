"""`LoginHistoryRepository` on SQLAlchemy Core: a user's login history and known devices.

Why this module exists: ListLoginHistory, the new-device notice and the data
export read what happened at each login of an account. History rows are
append-only in practice (deleted with the user); pages go newest first by a
keyset on the id (no OFFSET scans). A device is remembered per user with an
insert-or-nothing on (user_id, device_hash), so two concurrent first logins
from one device still count it once.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import RowMapping, bindparam, func, insert, literal_column, select, update
from sqlalchemy.dialects import postgresql
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.sql import Executable

from sso.domain.account_models import KnownDevice, LoginRecord, LoginResult
from sso.storage._sql import autocommit, insert_or_nothing, sqlite_writer
from sso.storage.errors import translated
from sso.storage.prebuilt import Prebuilt
from sso.storage.replicas import ReadRouter
from sso.storage.tables import known_devices as d
from sso.storage.tables import login_history as h

MAX_TEXT = 512


def _record(m: RowMapping) -> LoginRecord:
    return LoginRecord(
        id=m["id"],
        user_id=m["user_id"],
        ts=m["ts"],
        result=LoginResult(m["result"]),
        ip=m["ip"],
        user_agent=m["user_agent"],
        device_name=m["device_name"],
        app_id=m["app_id"],
        device_hash=m["device_hash"],
    )


_HISTORY_COLUMNS = (
    "user_id",
    "ts",
    "result",
    "ip",
    "user_agent",
    "device_name",
    "app_id",
    "device_hash",
)
# Every Login writes these (sso.storage.prebuilt: built once).
# Parameters are named `p_<column>`: SQLAlchemy reserves a column's own name in VALUES.
_RECORD = insert(h).values({n: bindparam(f"p_{n}", type_=h.c[n].type) for n in _HISTORY_COLUMNS})


def _pg_record_success() -> Executable:
    """One statement for a successful login: the history row (a data-modifying CTE), and
    the device inserted or touched; returns whether the device was new (`xmax = 0`: the
    row was inserted, not updated) and how many devices the user had before this
    statement (its snapshot does not see its own inserts)."""
    now = bindparam("p_now", type_=d.c.last_seen_at.type)
    user_id = bindparam("p_user_id", type_=d.c.user_id.type)
    stmt = postgresql.insert(d).values(
        user_id=user_id,
        device_hash=bindparam("p_device_hash", type_=d.c.device_hash.type),
        user_agent=bindparam("p_user_agent", type_=d.c.user_agent.type),
        device_name=bindparam("p_device_name", type_=d.c.device_name.type),
        first_seen_at=now,
        last_seen_at=now,
    )
    known = select(func.count()).select_from(d).where(d.c.user_id == user_id).scalar_subquery()
    return (
        stmt.on_conflict_do_update(
            index_elements=[d.c.user_id, d.c.device_hash], set_={"last_seen_at": now}
        )
        .returning(literal_column("xmax = 0").label("inserted"), known.label("known"))
        .add_cte(_RECORD.cte("recorded"))
    )


_PG_RECORD_SUCCESS = _pg_record_success()


def _record_params(entry: LoginRecord) -> dict[str, Any]:
    return {
        "p_user_id": entry.user_id,
        "p_ts": entry.ts,
        "p_result": entry.result.value,
        "p_ip": entry.ip[:64],
        "p_user_agent": entry.user_agent[:MAX_TEXT],
        "p_device_name": entry.device_name[:MAX_TEXT],
        "p_app_id": entry.app_id,
        "p_device_hash": entry.device_hash,
    }


class SqlLoginHistory:
    def __init__(self, engine: AsyncEngine, *, reads: ReadRouter | None = None) -> None:
        self._engine = engine
        # The user's own history and device list may be seconds stale: replica reads.
        self._reads = reads or ReadRouter(engine)
        self._auto = autocommit(engine)
        self._writer = sqlite_writer(engine)
        self._remember = insert_or_nothing(engine, d, "user_id", "device_hash")
        self._prebuilt = Prebuilt(engine)

    @translated
    async def record(self, entry: LoginRecord) -> None:
        async with self._writer:
            await self._prebuilt.run(_RECORD, _record_params(entry))

    @translated
    async def record_success(self, entry: LoginRecord) -> tuple[bool, int]:
        """Record a successful login and remember its device (`entry.device_hash`):
        (was the device new, how many devices were known before)."""
        if self._prebuilt.is_pg:  # one statement, one round trip
            row = await self._prebuilt.first(
                _PG_RECORD_SUCCESS, {**_record_params(entry), "p_now": entry.ts}
            )
            if row is None:  # pragma: no cover - an upsert always returns its row
                return False, 0
            return bool(row["inserted"]), int(row["known"])
        await self.record(entry)
        return await self._remember_device(
            entry.user_id, entry.device_hash or "", entry.user_agent, entry.device_name, entry.ts
        )

    @translated
    async def page(
        self, user_id: int, *, before_id: int | None, limit: int
    ) -> Sequence[LoginRecord]:
        stmt = select(*h.c).where(h.c.user_id == user_id)
        if before_id is not None:
            stmt = stmt.where(h.c.id < before_id)
        stmt = stmt.order_by(h.c.id.desc()).limit(limit)
        rows = await self._reads.all(stmt)  # replica
        return [_record(r._mapping) for r in rows]

    async def _remember_device(
        self,
        user_id: int,
        device_hash: str,
        user_agent: str,
        device_name: str,
        now: datetime,
    ) -> tuple[bool, int]:
        """SQLite: insert the device or touch it, in one transaction."""
        stmt = self._remember.values(
            user_id=user_id,
            device_hash=device_hash,
            user_agent=user_agent[:MAX_TEXT],
            device_name=device_name[:MAX_TEXT],
            first_seen_at=now,
            last_seen_at=now,
        ).returning(d.c.device_hash)
        async with self._writer, self._engine.begin() as conn:
            inserted = (await conn.execute(stmt)).first() is not None
            if not inserted:
                await conn.execute(
                    update(d)
                    .where(d.c.user_id == user_id, d.c.device_hash == device_hash)
                    .values(last_seen_at=now)
                )
                return False, 0
            known = (
                await conn.execute(
                    select(func.count()).select_from(d).where(d.c.user_id == user_id)
                )
            ).scalar_one()
        return True, int(known) - 1

    @translated
    async def devices(self, user_id: int) -> Sequence[KnownDevice]:
        stmt = select(*d.c).where(d.c.user_id == user_id).order_by(d.c.first_seen_at)
        rows = await self._reads.all(stmt)  # replica (new-device decisions use the primary)
        return [
            KnownDevice(r.device_hash, r.user_agent, r.device_name, r.first_seen_at, r.last_seen_at)
            for r in rows
        ]
