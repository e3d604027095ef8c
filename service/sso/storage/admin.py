"""The Admin API's queries: user listing and lookup, the admin lock, deletion, statistics, export.

Why this module exists: the login-path repositories (`users.py`, `sessions.py`)
are tuned for one row at a time; administration needs set queries (paged
listings with per-user counts, whole-table statistics, everything held about
one user) that have no place on the hot path. All statements are parameterised;
the email-prefix filter escapes `\\`, `%` and `_` so they match literally.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import ColumnElement, RowMapping, case, delete, func, or_, select, true, update
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from sso.domain.admin import DailyLogins, Stats, UserInfo, password_scheme
from sso.domain.auth import session_ref
from sso.domain.events import SecurityEvent
from sso.storage._sql import autocommit
from sso.storage.errors import translated
from sso.storage.replicas import ReadRouter
from sso.storage.tables import apps, audit_events, refresh_tokens, sessions, users

# Most recent audit rows a GDPR export carries about one user.
MAX_EXPORT_EVENTS = 5_000
LOGIN_FAILED = (
    SecurityEvent.LOGIN_FAIL.value,
    SecurityEvent.LOGIN_LOCK.value,
    SecurityEvent.LOGIN_FAIL_MAX.value,
)
LOGIN_OK = SecurityEvent.LOGIN_SUCCESS.value


def like_prefix(prefix: str) -> str:
    """A LIKE pattern matching `prefix` literally at the start (escape character `\\`)."""
    escaped = prefix.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"{escaped}%"


def _iso(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat()


def _live(now: datetime) -> tuple[ColumnElement[bool], ...]:
    return (sessions.c.revoked_at.is_(None), sessions.c.expires_at > now)


class SqlAdminStore:
    """The `AdminStore` port on SQLAlchemy Core (PostgreSQL and SQLite)."""

    def __init__(self, engine: AsyncEngine, *, reads: ReadRouter | None = None) -> None:
        self._engine = engine
        # Listings, statistics and export may be seconds stale: a healthy replica serves them.
        self._reads = reads or ReadRouter(engine)
        self._auto = autocommit(engine)
        self._pg = engine.dialect.name == "postgresql"

    def _user_select(self, now: datetime) -> Any:
        u = users.c
        active = (
            select(func.count())
            .select_from(sessions)
            .where(sessions.c.user_id == u.id, *_live(now))
            .scalar_subquery()
        )
        last_login = (
            select(func.max(audit_events.c.ts))
            .where(
                audit_events.c.user_id == u.id,
                audit_events.c.event == LOGIN_OK,
                # Rows older than the account are not its own (an id restored from a backup).
                audit_events.c.ts >= u.created_at,
            )
            .scalar_subquery()
        )
        return select(
            u.id,
            u.email,
            u.email_verified,
            u.is_admin,
            u.admin_locked,
            u.hard_locked,
            u.locked_until,
            u.created_at,
            u.password_hash,
            active.label("active_sessions"),
            last_login.label("last_login_at"),
        )

    @staticmethod
    def _info(m: RowMapping) -> UserInfo:
        last = m["last_login_at"]
        if isinstance(last, str):  # SQLite: an aggregate over the text column
            last = datetime.fromisoformat(last)
        if last is not None and last.tzinfo is None:
            last = last.replace(tzinfo=UTC)
        return UserInfo(
            id=m["id"],
            email=m["email"],
            email_verified=m["email_verified"],
            is_admin=m["is_admin"],
            admin_locked=m["admin_locked"],
            hard_locked=m["hard_locked"],
            locked_until=m["locked_until"],
            created_at=m["created_at"],
            last_login_at=last,
            active_sessions=int(m["active_sessions"] or 0),
            password_scheme=password_scheme(m["password_hash"]),
        )

    @translated
    async def list_users(
        self, *, after_id: int, limit: int, email_prefix: str, now: datetime
    ) -> Sequence[UserInfo]:
        stmt = self._user_select(now).where(users.c.id > after_id)
        if email_prefix:
            stmt = stmt.where(users.c.email.like(like_prefix(email_prefix), escape="\\"))
        stmt = stmt.order_by(users.c.id).limit(limit)
        rows = await self._reads.all(stmt)  # replica: an admin listing
        return [self._info(row._mapping) for row in rows]

    @translated
    async def get_user(self, user_id: int, now: datetime) -> UserInfo | None:
        stmt = self._user_select(now).where(users.c.id == user_id)
        # Primary: LockUser/UnlockUser/SetAdmin answer with this read right after their write.
        async with self._auto.connect() as conn:
            row = (await conn.execute(stmt)).first()
        return None if row is None else self._info(row._mapping)

    @translated
    async def set_admin_lock(self, user_id: int, locked: bool) -> bool:
        stmt = (
            update(users)
            .where(users.c.id == user_id)
            .values(admin_locked=locked)
            .returning(users.c.id)
        )
        async with self._auto.connect() as conn:
            return (await conn.execute(stmt)).first() is not None

    @translated
    async def delete_user(self, user_id: int, now: datetime) -> Sequence[str] | None:
        """Delete the user, their sessions and refresh tokens in one transaction.

        Tables of other features reference `users.id` with ON DELETE CASCADE and go
        with the row. Audit rows stay: they are append-only and carry only the id.
        """
        mine = select(sessions.c.id).where(sessions.c.user_id == user_id)
        async with self._engine.begin() as conn:
            live = (await conn.execute(mine.where(*_live(now)))).all()
            await conn.execute(delete(refresh_tokens).where(refresh_tokens.c.session_id.in_(mine)))
            await conn.execute(delete(sessions).where(sessions.c.user_id == user_id))
            gone = await conn.execute(
                delete(users).where(users.c.id == user_id).returning(users.c.id)
            )
            if gone.first() is None:
                return None
        return [row[0] for row in live]

    @translated
    async def stats(self, now: datetime, since: datetime) -> Stats:
        u = users.c

        def count(table: Any, *where: ColumnElement[bool]) -> Any:
            return select(func.count()).select_from(table).where(*where).scalar_subquery()

        locked = or_(u.admin_locked == true(), u.hard_locked == true(), u.locked_until > now)
        totals = select(
            count(users, true()).label("users"),
            count(users, u.email_verified == true()).label("verified"),
            count(users, u.is_admin == true()).label("admins"),
            count(users, locked).label("locked"),
            count(users, func.substr(u.password_hash, 1, 2) == "$2").label("legacy"),
            count(sessions, *_live(now)).label("sessions"),
        )
        a = audit_events.c
        day = (
            func.to_char(func.timezone("UTC", a.ts), "YYYY-MM-DD")
            if self._pg
            else func.substr(a.ts, 1, 10)
        ).label("day")
        daily = (
            select(
                day,
                func.sum(case((a.event == LOGIN_OK, 1), else_=0)).label("ok"),
                func.sum(case((a.event.in_(LOGIN_FAILED), 1), else_=0)).label("failed"),
            )
            .where(a.ts >= since, a.event.in_((LOGIN_OK, *LOGIN_FAILED)))
            .group_by(day)
            .order_by(day)
        )

        async def read(conn: AsyncConnection) -> tuple[RowMapping, Any, Sequence[Any]]:
            t = (await conn.execute(totals)).one()._mapping
            app_count = (await conn.execute(select(func.count()).select_from(apps))).scalar_one()
            return t, app_count, (await conn.execute(daily)).all()

        t, app_count, days = await self._reads.run(read)  # replica: whole-table counts
        return Stats(
            users=int(t["users"]),
            verified_users=int(t["verified"]),
            active_sessions=int(t["sessions"]),
            admins=int(t["admins"]),
            locked_users=int(t["locked"]),
            legacy_password_hashes=int(t["legacy"]),
            apps=int(app_count),
            logins_per_day=tuple(
                DailyLogins(str(r.day), int(r.ok or 0), int(r.failed or 0)) for r in days
            ),
        )

    # -- GDPR export sections -------------------------------------------------------

    @translated
    async def user_profile(self, user_id: int) -> Mapping[str, object] | None:
        u = users.c
        stmt = select(
            u.id,
            u.email,
            u.email_verified,
            u.is_admin,
            u.created_at,
            u.updated_at,
            u.admin_locked,
            u.hard_locked,
            u.locked_until,
            u.failed_logins,
            u.last_failed_at,
            u.password_hash,
        ).where(u.id == user_id)
        row = await self._reads.first(stmt)  # replica: export
        if row is None:
            return None
        m = row._mapping
        return {
            "user_id": m["id"],
            "email": m["email"],
            "email_verified": m["email_verified"],
            "is_admin": m["is_admin"],
            "created_at": _iso(m["created_at"]),
            "updated_at": _iso(m["updated_at"]),
            "admin_locked": m["admin_locked"],
            "hard_locked": m["hard_locked"],
            "locked_until": _iso(m["locked_until"]),
            "failed_logins": m["failed_logins"],
            "last_failed_at": _iso(m["last_failed_at"]),
            # The scheme only: a password verifier is never exported.
            "password_scheme": password_scheme(m["password_hash"]),
        }

    @translated
    async def user_sessions(self, user_id: int) -> Sequence[Mapping[str, object]]:
        s = sessions.c
        stmt = select(*sessions.c).where(s.user_id == user_id).order_by(s.created_at, s.id)
        rows = await self._reads.all(stmt)  # replica: export (decides no session's validity)
        return [
            {
                # Hashed like in the audit trail: a session id is a revocation handle.
                "session": session_ref(r.id),
                "app_id": r.app_id,
                "user_agent": r.user_agent,
                "ip": r.ip,
                "device_name": r.device_name,
                "created_at": _iso(r.created_at),
                "last_used_at": _iso(r.last_used_at),
                "expires_at": _iso(r.expires_at),
                "revoked_at": _iso(r.revoked_at),
                "revoke_reason": r.revoke_reason,
            }
            for r in rows
        ]

    @translated
    async def user_audit_events(self, user_id: int) -> Sequence[Mapping[str, object]]:
        a = audit_events.c
        stmt = (
            select(a.ts, a.event, a.outcome, a.target, a.ip, a.request_id, a.details)
            .where(
                or_(a.user_id == user_id, a.target == f"user:{user_id}"),
                # Only this account's history (rows older than it belong to no one it may see).
                a.ts >= select(users.c.created_at).where(users.c.id == user_id).scalar_subquery(),
            )
            .order_by(a.ts.desc(), a.id.desc())
            .limit(MAX_EXPORT_EVENTS)
        )
        rows = await self._reads.all(stmt)  # replica: export
        return [
            {
                "ts": _iso(r.ts),
                "event": r.event,
                "outcome": r.outcome,
                "target": r.target,
                "ip": r.ip,
                "request_id": r.request_id,
                "details": r.details,
            }
            for r in rows
        ]
