"""Reading the Go SSO service's SQLite file, and writing an import into ours atomically.

Why this module exists: issue 9 moves teams off the original Go service with
their user ids, app ids and secrets, and passwords intact. The rules (what is
imported, skipped or a conflict) live in `sso.domain.legacy_import`; this
module does the I/O around them:

- `read_legacy(path)` opens the old file **read-only** (`mode=ro`: it is never
  written, so rolling back means pointing the Go service at it again) and reads
  `users(id, email, pass_hash, is_admin)` and `apps(id, name, secret)`.
- `LegacyImporter.run()` reads our users and apps, asks the domain for a plan,
  and applies it in **one transaction**: either every planned row lands or none.
  Two imports at once are serialised (a PostgreSQL advisory lock; SQLite has one
  writer anyway). Before inserting, the identity sequences are moved past the
  largest legacy id (PostgreSQL `setval`, which takes effect at once), so a
  registration running meanwhile is handed an id after them and cannot collide.
  SQLite needs nothing: an `INTEGER PRIMARY KEY` continues after the largest id.
- `count_bcrypt_hashes()` is the number behind the `sso_legacy_password_hashes` gauge.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import func, insert, select, text, update
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from sso.domain.legacy_import import (
    CurrentApp,
    CurrentUser,
    ImportPlan,
    LegacyApp,
    LegacyUser,
    plan_import,
)
from sso.domain.ports import SecretCipher
from sso.errors import SSOError
from sso.storage._sql import Clock, utc_now
from sso.storage.errors import translate_errors
from sso.storage.tables import apps, users

# pg_advisory_xact_lock key: "sso legacy import" (any constant unique to this use).
_ADVISORY_KEY = 0x550_1E6A
_INSERT_BATCH = 1000
_LEGACY_COLUMNS = {
    "users": {"id", "email", "pass_hash", "is_admin"},
    "apps": {"id", "name", "secret"},
}


class LegacySourceError(SSOError):
    """The old database cannot be read, or does not have the Go service's schema."""

    reason = "LEGACY_SOURCE"
    default_message = "the legacy database cannot be read"


@dataclass(frozen=True, slots=True)
class LegacySnapshot:
    users: list[LegacyUser]
    apps: list[LegacyApp]


@dataclass
class ImportOutcome:
    """The plan plus what applying it did to the sequences."""

    plan: ImportPlan
    dry_run: bool
    next_user_id: int
    next_app_id: int
    seconds: float = 0.0
    notes: list[str] = field(default_factory=list)


def _text(value: Any) -> str:
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value).decode("utf-8", errors="replace")
    return "" if value is None else str(value)


