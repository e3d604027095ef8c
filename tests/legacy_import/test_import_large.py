"""A 20,000-user import on PostgreSQL and SQLite: counts checked, time measured (not asserted).

The time is printed (run with `-s`) and recorded in docs/migrating-from-go-sso.md.
"""

from __future__ import annotations

import time
from pathlib import Path

from helpers import run_import, scalar
from legacy_db import add_apps, add_users, create, hash_go
from sso_harness import make_settings

USERS = 20_000


async def test_twenty_thousand_users(tmp_path: Path, db_url: str) -> None:
    source = create(tmp_path / "go.db")
    hashes = [hash_go(f"password number {i}") for i in range(4)]  # cost 10 each: reuse
    add_users(
        source,
        ((i, f"user{i}@example.com", hashes[i % 4], i % 100 == 0) for i in range(1, USERS + 1)),
    )
    add_apps(source, [(i, f"app-{i}", f"secret-{i}-" + "s" * 32) for i in range(1, 21)])
    settings = make_settings(tmp_path, db_url)

    started = time.perf_counter()
    doc = await run_import(settings, source)
    wall = time.perf_counter() - started
    assert doc["users"]["imported"] == USERS and doc["apps"]["imported"] == 20
    assert await scalar(db_url, "SELECT COUNT(*) FROM users") == USERS
    assert await scalar(db_url, "SELECT COUNT(*) FROM users WHERE is_admin") == USERS // 100
    assert doc["next_ids"]["users"] == USERS + 1

    started = time.perf_counter()
    again = await run_import(settings, source)
    rerun = time.perf_counter() - started
    assert again["users"]["unchanged"] == USERS and again["users"]["imported"] == 0
    backend = db_url.split(":", 1)[0]
    print(
        f"\nlegacy import of {USERS} users on {backend}: {doc['seconds']:.2f} s in the "
        f"transaction, {wall:.2f} s for the command; re-run {again['seconds']:.2f} s "
        f"({rerun:.2f} s command)"
    )
