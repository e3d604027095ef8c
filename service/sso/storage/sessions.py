"""`SessionRepository` on SQLAlchemy Core: sessions and their refresh-token families.

A session is one login on one device; its refresh tokens form a chain
(`replaced_by`) in which at most one token is unused at any time. Tokens are
stored only as 32-byte hashes (E7). `rotate()` is the refresh hot path and its
concurrency argument is written down in `rotation.py`; everything else here is
one statement per call (autocommit) except `create()`, which inserts the
session and its first token in one statement on PostgreSQL (a data-modifying
CTE) and in one transaction on SQLite. The hot statements are prebuilt
(`sso.storage.prebuilt`).

Security-deciding reads (rotation, revocation) always go to the engine given
here, which must be the primary (DESIGN.md §2 Storage).
"""

from __future__ import annotations

import hmac
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import delete, exists, or_, select, update
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from sso.domain.models import NewSession, RotationOutcome, RotationStatus, Session, User
from sso.errors import Conflict
from sso.storage import rotation as q
from sso.storage._sql import autocommit, sqlite_writer
from sso.storage.errors import translated
from sso.storage.prebuilt import Prebuilt, Row
from sso.storage.tables import refresh_tokens as rt
from sso.storage.tables import sessions as s

REUSE_REASON = "token_reuse"


def _session(m: Row) -> Session:
    return Session(
        id=m["id"],
        user_id=m["user_id"],
        app_id=m["app_id"],
        user_agent=m["user_agent"],
        ip=m["ip"],
        device_name=m["device_name"],
        created_at=m["created_at"],
        last_used_at=m["last_used_at"],
        expires_at=m["expires_at"],
        revoked_at=m["revoked_at"],
        revoke_reason=m["revoke_reason"],
        amr=tuple(m["amr"].split()),
    )


def _user(m: Row) -> User | None:
    """The `u_*` columns of a rotation row (None: the user is gone)."""
    if m["u_id"] is None:
        return None
    return User(
        id=m["u_id"],
        email=m["u_email"],
        password_hash=m["u_password_hash"],
        is_admin=m["u_is_admin"],
        email_verified=m["u_email_verified"],
        created_at=m["u_created_at"],
        tokens_valid_after=m["u_tokens_valid_after"],
    )


def _live(now: datetime) -> tuple[Any, ...]:
    return (s.c.revoked_at.is_(None), s.c.expires_at > now)