def _int(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def _bool(value: Any) -> bool:
    if isinstance(value, str | bytes):
        return _text(value).strip().lower() in {"1", "t", "true"}
    return bool(value)


def _read_sync(path: Path) -> LegacySnapshot:
    if not path.is_file():
        raise LegacySourceError(f"no such file: {path}")
    try:
        conn = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
    except sqlite3.Error as exc:
        raise LegacySourceError(f"cannot open {path}: {exc}") from None
    try:
        for table, needed in _LEGACY_COLUMNS.items():
            found = {row[1] for row in conn.execute(f"PRAGMA table_info({table})")}
            if not needed <= found:
                missing = ", ".join(sorted(needed - found)) or table
                raise LegacySourceError(f"{path} is not a Go SSO database: {table} lacks {missing}")
        user_rows = conn.execute("SELECT id, email, pass_hash, is_admin FROM users").fetchall()
        app_rows = conn.execute("SELECT id, name, secret FROM apps").fetchall()
    except sqlite3.Error as exc:
        raise LegacySourceError(f"cannot read {path}: {exc}") from None
    finally:
        conn.close()
    return LegacySnapshot(
        users=[LegacyUser(_int(r[0]), _text(r[1]), _text(r[2]), _bool(r[3])) for r in user_rows],
        apps=[LegacyApp(_int(r[0]), _text(r[1]), _text(r[2])) for r in app_rows],
    )


async def read_legacy(path: Path) -> LegacySnapshot:
    """Every user and app row of the Go service's SQLite file (opened read-only)."""
    return await asyncio.to_thread(_read_sync, path)


async def count_bcrypt_hashes(engine: AsyncEngine) -> int:
    """Users whose stored hash is still a legacy bcrypt one (`$2a$`, `$2b$`, `$2y$`)."""
    stmt = select(func.count()).select_from(users).where(users.c.password_hash.like("$2%"))
    with translate_errors():
        async with engine.connect() as conn:
            return int((await conn.execute(stmt)).scalar_one())


async def _next_id(conn: AsyncConnection, table: str, past: int, *, advance: bool) -> int:
    """The next id `table` will generate, first moved past `past` when `advance` is set."""
    top = int((await conn.execute(text(f"SELECT MAX(id) FROM {table}"))).scalar() or 0)  # noqa: S608
    top = max(top, past)
    if conn.dialect.name != "postgresql":
        return top + 1  # SQLite: an INTEGER PRIMARY KEY continues after the largest id
    seq = f"pg_get_serial_sequence('{table}', 'id')"
    last = (await conn.execute(text(f"SELECT pg_sequence_last_value({seq}::regclass)"))).scalar()
    current = int(last) if last is not None else 0
    if current < top and advance:
        # setval is not transactional: it holds even if this import then rolls back.
        await conn.execute(text(f"SELECT setval({seq}, :v, true)"), {"v": top})
        current = top
    return max(current, top) + 1


class LegacyImporter:
    """Applies a legacy import to our database (PostgreSQL or SQLite) in one transaction."""

    def __init__(self, engine: AsyncEngine, cipher: SecretCipher, *, clock: Clock = utc_now):
        self._engine = engine
        self._cipher = cipher
        self._clock = clock

    async def run(self, snapshot: LegacySnapshot, *, dry_run: bool = False) -> ImportOutcome:
        started = time.perf_counter()
        with translate_errors():
            async with self._engine.connect() as conn:
                trans = await conn.begin()
                try:
                    outcome = await self._run(conn, snapshot, dry_run)
                except BaseException:
                    await trans.rollback()
                    raise
                if dry_run:
                    await trans.rollback()
                else:
                    await trans.commit()
        outcome.seconds = time.perf_counter() - started
        return outcome

    async def _run(
        self, conn: AsyncConnection, snapshot: LegacySnapshot, dry_run: bool
    ) -> ImportOutcome:
        postgres = conn.dialect.name == "postgresql"
        if postgres:
            # The service's per-statement and idle-in-transaction limits are for RPCs; an
            # import reads whole tables and plans between statements (this transaction only).
            await conn.execute(text("SET LOCAL statement_timeout = 0"))
            await conn.execute(text("SET LOCAL idle_in_transaction_session_timeout = 0"))
            await conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _ADVISORY_KEY})
        elif not dry_run:
            # Take SQLite's write lock now, so what we read cannot change before we write.
            await conn.execute(text("DELETE FROM apps WHERE 0 = 1"))
        max_user = max((u.id for u in snapshot.users if 0 < u.id < 2**63), default=0)
        max_app = max((a.id for a in snapshot.apps if 0 < a.id < 2**31), default=0)
        if postgres:
            # Sequences first (setval acts at once, outside this transaction): a registration
            # running meanwhile gets an id past every legacy id, skipped rows' ids included.
            await _next_id(conn, "users", max_user, advance=not dry_run)
            await _next_id(conn, "apps", max_app, advance=not dry_run)
        plan = plan_import(
            snapshot.users, snapshot.apps, await self._users(conn), await self._apps(conn)
        )
        if not postgres:  # SQLite continues after the largest id present: what this run inserts
            max_user = max((u.id for u in plan.new_users), default=0)
            max_app = max((a.id for a in plan.new_apps), default=0)
        if not dry_run:
            await self._apply(conn, plan)
        next_user = await _next_id(conn, "users", max_user, advance=False)
        next_app = await _next_id(conn, "apps", max_app, advance=False)
        return ImportOutcome(plan, dry_run, next_user, next_app)

    async def _users(self, conn: AsyncConnection) -> list[CurrentUser]:
        c = users.c
        rows = await conn.execute(select(c.id, c.email, c.password_hash, c.is_admin))
        return [CurrentUser(r.id, r.email, r.password_hash, bool(r.is_admin)) for r in rows]

    async def _apps(self, conn: AsyncConnection) -> list[CurrentApp]:
        rows = await conn.execute(select(apps.c.id, apps.c.name, apps.c.secret_encrypted))
        result = []
        for r in rows:
            try:
                secret: str | None = self._cipher.decrypt(r.secret_encrypted)
            except SSOError:  # sealed under another data key: reported as a conflict
                secret = None
            result.append(CurrentApp(r.id, r.name, secret))
        return result

    async def _apply(self, conn: AsyncConnection, plan: ImportPlan) -> None:
        now = self._clock()
        user_rows = [
            {
                "id": u.id,
                "email": u.email,
                "password_hash": u.password_hash,
                "is_admin": u.is_admin,
                "email_verified": False,
                "created_at": now,
                "updated_at": now,
            }
            for u in plan.new_users
        ]
        app_rows = [
            {
                "id": a.id,
                "name": a.name,
                "secret_encrypted": self._cipher.encrypt(a.secret),
                "created_at": now,
            }
            for a in plan.new_apps
        ]
        for table, rows in ((apps, app_rows), (users, user_rows)):
            for start in range(0, len(rows), _INSERT_BATCH):
                await conn.execute(insert(table), rows[start : start + _INSERT_BATCH])
        for change in plan.hash_updates:
            await conn.execute(
                update(users)
                .where(users.c.id == change.user_id)
                .values(password_hash=change.password_hash, updated_at=now)
            )
