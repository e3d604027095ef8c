"""`AppRepository` on SQLAlchemy Core: client apps with their secrets encrypted at rest.

The legacy `auth.Auth` API signs HS256 tokens with each app's secret, so the
secret must be recoverable (a hash will not do) but must not sit in the
database in clear: it goes through the `SecretCipher` port (authenticated
encryption, implemented in `sso.security.secretbox` and injected by the
composition root, since `sso.storage` may not import `sso.security`).
"""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import RowMapping, select
from sqlalchemy.ext.asyncio import AsyncEngine

from sso.domain.models import App
from sso.domain.ports import SecretCipher
from sso.errors import AlreadyExists
from sso.storage._sql import Clock, autocommit, insert_or_nothing, utc_now
from sso.storage.errors import translated
from sso.storage.tables import apps

_COLUMNS = (apps.c.id, apps.c.name, apps.c.secret_encrypted, apps.c.created_at)


class SqlAppRepository:
    """Apps table access; secrets are encrypted before INSERT and decrypted after SELECT."""

    def __init__(
        self, engine: AsyncEngine, cipher: SecretCipher, *, clock: Clock = utc_now
    ) -> None:
        self._engine = autocommit(engine)
        self._cipher = cipher
        self._clock = clock
        self._insert = insert_or_nothing(engine, apps, "name").returning(*_COLUMNS)

    def _app(self, m: RowMapping) -> App:
        return App(
            id=m["id"],
            name=m["name"],
            secret=self._cipher.decrypt(m["secret_encrypted"]),
            created_at=m["created_at"],
        )

    @translated
    async def create(self, name: str, secret: str) -> App:
        """Store the secret encrypted; `AlreadyExists` when the name is taken."""
        params = {
            "name": name,
            "secret_encrypted": self._cipher.encrypt(secret),
            "created_at": self._clock(),
        }
        async with self._engine.connect() as conn:
            row = (await conn.execute(self._insert, params)).first()
        if row is None:
            raise AlreadyExists("app name already taken")
        return self._app(row._mapping)

    @translated
    async def get(self, app_id: int) -> App | None:
        async with self._engine.connect() as conn:
            row = (await conn.execute(select(*_COLUMNS).where(apps.c.id == app_id))).first()
        return None if row is None else self._app(row._mapping)

    @translated
    async def get_by_name(self, name: str) -> App | None:
        async with self._engine.connect() as conn:
            row = (await conn.execute(select(*_COLUMNS).where(apps.c.name == name))).first()
        return None if row is None else self._app(row._mapping)

    @translated
    async def list(self) -> Sequence[App]:
        async with self._engine.connect() as conn:
            rows = (await conn.execute(select(*_COLUMNS).order_by(apps.c.id))).all()
        return [self._app(row._mapping) for row in rows]
