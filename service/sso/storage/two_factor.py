"""`TwoFactorRepository` on SQLAlchemy Core: TOTP rows, backup codes, MFA challenges.

Why this module exists: every two-factor rule that must hold under concurrency
is decided by the database in one conditional statement (compare-and-swap), so
it holds across coroutines, processes and replicas alike:

- replay protection: `UPDATE … SET last_used_step = :s WHERE last_used_step < :s`
  (50 concurrent submissions of one code: one row updated, one success);
- per-account guessing cap: `UPDATE … SET failed_attempts = failed_attempts + 1
  WHERE failed_attempts < :cap` runs *before* any HMAC (no row: no check);
- a backup code: `UPDATE … SET used_at = :now WHERE code_hash = :h AND used_at IS NULL`;
- a challenge: attempts reserved the same way, single use by `used_at IS NULL`;
- enrolment: the pending secret becomes active only if it is still the one
  that was verified (a newer BeginTotpEnrollment makes the confirm fail).

All of these read and write the primary (checklist E8): give it the primary's engine.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import RowMapping, and_, delete, false, func, insert, or_, select, true, update
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from sso.domain.ports import MfaChallengeRecord, TotpState
from sso.storage._sql import autocommit, insert_or_nothing
from sso.storage.errors import translated
from sso.storage.tables import backup_codes as bc
from sso.storage.tables import mfa_challenges as ch
from sso.storage.tables import totp_credentials as tc
from sso.storage.tables import users


def _state(m: RowMapping) -> TotpState:
    return TotpState(
        user_id=m["user_id"],
        enabled=bool(m["enabled"]),
        secret_sealed=m["secret_encrypted"],
        enabled_at=m["enabled_at"],
        last_used_step=m["last_used_step"],
        failed_attempts=m["failed_attempts"],
        pending_sealed=m["pending_secret_encrypted"],
        pending_expires_at=m["pending_expires_at"],
    )


def _challenge(m: RowMapping) -> MfaChallengeRecord:
    return MfaChallengeRecord(
        id_hash=bytes(m["id_hash"]),
        user_id=m["user_id"],
        app_id=m["app_id"],
        user_agent=m["user_agent"],
        ip=m["ip"],
        device_name=m["device_name"],
        created_at=m["created_at"],
        expires_at=m["expires_at"],
        attempts=m["attempts"],
    )


class SqlTwoFactorRepository:
    """Two-factor state; single statements autocommit, multi-statement work in one transaction."""

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine
        self._auto = autocommit(engine)
        self._insert = insert_or_nothing(engine, tc, "user_id").returning(tc.c.user_id)

    @translated
    async def get(self, user_id: int) -> TotpState | None:
        async with self._auto.connect() as conn:
            row = (await conn.execute(select(tc).where(tc.c.user_id == user_id))).first()
        return None if row is None else _state(row._mapping)

    @translated
    async def start_enrollment(
        self, user_id: int, pending_sealed: str, *, expires_at: datetime, now: datetime
    ) -> bool:
        values = {
            "pending_secret_encrypted": pending_sealed,
            "pending_expires_at": expires_at,
            "updated_at": now,
        }
        async with self._auto.connect() as conn:
            # First enrolment: insert unless a row exists (a concurrent begin may have won).
            inserted = (await conn.execute(self._insert.values(user_id=user_id, **values))).first()
            if inserted is not None:
                return True
            # Otherwise replace the pending secret, unless TOTP is already on.
            replaced = (
                await conn.execute(
                    update(tc)
                    .where(tc.c.user_id == user_id, tc.c.enabled == false())
                    .values(**values)
                    .returning(tc.c.user_id)
                )
            ).first()
        return replaced is not None

    @translated
    async def activate(
        self,
        user_id: int,
        pending_sealed: str,
        *,
        step: int,
        code_hashes: Sequence[bytes],
        now: datetime,
    ) -> bool:
        async with self._engine.begin() as conn:
            done = (
                await conn.execute(
                    update(tc)
                    .where(
                        tc.c.user_id == user_id,
                        tc.c.enabled == false(),
                        tc.c.pending_secret_encrypted == pending_sealed,
                        tc.c.pending_expires_at > now,
                    )
                    .values(
                        secret_encrypted=pending_sealed,
                        enabled=True,
                        enabled_at=now,
                        last_used_step=step,
                        failed_attempts=0,
                        pending_secret_encrypted=None,
                        pending_expires_at=None,
                        updated_at=now,
                    )
                    .returning(tc.c.user_id)
                )
            ).first()
            if done is None:
                return False
            await self._store_codes(conn, user_id, code_hashes, now)
            return True

    @staticmethod
    async def _store_codes(
        conn: AsyncConnection, user_id: int, code_hashes: Sequence[bytes], now: datetime
    ) -> None:
        await conn.execute(delete(bc).where(bc.c.user_id == user_id))
        await conn.execute(
            insert(bc),
            [{"user_id": user_id, "code_hash": h, "created_at": now} for h in code_hashes],
        )

    @translated
    async def disable(self, user_id: int) -> bool:
        async with self._engine.begin() as conn:
            gone = (
                await conn.execute(
                    delete(tc).where(tc.c.user_id == user_id).returning(tc.c.user_id)
                )
            ).first()
            await conn.execute(delete(bc).where(bc.c.user_id == user_id))
            await conn.execute(delete(ch).where(ch.c.user_id == user_id))
        return gone is not None

    @translated
    async def reserve_attempt(self, user_id: int, *, cap: int) -> bool:
        stmt = (
            update(tc)
            .where(tc.c.user_id == user_id, tc.c.failed_attempts < cap)
            .values(failed_attempts=tc.c.failed_attempts + 1)
            .returning(tc.c.user_id)
        )
        async with self._auto.connect() as conn:
            return (await conn.execute(stmt)).first() is not None

    @translated
    async def spend_step(self, user_id: int, step: int) -> bool:
        stmt = (
            update(tc)
            .where(
                tc.c.user_id == user_id,
                tc.c.enabled == true(),
                or_(tc.c.last_used_step.is_(None), tc.c.last_used_step < step),
            )
            .values(last_used_step=step, failed_attempts=0)
            .returning(tc.c.user_id)
        )
        async with self._auto.connect() as conn:
            return (await conn.execute(stmt)).first() is not None

    @translated
    async def clear_failures(self, user_id: int) -> None:
        stmt = update(tc).where(tc.c.user_id == user_id, tc.c.failed_attempts > 0)
        async with self._auto.connect() as conn:
            await conn.execute(stmt.values(failed_attempts=0))

    @translated
    async def use_backup_code(self, user_id: int, code_hash: bytes, *, now: datetime) -> bool:
        stmt = (
            update(bc)
            .where(bc.c.code_hash == code_hash, bc.c.user_id == user_id, bc.c.used_at.is_(None))
            .values(used_at=now)
            .returning(bc.c.id)
        )
        async with self._auto.connect() as conn:
            return (await conn.execute(stmt)).first() is not None

    @translated
    async def replace_backup_codes(
        self, user_id: int, code_hashes: Sequence[bytes], *, now: datetime
    ) -> bool:
        async with self._engine.begin() as conn:
            # Touching the TOTP row first serialises concurrent regenerations per user.
            row = (
                await conn.execute(
                    update(tc)
                    .where(tc.c.user_id == user_id, tc.c.enabled == true())
                    .values(updated_at=now)
                    .returning(tc.c.user_id)
                )
            ).first()
            if row is None:
                return False
            await self._store_codes(conn, user_id, code_hashes, now)
            return True

    @translated
    async def backup_codes_left(self, user_id: int) -> int:
        stmt = select(func.count()).where(bc.c.user_id == user_id, bc.c.used_at.is_(None))
        async with self._auto.connect() as conn:
            return int((await conn.execute(stmt)).scalar_one())

    @translated
    async def create_challenge(self, challenge: MfaChallengeRecord) -> None:
        async with self._engine.begin() as conn:
            await conn.execute(
                delete(ch).where(
                    ch.c.user_id == challenge.user_id,
                    or_(ch.c.expires_at <= challenge.created_at, ch.c.used_at.is_not(None)),
                )
            )
            await conn.execute(
                insert(ch).values(
                    id_hash=challenge.id_hash,
                    user_id=challenge.user_id,
                    app_id=challenge.app_id,
                    user_agent=challenge.user_agent,
                    ip=challenge.ip,
                    device_name=challenge.device_name,
                    created_at=challenge.created_at,
                    expires_at=challenge.expires_at,
                    attempts=0,
                )
            )

    @translated
    async def reserve_challenge(
        self, id_hash: bytes, *, now: datetime, cap: int
    ) -> MfaChallengeRecord | None:
        stmt = (
            update(ch)
            .where(
                and_(
                    ch.c.id_hash == id_hash,
                    ch.c.used_at.is_(None),
                    ch.c.expires_at > now,
                    ch.c.attempts < cap,
                )
            )
            .values(attempts=ch.c.attempts + 1)
            .returning(*ch.c)
        )
        async with self._auto.connect() as conn:
            row = (await conn.execute(stmt)).first()
        return None if row is None else _challenge(row._mapping)

    @translated
    async def consume_challenge(self, id_hash: bytes, *, now: datetime) -> bool:
        """Spend the challenge, unless it is spent, expired, or its user was locked
        (LockUser, or a hard lockout) after the password step: in one statement."""
        locked = (
            select(users.c.id)
            .where(
                users.c.id == ch.c.user_id,
                or_(users.c.admin_locked == true(), users.c.hard_locked == true()),
            )
            .exists()
        )
        stmt = (
            update(ch)
            .where(
                ch.c.id_hash == id_hash,
                ch.c.used_at.is_(None),
                ch.c.expires_at > now,
                ~locked,
            )
            .values(used_at=now)
            .returning(ch.c.user_id)
        )
        async with self._auto.connect() as conn:
            return (await conn.execute(stmt)).first() is not None

    @translated
    async def cleanup(self, now: datetime) -> int:
        """Delete expired or used challenges; returns how many went."""
        stmt = delete(ch).where(or_(ch.c.expires_at <= now, ch.c.used_at.is_not(None)))
        async with self._auto.connect() as conn:
            return int((await conn.execute(stmt)).rowcount)
