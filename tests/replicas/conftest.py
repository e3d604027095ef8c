"""Fixtures: a primary + streaming replica pair, and the real service reading from it.

The pair is started once per module (a base backup costs a few seconds); each
test gets its own database, created and migrated on the primary and waited for
on the replica. Replay is resumed after every test, whatever the test did.
"""

from __future__ import annotations

import sys
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

HARNESS = Path(__file__).resolve().parents[1] / "api"  # sso_harness (bench: pytest pythonpath)
if str(HARNESS) not in sys.path:
    sys.path.insert(0, str(HARNESS))

from pg_pair import Pair, StandbyServer, start_primary  # noqa: E402
from sso_harness import Running, make_settings, start, stop  # noqa: E402

from sso.config import DatabaseSettings  # noqa: E402
from sso.storage import migrate  # noqa: E402

pytestmark = pytest.mark.postgres


@pytest.fixture(scope="module")
def pg_pair() -> Iterator[Pair]:
    primary = start_primary()
    standby = StandbyServer(primary)
    try:
        standby.start()
        yield Pair(primary, standby)
    finally:
        standby.stop()
        primary.stop()


@pytest.fixture
def pair_db(pg_pair: Pair) -> Iterator[str]:
    """A fresh database at head on the primary, replayed on the standby; its name."""
    name = f"sso_{uuid.uuid4().hex[:12]}"
    pg_pair.primary.create_database(name)
    migrate.upgrade(pg_pair.primary.url(name))
    pg_pair.wait_replayed(name)
    yield name
    if pg_pair.standby.pid is None:
        pg_pair.standby.restart()
    pg_pair.standby_sql("SELECT pg_wal_replay_resume()")
    pg_pair.primary.drop_database(name)


def pair_settings(
    tmp: Path, pair: Pair, dbname: str, redis_url: str | None = None, **database: object
) -> object:
    settings = make_settings(tmp, pair.primary.url(dbname), redis_url)
    db = DatabaseSettings(
        url=pair.primary.url(dbname),
        replica_urls=[pair.standby.url(dbname)],
        pool_size=5,
        **database,  # type: ignore[arg-type]
    )
    return settings.model_copy(update={"database": db})


@pytest.fixture
async def replicated_sso(tmp_path: Path, pg_pair: Pair, pair_db: str) -> AsyncIterator[Running]:
    """The service on the pair: 1 s lag bound, sampled every 0.2 s."""
    running = await start(
        pair_settings(  # type: ignore[arg-type]
            tmp_path, pg_pair, pair_db, max_replica_lag=1.0, replica_check_interval=0.2
        )
    )
    yield running
    await stop(running)
