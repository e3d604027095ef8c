"""`AppRepository` on SQLAlchemy Core: client apps with their secrets encrypted at rest.

The legacy `auth.Auth` API signs HS256 tokens with each app's secret, so the
secret must be recoverable (a hash will not do) but must not sit in the
database in clear: it goes through the `SecretCipher` port (authenticated
encryption, implemented in `sso.security.secretbox` and injected by the
composition root, since `sso.storage` may not import `sso.security`).

The Admin API (docs/admin.md) adds metadata, paging, updates, secret rotation
(one `UPDATE` moves the current ciphertext to `previous_secret_encrypted` and
stores the new one, so concurrent rotations serialise on the row) and deletion
(the app's sessions go in the same transaction: `sessions.app_id` has no ON
DELETE rule on purpose, see migration 0005).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import RowMapping, Select, delete, func, select, text, update
from sqlalchemy.ext.asyncio import AsyncEngine

from sso.domain.admin import AppInfo
from sso.domain.models import App
from sso.domain.ports import SecretCipher
from sso.errors import AlreadyExists
from sso.storage._sql import Clock, autocommit, insert_or_nothing, utc_now
from sso.storage.errors import translated
from sso.storage.replicas import ReadRouter
from sso.storage.tables import apps, sessions

_COLUMNS = (
    apps.c.id,
    apps.c.name,
    apps.c.secret_encrypted,
    apps.c.created_at,
    apps.c.previous_secret_encrypted,
    apps.c.previous_secret_expires_at,
    apps.c.login_rate_limit_per_minute,
    apps.c.display_name,
    apps.c.redirect_uris,
    apps.c.updated_at,
    apps.c.secret_rotated_at,
)


def _uris(raw: str | None) -> tuple[str, ...]:
    if not raw:
        return ()
    value = json.loads(raw)
    return tuple(str(v) for v in value) if isinstance(value, list) else ()


class SqlAppRepository:
    """Apps table access; secrets are encrypted before INSERT and decrypted after SELECT."""

    def __init__(
        self,
        engine: AsyncEngine,
        cipher: SecretCipher,
        *,
        clock: Clock = utc_now,
        reads: ReadRouter | None = None,
    ) -> None:
        self._raw = engine
        # Lag-tolerant reads (lookups, listings): a healthy replica, else the primary.
        self._reads = reads or ReadRouter(engine)
        self._engine = autocommit(engine)
        self._cipher = cipher
        self._clock = clock
        self._pg = engine.dialect.name == "postgresql"
        self._insert = insert_or_nothing(engine, apps, "name").returning(*_COLUMNS)

    def _app(self, m: RowMapping) -> App:
        previous = m["previous_secret_encrypted"]
        return App(
            id=m["id"],
            name=m["name"],
            secret=self._cipher.decrypt(m["secret_encrypted"]),
            created_at=m["created_at"],
            previous_secret=self._cipher.decrypt(previous) if previous else None,
            previous_secret_expires_at=m["previous_secret_expires_at"],
            login_rate_limit_per_minute=m["login_rate_limit_per_minute"],
        )

    def _info(self, m: RowMapping) -> AppInfo:
        return AppInfo(
            app=self._app(m),
            display_name=m["display_name"] or "",
            redirect_uris=_uris(m["redirect_uris"]),
            updated_at=m["updated_at"],
            secret_rotated_at=m["secret_rotated_at"],
        )

    @translated
    async def create(
        self,
        name: str,
        secret: str,
        *,
        app_id: int | None = None,
        display_name: str = "",
        redirect_uris: Sequence[str] = (),
        login_rate_limit_per_minute: int = 0,
    ) -> App:
        """Store the secret encrypted; `AlreadyExists` when the name (or the id) is taken."""
        return (
            await self.create_info(
                name,
                secret,
                app_id=app_id,
                display_name=display_name,
                redirect_uris=redirect_uris,
                login_rate_limit_per_minute=login_rate_limit_per_minute,
            )
        ).app

    @translated
    async def create_info(
        self,
        name: str,
        secret: str,
        *,
        app_id: int | None = None,
        display_name: str = "",
        redirect_uris: Sequence[str] = (),
        login_rate_limit_per_minute: int = 0,
    ) -> AppInfo:
        now = self._clock()
        params: dict[str, object] = {
            "name": name,
            "secret_encrypted": self._cipher.encrypt(secret),
            "created_at": now,
            "updated_at": now,
            "secret_rotated_at": now,
            "display_name": display_name or None,
            "redirect_uris": json.dumps(list(redirect_uris)) if redirect_uris else None,
            "login_rate_limit_per_minute": login_rate_limit_per_minute,
        }
        if app_id:
            params["id"] = app_id
        async with self._engine.connect() as conn:
            row = (await conn.execute(self._insert, params)).first()
            if row is not None and app_id and self._pg:
                # An explicit id does not advance the identity sequence: move it past the
                # largest id so the next allocated id cannot collide with this one.
                await conn.execute(
                    text(
                        "SELECT setval(pg_get_serial_sequence('apps', 'id'), GREATEST("
                        "(SELECT MAX(id) FROM apps), pg_sequence_last_value("
                        "pg_get_serial_sequence('apps', 'id')::regclass)))"
                    )
                )
        if row is None:
            raise AlreadyExists("app name already taken", reason="APP_NAME_TAKEN")
        return self._info(row._mapping)

    async def _lookup(self, stmt: Select[Any]) -> RowMapping | None:
        """One app row from a replica; not there, from the primary (not yet replayed? an
        app created a moment ago must be usable at once)."""
        row = await self._reads.first(stmt)
        if row is None and self._reads.replicas:
            async with self._engine.connect() as conn:
                row = (await conn.execute(stmt)).first()
        return None if row is None else row._mapping

    @translated
    async def get(self, app_id: int) -> App | None:
        # Replica: every Login looks its app up; in front sit the app caches (appcache.py).
        m = await self._lookup(select(*_COLUMNS).where(apps.c.id == app_id))
        return None if m is None else self._app(m)

    @translated
    async def get_info(self, app_id: int) -> AppInfo | None:
        m = await self._lookup(select(*_COLUMNS).where(apps.c.id == app_id))
        return None if m is None else self._info(m)

    @translated
    async def get_sealed(self, app_id: int) -> dict[str, object] | None:
        """The app as stored (secrets still encrypted), JSON-ready, read from the primary.

        What the shared Redis cache keeps (appcache.py): never a decrypted secret. The
        primary, not a replica, so a fill can never put back what an update replaced.
        """
        async with self._engine.connect() as conn:
            row = (await conn.execute(select(*_COLUMNS).where(apps.c.id == app_id))).first()
        if row is None:
            return None
        m = row._mapping
        expires = m["previous_secret_expires_at"]
        return {
            "id": m["id"],
            "name": m["name"],
            "secret_encrypted": m["secret_encrypted"],
            "created_at": m["created_at"].isoformat(),
            "previous_secret_encrypted": m["previous_secret_encrypted"],
            "previous_secret_expires_at": None if expires is None else expires.isoformat(),
            "login_rate_limit_per_minute": m["login_rate_limit_per_minute"],
        }

    def unseal(self, sealed: Mapping[str, Any]) -> App:
        """`get_sealed`'s dict back to an `App` (secrets decrypted here, in this process)."""
        expires = sealed["previous_secret_expires_at"]
        return self._app(
            {
                **sealed,
                "created_at": datetime.fromisoformat(sealed["created_at"]),
                "previous_secret_expires_at": None
                if expires is None
                else datetime.fromisoformat(expires),
            }  # type: ignore[arg-type]
        )

    @translated
    async def get_by_name(self, name: str) -> App | None:
        m = await self._lookup(select(*_COLUMNS).where(apps.c.name == name))
        return None if m is None else self._app(m)

    @translated
    async def list(self) -> Sequence[App]:
        rows = await self._reads.all(select(*_COLUMNS).order_by(apps.c.id))  # replica
        return [self._app(row._mapping) for row in rows]

    @translated
    async def page(self, *, after_id: int, limit: int) -> Sequence[AppInfo]:
        """Apps with `id > after_id`, ascending by id (a stable keyset page)."""
        stmt = select(*_COLUMNS).where(apps.c.id > after_id).order_by(apps.c.id).limit(limit)
        rows = await self._reads.all(stmt)  # replica: an admin listing
        return [self._info(row._mapping) for row in rows]

    @translated
    async def count(self) -> int:
        return int(await self._reads.scalar(select(func.count()).select_from(apps)))  # replica

    @translated
    async def update(
        self,
        app_id: int,
        *,
        display_name: str | None = None,
        redirect_uris: Sequence[str] | None = None,
        login_rate_limit_per_minute: int | None = None,
    ) -> AppInfo | None:
        """Replace the fields given (None = keep); None when the app does not exist."""
        values: dict[str, object] = {"updated_at": self._clock()}
        if display_name is not None:
            values["display_name"] = display_name or None
        if redirect_uris is not None:
            values["redirect_uris"] = json.dumps(list(redirect_uris)) if redirect_uris else None
        if login_rate_limit_per_minute is not None:
            values["login_rate_limit_per_minute"] = login_rate_limit_per_minute
        stmt = update(apps).where(apps.c.id == app_id).values(**values).returning(*_COLUMNS)
        async with self._engine.connect() as conn:
            row = (await conn.execute(stmt)).first()
        return None if row is None else self._info(row._mapping)

    @translated
    async def rotate_secret(
        self, app_id: int, new_secret: str, *, previous_until: datetime, now: datetime
    ) -> AppInfo | None:
        """The current secret becomes the previous one (until `previous_until`); one UPDATE."""
        stmt = (
            update(apps)
            .where(apps.c.id == app_id)
            .values(
                previous_secret_encrypted=apps.c.secret_encrypted,
                previous_secret_expires_at=previous_until,
                secret_encrypted=self._cipher.encrypt(new_secret),
                secret_rotated_at=now,
                updated_at=now,
            )
            .returning(*_COLUMNS)
        )
        async with self._engine.connect() as conn:
            row = (await conn.execute(stmt)).first()
        return None if row is None else self._info(row._mapping)

    @translated
    async def delete(self, app_id: int, *, now: datetime) -> Sequence[str] | None:
        """Delete the app and all its sessions (their refresh tokens cascade), atomically.

        Returns the ids of the sessions that were still live (the caller denylists
        them), or None when there was no such app.
        """
        live = select(sessions.c.id).where(
            sessions.c.app_id == app_id,
            sessions.c.revoked_at.is_(None),
            sessions.c.expires_at > now,
        )
        async with self._raw.begin() as conn:
            live_ids = [row[0] for row in (await conn.execute(live)).all()]
            await conn.execute(delete(sessions).where(sessions.c.app_id == app_id))
            gone = await conn.execute(delete(apps).where(apps.c.id == app_id).returning(apps.c.id))
            if gone.first() is None:
                return None
        return live_ids