class SqlSessionRepository:
    """Sessions and refresh tokens; give it the primary's engine."""

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine
        self._auto = autocommit(engine)
        self._prebuilt = Prebuilt(engine)
        # SQLite has one writer at a time and makes waiters poll (busy_timeout, sleeps of
        # up to 100 ms). Queueing this process's rotations here instead keeps a burst of
        # refreshes on one session from turning into seconds of polling.
        self._sqlite_writer = sqlite_writer(engine)

    @translated
    async def create(
        self, session: NewSession, refresh_hash: bytes, refresh_expires_at: datetime
    ) -> None:
        """Insert the session and its first refresh token in one transaction.

        `AlreadyExists` if the session id or token hash is taken; `NotFound` if
        the user or app is gone.
        """
        params = {
            "p_id": session.id,
            "p_user_id": session.user_id,
            "p_app_id": session.app_id,
            "p_user_agent": session.user_agent,
            "p_ip": session.ip,
            "p_device_name": session.device_name,
            "p_created_at": session.created_at,
            "p_expires_at": session.expires_at,
            "p_token_hash": refresh_hash,
            "p_token_expires_at": min(refresh_expires_at, session.expires_at),
            "p_amr": " ".join(session.amr),
        }
        if self._prebuilt.is_pg:  # one statement (a data-modifying CTE): one round trip
            await self._prebuilt.run(q.PG_CREATE, params)
            return
        async with self._engine.begin() as conn:
            await conn.execute(q.INSERT_SESSION, params)
            await conn.execute(q.INSERT_FIRST_TOKEN, params)

    @translated
    async def rotate(
        self,
        presented_hash: bytes,
        successor_hash: bytes,
        *,
        now: datetime,
        idle_ttl: timedelta,
        grace: timedelta,
    ) -> RotationOutcome:
        """Spend a refresh token and store its successor, atomically (see ports.py)."""
        params = {
            "now": now,
            "presented": presented_hash,
            "successor": successor_hash,
            "idle_expires_at": now + idle_ttl,
        }
        if self._prebuilt.is_pg:
            m = await self._prebuilt.first(q.PG_ROTATE, params)
            if m is not None:
                session = _session(m)
                if session.revoked_at is not None:
                    # A revoke committed while the statement waited for the session
                    # row: the successor exists but is dead; say so now.
                    return RotationOutcome(RotationStatus.REVOKED, session)
                return RotationOutcome(
                    RotationStatus.ROTATED, session, m["successor_expires_at"], _user(m)
                )
            async with self._auto.connect() as conn:
                return await self._classify(conn, params, successor_hash, now, grace)
        async with self._sqlite_writer, self._engine.begin() as conn:
            spent = (await conn.execute(q.CAS, params)).first()
            if spent is None:
                return await self._classify(conn, params, successor_hash, now, grace)
            token_id, session_id = spent
            touched = (
                await conn.execute(q.TOUCH_SESSION, {"now": now, "session_id": session_id})
            ).one()
            session = _session(touched._mapping)
            successor_expires_at = min(now + idle_ttl, session.expires_at)
            new_id = (
                await conn.execute(
                    q.INSERT_SUCCESSOR,
                    {**params, "session_id": session_id, "idle_expires_at": successor_expires_at},
                )
            ).scalar_one()
            await conn.execute(q.LINK_SUCCESSOR, {"token_id": token_id, "new_id": new_id})
            user = (await conn.execute(q.USER_OF_SESSION, {"user_id": session.user_id})).first()
            return RotationOutcome(
                RotationStatus.ROTATED,
                session,
                successor_expires_at,
                None if user is None else _user(user._mapping),
            )

    async def _classify(
        self,
        conn: AsyncConnection,
        params: dict[str, Any],
        successor_hash: bytes,
        now: datetime,
        grace: timedelta,
    ) -> RotationOutcome:
        """Why the CAS took nothing, in the order of the port's docstring."""
        row = (await conn.execute(q.CLASSIFY, params)).first()
        if row is None:
            return RotationOutcome(RotationStatus.NOT_FOUND)
        m = row._mapping
        session = _session(m)
        if session.revoked_at is not None:
            return RotationOutcome(RotationStatus.REVOKED, session)
        if session.expires_at <= now or m["t_expires_at"] <= now:
            return RotationOutcome(RotationStatus.EXPIRED, session)
        if m["t_used_at"] is None:
            # Unused, unexpired and live, yet the CAS missed it: only a concurrent
            # change between the two statements can do that. Let the caller retry.
            raise Conflict()
        if (
            grace > timedelta(0)
            and m["t_used_at"] >= now - grace
            and m["succ_hash"] is not None
            and m["succ_used_at"] is None
            and m["succ_expires_at"] > now
            and hmac.compare_digest(bytes(m["succ_hash"]), successor_hash)
        ):
            return RotationOutcome(RotationStatus.GRACE, session, m["succ_expires_at"], _user(m))
        revoked = (
            await conn.execute(q.REVOKE_FOR_REUSE, {"now": now, "session_id": session.id})
        ).first()
        if revoked is None:  # a concurrent replay revoked it first
            revoked = (await conn.execute(select(*s.c).where(s.c.id == session.id))).one()
        return RotationOutcome(RotationStatus.REUSED, _session(revoked._mapping))

    @translated
    async def get(self, session_id: str) -> Session | None:
        async with self._auto.connect() as conn:
            row = (await conn.execute(select(*s.c).where(s.c.id == session_id))).first()
        return None if row is None else _session(row._mapping)

    @translated
    async def get_by_refresh(self, refresh_hash: bytes) -> Session | None:
        """The session a refresh token belongs to (used, expired or not)."""
        stmt = (
            select(*s.c)
            .select_from(s.join(rt, rt.c.session_id == s.c.id))
            .where(rt.c.token_hash == refresh_hash)
        )
        async with self._auto.connect() as conn:
            row = (await conn.execute(stmt)).first()
        return None if row is None else _session(row._mapping)

    @translated
    async def list_active(self, user_id: int, now: datetime) -> Sequence[Session]:
        """Sessions that can still be refreshed: not revoked, not expired, not idle.

        Idle sessions are recognised without knowing the idle TTL: their only
        unused refresh token has expired.
        """
        usable_token = exists().where(
            rt.c.session_id == s.c.id, rt.c.used_at.is_(None), rt.c.expires_at > now
        )
        stmt = (
            select(*s.c)
            .where(s.c.user_id == user_id, *_live(now), usable_token)
            .order_by(s.c.last_used_at.desc(), s.c.id)
        )
        async with self._auto.connect() as conn:
            rows = (await conn.execute(stmt)).all()
        return [_session(row._mapping) for row in rows]

    @translated
    async def revoke(
        self, session_id: str, *, user_id: int | None, reason: str, now: datetime
    ) -> Session | None:
        """Revoke one live session (of `user_id` when given); None when nothing matched."""
        stmt = update(s).where(s.c.id == session_id, *_live(now))
        if user_id is not None:
            stmt = stmt.where(s.c.user_id == user_id)
        stmt = stmt.values(revoked_at=now, revoke_reason=reason).returning(*s.c)
        async with self._auto.connect() as conn:
            row = (await conn.execute(stmt)).first()
        return None if row is None else _session(row._mapping)

    @translated
    async def revoke_all(
        self, user_id: int, *, reason: str, now: datetime, keep: str | None = None
    ) -> Sequence[Session]:
        """Revoke every live session of the user except `keep`; returns those revoked."""
        stmt = update(s).where(s.c.user_id == user_id, *_live(now))
        if keep is not None:
            stmt = stmt.where(s.c.id != keep)
        stmt = stmt.values(revoked_at=now, revoke_reason=reason).returning(*s.c)
        async with self._auto.connect() as conn:
            rows = (await conn.execute(stmt)).all()
        return [_session(row._mapping) for row in rows]

    @translated
    async def cleanup(self, now: datetime, *, keep_revoked_for: timedelta) -> int:
        """Delete expired tokens, and sessions expired or revoked longer than the retention.

        Expired tokens carry no information any more: `rotate()` answers EXPIRED
        for them before it would look at reuse. Returns the rows deleted
        (tokens and sessions). Each statement commits on its own, so writers
        are never blocked behind one long transaction.
        """
        dead_session = or_(
            s.c.expires_at <= now,
            s.c.revoked_at <= now - keep_revoked_for,
        )
        dead_ids = select(s.c.id).where(dead_session)
        async with self._auto.connect() as conn:
            tokens = await conn.execute(
                delete(rt).where(or_(rt.c.expires_at <= now, rt.c.session_id.in_(dead_ids)))
            )
            gone = await conn.execute(delete(s).where(dead_session))
        return int(tokens.rowcount or 0) + int(gone.rowcount or 0)
