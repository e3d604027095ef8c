"""SqlSessionRepository on both backends: rotation (E1-E4), reuse, revocation, cleanup."""

from __future__ import annotations

import asyncio
import hashlib
import secrets
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from sso.config import DatabaseSettings
from sso.domain.models import NewSession, RotationOutcome, RotationStatus, Session
from sso.errors import AlreadyExists, NotFound
from sso.security.secretbox import SecretBox
from sso.storage.apps import SqlAppRepository
from sso.storage.db import create_engine
from sso.storage.sessions import SqlSessionRepository
from sso.storage.tables import refresh_tokens, sessions
from sso.storage.users import SqlUserRepository

T0 = datetime(2030, 1, 1, 12, 0, tzinfo=UTC)
IDLE = timedelta(days=14)
ABSOLUTE = timedelta(days=30)
GRACE = timedelta(seconds=10)
S = RotationStatus


def h(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


def tok() -> str:
    return secrets.token_urlsafe(32)


@dataclass
class Env:
    engine: AsyncEngine
    repo: SqlSessionRepository
    user_id: int
    other_user_id: int
    app_id: int

    async def login(
        self, *, now: datetime = T0, absolute: timedelta = ABSOLUTE, user_id: int | None = None
    ) -> tuple[str, str]:
        """A new session; returns (session id, first refresh token)."""
        sid, token = secrets.token_urlsafe(16), tok()
        new = NewSession(
            id=sid,
            user_id=user_id or self.user_id,
            app_id=self.app_id,
            user_agent="pytest",
            ip="127.0.0.1",
            device_name="laptop",
            created_at=now,
            expires_at=now + absolute,
        )
        await self.repo.create(new, h(token), now + IDLE)
        return sid, token

    async def rotate(
        self, token: str, successor: str, now: datetime, grace: timedelta = GRACE
    ) -> RotationOutcome:
        return await self.repo.rotate(h(token), h(successor), now=now, idle_ttl=IDLE, grace=grace)

    async def token_rows(self, sid: str) -> int:
        async with self.engine.connect() as conn:
            stmt = select(func.count()).where(refresh_tokens.c.session_id == sid)
            return int((await conn.execute(stmt)).scalar_one())

    async def session(self, sid: str) -> Session:
        found = await self.repo.get(sid)
        assert found is not None
        return found


async def _env(url: str, **settings: object) -> Env:
    engine = create_engine(DatabaseSettings(url=url, **settings))  # type: ignore[arg-type]
    users = SqlUserRepository(engine)
    user = await users.create(f"{secrets.token_hex(4)}@example.com", "h")
    other = await users.create(f"{secrets.token_hex(4)}@example.com", "h")
    app = await SqlAppRepository(engine, SecretBox(secrets.token_bytes(32))).create("app", "s")
    return Env(engine, SqlSessionRepository(engine), user.id, other.id, app.id)


@pytest.fixture
async def env(db_url: str) -> AsyncIterator[Env]:
    env = await _env(db_url)
    yield env
    await env.engine.dispose()


async def test_create_get_and_lookup_by_refresh(env: Env) -> None:
    sid, rt1 = await env.login()
    session = await env.session(sid)
    assert (session.user_id, session.app_id, session.device_name) == (
        env.user_id,
        env.app_id,
        "laptop",
    )
    assert session.created_at == session.last_used_at == T0 and session.expires_at == T0 + ABSOLUTE
    assert session.created_at.tzinfo is UTC and session.revoked_at is None
    assert await env.repo.get_by_refresh(h(rt1)) == session
    assert await env.repo.get_by_refresh(h("unknown")) is None
    assert await env.repo.get("unknown") is None


async def test_create_translates_constraint_errors(env: Env) -> None:
    sid, _ = await env.login()
    with pytest.raises(AlreadyExists):  # the caller's random session id collided
        await env.repo.create(
            NewSession(sid, env.user_id, env.app_id, "ua", "ip", "d", T0, T0 + ABSOLUTE),
            h(tok()),
            T0 + IDLE,
        )
    with pytest.raises(NotFound):  # the user is gone (foreign key)
        await env.login(user_id=10**9)


async def test_rotation_chain(env: Env) -> None:
    sid, rt1 = await env.login()
    rt2, rt3 = tok(), tok()
    t1 = T0 + timedelta(minutes=5)
    out = await env.rotate(rt1, rt2, t1)
    assert out.status is S.ROTATED and out.session is not None
    assert out.session.id == sid and out.session.last_used_at == t1
    assert out.successor_expires_at == t1 + IDLE
    assert await env.repo.get_by_refresh(h(rt2)) == await env.session(sid)

    t2 = t1 + timedelta(minutes=5)
    assert (await env.rotate(rt2, rt3, t2)).status is S.ROTATED
    assert await env.token_rows(sid) == 3
    assert (await env.rotate(tok(), tok(), t2)).status is S.NOT_FOUND


async def test_rotation_returns_the_user(env: Env) -> None:
    """ROTATED and GRACE carry the session's user, read by the rotation itself."""
    _, rt1 = await env.login()
    rt2 = tok()
    expected = await SqlUserRepository(env.engine).get_by_id(env.user_id)
    assert expected is not None
    out = await env.rotate(rt1, rt2, T0)
    assert out.status is S.ROTATED and out.user == expected
    retry = await env.rotate(rt1, rt2, T0 + timedelta(seconds=1))
    assert retry.status is S.GRACE and retry.user == expected


async def test_grace_returns_the_same_successor_and_writes_nothing(env: Env) -> None:
    sid, rt1 = await env.login()
    rt2 = tok()
    first = await env.rotate(rt1, rt2, T0)
    retry = await env.rotate(rt1, rt2, T0 + timedelta(seconds=3))
    assert retry.status is S.GRACE
    assert retry.successor_expires_at == first.successor_expires_at
    assert retry.session is not None and retry.session.revoked_at is None
    assert await env.token_rows(sid) == 2
    # The successor still works afterwards.
    assert (await env.rotate(rt2, tok(), T0 + timedelta(seconds=4))).status is S.ROTATED


async def test_replay_after_successor_used_revokes_family(env: Env) -> None:
    """E2: RT1 → RT2 → RT3; replaying RT1 revokes the session, then RT3 fails too."""
    sid, rt1 = await env.login()
    rt2, rt3 = tok(), tok()
    await env.rotate(rt1, rt2, T0)
    await env.rotate(rt2, rt3, T0 + timedelta(seconds=1))
    out = await env.rotate(rt1, rt2, T0 + timedelta(seconds=2))  # inside grace, but RT2 is spent
    assert out.status is S.REUSED and out.session is not None
    assert out.session.revoked_at == T0 + timedelta(seconds=2)
    assert out.session.revoke_reason == "token_reuse"
    assert (await env.session(sid)).revoke_reason == "token_reuse"
    assert (await env.rotate(rt3, tok(), T0 + timedelta(seconds=3))).status is S.REVOKED
    assert (await env.rotate(rt1, rt2, T0 + timedelta(seconds=4))).status is S.REVOKED


@pytest.mark.parametrize(
    ("delay", "same_successor", "grace"),
    [
        (GRACE + timedelta(seconds=1), True, GRACE),  # outside the window
        (timedelta(seconds=1), False, GRACE),  # a different successor: not a retry
        (timedelta(seconds=1), True, timedelta(0)),  # grace disabled
    ],
)
async def test_replay_that_is_not_a_grace_retry_is_reuse(
    env: Env, delay: timedelta, same_successor: bool, grace: timedelta
) -> None:
    sid, rt1 = await env.login()
    rt2 = tok()
    await env.rotate(rt1, rt2, T0)
    out = await env.rotate(rt1, rt2 if same_successor else tok(), T0 + delay, grace)
    assert out.status is S.REUSED
    assert (await env.rotate(rt2, tok(), T0 + delay)).status is S.REVOKED
    assert await env.token_rows(sid) == 2


async def test_idle_expiry(env: Env) -> None:
    _, rt1 = await env.login()
    assert (await env.rotate(rt1, tok(), T0 + IDLE + timedelta(seconds=1))).status is S.EXPIRED
    # An expired token stays expired; it is not treated as reuse.
    assert (await env.rotate(rt1, tok(), T0 + IDLE + timedelta(seconds=2))).status is S.EXPIRED


async def test_absolute_expiry_caps_continuous_use(env: Env) -> None:
    sid, token = await env.login(absolute=timedelta(hours=1))
    now = T0
    for _ in range(5):  # used every 10 minutes: never idle
        now += timedelta(minutes=10)
        successor = tok()
        out = await env.rotate(token, successor, now)
        assert out.status is S.ROTATED
        assert out.successor_expires_at == T0 + timedelta(hours=1)  # clamped to the session
        token = successor
    out = await env.rotate(token, tok(), T0 + timedelta(hours=1, seconds=1))
    assert out.status is S.EXPIRED
    assert (await env.session(sid)).revoked_at is None


async def test_revoked_session_cannot_rotate(env: Env) -> None:
    sid, rt1 = await env.login()
    assert await env.repo.revoke(sid, user_id=None, reason="logout", now=T0) is not None
    out = await env.rotate(rt1, tok(), T0 + timedelta(seconds=1))
    assert out.status is S.REVOKED and out.session is not None
    assert out.session.revoke_reason == "logout"
    assert await env.token_rows(sid) == 1


async def _concurrent(env: Env, url: str, n: int, same_successor: bool) -> tuple[list[S], str]:
    """n rotations of one token at once, spread over two engines (as two replicas would be)."""
    sid, rt1 = await env.login()
    rt2 = tok()
    engine2 = create_engine(DatabaseSettings(url=url, pool_size=20, max_overflow=30))  # type: ignore[arg-type]
    repos = [env.repo, SqlSessionRepository(engine2)]
    try:
        outcomes = await asyncio.gather(
            *(
                repos[i % 2].rotate(
                    h(rt1), h(rt2 if same_successor else tok()), now=T0, idle_ttl=IDLE, grace=GRACE
                )
                for i in range(n)
            )
        )
    finally:
        await engine2.dispose()
    return [o.status for o in outcomes], sid


async def test_50_concurrent_rotations_same_successor(db_url: str) -> None:
    """E3: exactly one rotation; every retry gets the same successor; one successor row."""
    env = await _env(db_url, pool_size=20, max_overflow=30, pool_timeout=30)
    try:
        statuses, sid = await _concurrent(env, db_url, 50, same_successor=True)
        assert statuses.count(S.ROTATED) == 1
        assert statuses.count(S.GRACE) == 49
        assert await env.token_rows(sid) == 2
    finally:
        await env.engine.dispose()


async def test_50_concurrent_rotations_different_successors(db_url: str) -> None:
    """E3: the family never forks; different successors are reuse and revoke it."""
    env = await _env(db_url, pool_size=20, max_overflow=30, pool_timeout=30)
    try:
        statuses, sid = await _concurrent(env, db_url, 50, same_successor=False)
        assert statuses.count(S.ROTATED) == 1
        assert (
            statuses.count(S.ROTATED) + statuses.count(S.REUSED) + statuses.count(S.REVOKED) == 50
        )
        assert S.REUSED in statuses
        assert await env.token_rows(sid) == 2
        assert (await env.session(sid)).revoke_reason == "token_reuse"
    finally:
        await env.engine.dispose()


async def test_list_revoke_and_revoke_all(env: Env) -> None:
    a, _ = await env.login()
    b, _ = await env.login(now=T0 + timedelta(minutes=1))
    c, _ = await env.login(now=T0 + timedelta(minutes=2))
    idle, _ = await env.login(now=T0 - IDLE - timedelta(days=1))  # token idle-expired
    other, _ = await env.login(user_id=env.other_user_id)
    now = T0 + timedelta(minutes=3)

    listed = await env.repo.list_active(env.user_id, now)
    assert [s.id for s in listed] == [c, b, a]  # most recently used first; idle one absent

    assert await env.repo.revoke(other, user_id=env.user_id, reason="x", now=now) is None
    revoked = await env.repo.revoke(a, user_id=env.user_id, reason="user_revoked", now=now)
    assert revoked is not None and revoked.revoked_at == now
    assert revoked.revoke_reason == "user_revoked"
    assert await env.repo.revoke(a, user_id=None, reason="again", now=now) is None

    gone = await env.repo.revoke_all(env.user_id, reason="all", now=now, keep=c)
    assert {s.id for s in gone} == {b, idle}
    assert all(s.revoke_reason == "all" for s in gone)
    assert [s.id for s in await env.repo.list_active(env.user_id, now)] == [c]
    assert [s.id for s in await env.repo.list_active(env.other_user_id, now)] == [other]
    assert {s.id for s in await env.repo.revoke_all(env.user_id, reason="all", now=now)} == {c}


async def test_cleanup(env: Env) -> None:
    expired, _ = await env.login(now=T0 - ABSOLUTE - timedelta(days=1))
    old_revoked, _ = await env.login(now=T0 - timedelta(days=10))
    new_revoked, _ = await env.login(now=T0 - timedelta(days=1))
    live, rt = await env.login(now=T0 - timedelta(days=20))  # first token spent, then expired
    await env.repo.revoke(old_revoked, user_id=None, reason="x", now=T0 - timedelta(days=8))
    await env.repo.revoke(new_revoked, user_id=None, reason="x", now=T0 - timedelta(hours=1))
    await env.rotate(rt, tok(), T0 - timedelta(days=7))

    removed = await env.repo.cleanup(T0, keep_revoked_for=timedelta(days=7))
    assert await env.repo.get(expired) is None
    assert await env.repo.get(old_revoked) is None
    assert await env.repo.get(new_revoked) is not None
    assert await env.repo.get(live) is not None
    # live keeps only its current token; the spent one had expired.
    assert await env.token_rows(live) == 1
    assert removed == 2 + 2 + 1  # two sessions, their two tokens, one expired token
    assert await env.repo.cleanup(T0, keep_revoked_for=timedelta(days=7)) == 0


async def test_no_raw_token_in_the_database(env: Env) -> None:
    """E7: only 32-byte hashes are stored."""
    sid, rt1 = await env.login()
    rt2 = tok()
    await env.rotate(rt1, rt2, T0)
    async with env.engine.connect() as conn:
        stored = [bytes(r[0]) for r in await conn.execute(select(refresh_tokens.c.token_hash))]
        session_row = (await conn.execute(select(sessions).where(sessions.c.id == sid))).one()
    assert sorted(stored) == sorted([h(rt1), h(rt2)])
    assert all(len(v) == 32 for v in stored)
    for raw in (rt1, rt2):
        assert raw.encode() not in b"".join(stored)
        assert raw not in repr(tuple(session_row))
