"""Read routing: lag-tolerant reads go to a healthy streaming replica, the rest to the primary.

Why this module exists: the primary carries every write and every read that
decides security (sessions, refresh tokens, lockout, revocation, TOTP steps,
MFA challenges, account tokens, admin flags). Reads that may be a few seconds
stale (app lookup, admin listings, statistics, login history, GDPR export) can
be served by replicas. The choice is made by each repository method, visibly:
`ReadRouter.primary` or `ReadRouter.first/all/scalar/run` (docs/architecture.md
lists every routed method).

A replica is used only while the last sample said it was up and its lag was
within `max_lag`. `LagSampler` measures each replica every `interval` seconds:
time lag `now() - pg_last_xact_replay_timestamp()` (taken as zero when the
received WAL is all replayed: an idle primary writes nothing, so the replay
timestamp stops while the replica is fully current) and byte lag
`pg_wal_lsn_diff(receive, replay)`. A read that fails on a replica (killed,
network) marks it down and runs again on the primary, so callers never see a
replica's failure (other errors, e.g. a query cancelled by a recovery conflict,
are retried on the primary without taking the replica out). No replica
qualifies → the primary serves the read.

Replicas are named by their index in `database.replica_urls` ("0", "1", …) in
logs and metrics; their URLs (with passwords) never leave this module.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import math
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from sqlalchemy import Executable, Row, text
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from sso.errors import Unavailable
from sso.storage._sql import autocommit
from sso.storage.errors import map_db_error

log = logging.getLogger("sso.replicas")

T = TypeVar("T")

# One round trip: in recovery?, seconds behind (0 when everything received is replayed),
# bytes received but not yet replayed.
LAG_SQL = text(
    "SELECT pg_is_in_recovery() AS recovery,"
    " CASE WHEN pg_last_wal_receive_lsn() IS NOT DISTINCT FROM pg_last_wal_replay_lsn()"
    " THEN 0.0"
    " ELSE EXTRACT(EPOCH FROM now() - pg_last_xact_replay_timestamp())::float8 END AS seconds,"
    " COALESCE(pg_wal_lsn_diff(pg_last_wal_receive_lsn(), pg_last_wal_replay_lsn()), 0)::float8"
    " AS bytes"
)


@dataclass(slots=True)
class ReplicaState:
    """What the last sample said about one replica (exported as metrics by `sso.api`)."""

    name: str
    engine: AsyncEngine
    healthy: bool = False
    up: bool = False
    lag_seconds: float = math.inf
    lag_bytes: float = math.inf
    sampled_at: float = 0.0


def classify(recovery: bool, seconds: float | None, max_lag: float) -> tuple[bool, float]:
    """(usable, lag in seconds) from one sample row.

    A server not in recovery is no replica (promoted, or misconfigured): its data
    may have diverged from the primary, so it is not used. An unknown replay time
    with WAL still to replay counts as infinitely behind.
    """
    lag = math.inf if seconds is None else max(0.0, float(seconds))
    return recovery and lag <= max_lag, lag


class ReadRouter:
    """The primary plus zero or more replicas; picks where each lag-tolerant read runs."""

    def __init__(
        self,
        primary: AsyncEngine,
        replicas: Sequence[AsyncEngine] = (),
        *,
        max_lag: float = 5.0,
    ) -> None:
        self.primary = primary
        self._primary_auto = autocommit(primary)
        self.max_lag = max_lag
        self.replicas = [ReplicaState(str(i), autocommit(e)) for i, e in enumerate(replicas)]
        self._turn = itertools.count()
        self.fallbacks = 0  # reads that failed on a replica and ran on the primary

    def healthy(self) -> list[ReplicaState]:
        return [r for r in self.replicas if r.healthy]

    def _pick(self) -> ReplicaState | None:
        healthy = self.healthy()
        if not healthy:
            return None
        return healthy[next(self._turn) % len(healthy)]

    async def run(self, fn: Callable[[AsyncConnection], Awaitable[T]]) -> T:
        """`fn(conn)` on a replica, or on the primary when none qualifies or the replica fails."""
        chosen = self._pick()
        if chosen is not None:
            try:
                async with chosen.engine.connect() as conn:
                    return await fn(conn)
            except (SQLAlchemyError, OSError, TimeoutError) as exc:
                self.fallbacks += 1
                # Unreachable (or its pool exhausted): out until a sample says otherwise. Any
                # other error (a recovery conflict cancelled the query, a bad value) is just
                # retried on the primary: a client must not be able to switch replicas off.
                if isinstance(map_db_error(exc), Unavailable):
                    self.mark_down(chosen, exc)
        async with self._primary_auto.connect() as conn:
            return await fn(conn)

    async def first(self, stmt: Executable) -> Row[Any] | None:
        async def go(conn: AsyncConnection) -> Row[Any] | None:
            return (await conn.execute(stmt)).first()

        return await self.run(go)

    async def all(self, stmt: Executable) -> Sequence[Row[Any]]:
        async def go(conn: AsyncConnection) -> Sequence[Row[Any]]:
            return (await conn.execute(stmt)).all()

        return await self.run(go)

    async def scalar(self, stmt: Executable) -> Any:
        async def go(conn: AsyncConnection) -> Any:
            return (await conn.execute(stmt)).scalar_one()

        return await self.run(go)

    def mark_down(self, replica: ReplicaState, exc: BaseException | None = None) -> None:
        if replica.healthy or replica.up:
            # The exception class only: a driver message may quote the connection target.
            log.warning(
                "replica unavailable, reads go elsewhere",
                extra={"replica": replica.name, "error": type(exc).__name__ if exc else None},
            )
        replica.healthy = False
        replica.up = False
        replica.lag_seconds = math.inf
        replica.lag_bytes = math.inf

    async def sample(self, replica: ReplicaState, *, seconds: float = 2.0) -> None:
        """Measure one replica now and update whether reads may use it."""
        try:
            async with asyncio.timeout(seconds):
                async with replica.engine.connect() as conn:
                    row = (await conn.execute(LAG_SQL)).one()
        except (SQLAlchemyError, OSError, TimeoutError) as exc:
            self.mark_down(replica, exc)
            return
        usable, lag = classify(bool(row.recovery), row.seconds, self.max_lag)
        if usable != replica.healthy:
            log.warning(
                "replica usable" if usable else "replica skipped",
                extra={"replica": replica.name, "lag_seconds": round(lag, 3)},
            )
        replica.up = True
        replica.healthy = usable
        replica.lag_seconds = lag
        replica.lag_bytes = float(row.bytes)
        replica.sampled_at = time.monotonic()

    async def sample_all(self, *, seconds: float = 2.0) -> None:
        await asyncio.gather(*(self.sample(r, seconds=seconds) for r in self.replicas))

    async def dispose(self) -> None:
        for replica in self.replicas:
            await replica.engine.dispose()


class LagSampler:
    """Background task: `router.sample_all()` every `interval` seconds until closed."""

    def __init__(self, router: ReadRouter, *, interval: float = 1.0, timeout: float = 2.0) -> None:
        self._router = router
        self._interval = interval
        self._timeout = min(timeout, max(interval, 0.5))
        self._task: asyncio.Task[None] | None = None
        self.on_sample: Callable[[ReadRouter], None] | None = None

    async def start(self) -> None:
        """One sample before serving (replicas are used only once measured), then the loop."""
        await self._once()
        self._task = asyncio.get_running_loop().create_task(self._loop())

    async def _once(self) -> None:
        await self._router.sample_all(seconds=self._timeout)
        if self.on_sample is not None:
            self.on_sample(self._router)

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(self._interval)
            try:
                await self._once()
            except Exception:  # never let the sampler die: replicas would stay as last seen
                log.exception("replica lag sampling failed")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
