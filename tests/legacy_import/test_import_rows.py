"""Rows that cannot be imported, conflicts with our data, failures and `sso apps create --id`.

Every case runs the real CLI against a real database (PostgreSQL and SQLite).
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path

import jwt
from helpers import cli_env, dump, run_import, run_sso, scalar
from legacy_db import add_apps, add_users, create, execute, hash_go
from sso_harness import make_settings, start, stop

from sso.security.secretbox import SecretBox, load_data_key
from sso.storage.db import create_engine
from sso.storage.legacy_import import LegacyImporter, read_legacy
from sso_proto.auth import auth_pb2 as legacy_pb2
from sso_proto.auth import auth_pb2_grpc as legacy_grpc

TABLES = ("users", "apps")
GOOD = hash_go("a good old password")


def notes(doc: dict, key: str, table: str = "users") -> dict[int, str]:  # type: ignore[type-arg]
    return {n["id"]: n["reason"] for n in doc[key] if n["table"] == table}


async def test_bad_rows_are_reported_with_ids_and_the_rest_imported(
    tmp_path: Path, db_url: str
) -> None:
    source = create(tmp_path / "go.db")
    add_users(
        source,
        [
            (1, "ok@example.com", GOOD, False),
            (2, "not-an-address", GOOD, False),
            (3, "Twin@Example.com", GOOD, False),
            (4, "twin@example.com", GOOD, True),
            (5, "md5@example.com", "5f4dcc3b5aa765d61d8327deb882cf99", False),
            (6, "plain@example.com", b"password", False),
            (7, "also-ok@example.com", GOOD, True),
        ],
    )
    add_apps(source, [(1, "web", "w" * 40), (2, " ", "x" * 40)])
    settings = make_settings(tmp_path, db_url)

    before = await dump(db_url, *TABLES)
    dry = await run_import(settings, source, "--dry-run")
    assert await dump(db_url, *TABLES) == before  # --dry-run writes nothing

    doc = await run_import(settings, source)
    expected = {2: "invalid_email", 3: "duplicate_email", 4: "duplicate_email"}
    expected |= {5: "not_bcrypt", 6: "not_bcrypt"}
    for report in (dry, doc):
        assert notes(report, "skipped") == expected
        assert notes(report, "skipped", "apps") == {2: "invalid_name"}
        assert report["users"]["imported"] == 2 and report["users"]["skipped"] == 5
    skipped = {n["id"]: n for n in doc["skipped"]}
    assert skipped[3]["detail"] == "same address as ids 4"
    # The report names ids and reasons, never an address or a hash.
    text = json.dumps(doc)
    assert (
        "@" not in text
        and "5f4dcc3b" not in text
        and "$2a$" not in text.replace("$2a$/$2b$/$2y$", "")
    )
    ids = await dump(db_url, "users")
    assert [row[0] for row in ids["users"]] == [1, 7]
    assert await scalar(db_url, "SELECT is_admin FROM users WHERE id = 7") in (True, 1)


async def test_changes_between_runs_are_conflicts_not_overwrites(
    tmp_path: Path, db_url: str
) -> None:
    source = create(tmp_path / "go.db")
    add_users(
        source,
        [
            (1, "one@example.com", GOOD, False),
            (2, "two@example.com", GOOD, False),
            (3, "three@example.com", GOOD, True),
        ],
    )
    add_apps(source, [(1, "web", "w" * 40)])
    settings = make_settings(tmp_path, db_url)
    await run_import(settings, source)

    # Meanwhile in the Go service: user 1 changes address, 2 is made admin, 3 changes
    # password, and the app's secret is rotated.
    execute(source, "UPDATE users SET email = 'uno@example.com' WHERE id = 1")
    execute(source, "UPDATE users SET is_admin = TRUE WHERE id = 2")
    new_hash = hash_go("a new password set in go")
    execute(source, "UPDATE users SET pass_hash = ? WHERE id = 3", (new_hash,))
    execute(source, "UPDATE apps SET secret = ? WHERE id = 1", ("r" * 40,))
    before = await dump(db_url, *TABLES)
    doc = await run_import(settings, source)
    assert notes(doc, "conflicts") == {1: "email_differs", 2: "admin_differs"}
    assert notes(doc, "conflicts", "apps") == {1: "app_differs"}
    assert notes(doc, "updated") == {3: "password_changed"}
    after = await dump(db_url, *TABLES)
    assert after["apps"] == before["apps"]  # never overwritten
    assert after["users"][:2] == before["users"][:2]
    assert await scalar(db_url, "SELECT password_hash FROM users WHERE id = 3") == new_hash.decode()

    # An id that exists here with another address, and an address that another id has.
    source2 = create(tmp_path / "go2.db")
    add_users(
        source2,
        [(1, "someone-else@example.com", GOOD, False), (50, "TWO@example.com", GOOD, False)],
    )
    doc = await run_import(settings, source2)
    assert notes(doc, "conflicts") == {1: "email_differs", 50: "email_taken"}
    assert doc["users"]["imported"] == 0
    assert await dump(db_url, *TABLES) == after


async def test_failures_exit_non_zero_and_write_nothing(tmp_path: Path, db_url: str) -> None:
    settings = make_settings(tmp_path, db_url)
    before = await dump(db_url, *TABLES)
    missing = run_sso(settings, "import", "legacy-sqlite", str(tmp_path / "nope.db"), "--json")
    assert missing.returncode == 1
    doc = json.loads(missing.stdout)
    assert doc["ok"] is False and "no such file" in doc["error"]

    wrong = tmp_path / "other.db"
    execute(wrong, "CREATE TABLE users (id INTEGER PRIMARY KEY, name TEXT)")
    proc = run_sso(settings, "import", "legacy-sqlite", str(wrong))
    assert proc.returncode == 1 and "not a Go SSO database" in proc.stderr
    assert await dump(db_url, *TABLES) == before

    # The source file is opened read-only: its bytes do not change.
    source = create(tmp_path / "go.db")
    add_users(source, [(1, "ok@example.com", GOOD, False)])
    raw = source.read_bytes()
    await run_import(settings, source)
    assert source.read_bytes() == raw


async def test_apps_create_keeps_id_and_secret_without_echoing_it(
    tmp_path: Path, db_url: str
) -> None:
    settings = make_settings(tmp_path, db_url)
    secret = "the-go-app-secret-kept-across-the-switch"
    proc = run_sso(
        settings,
        "apps",
        "create",
        "billing",
        "--id",
        "42",
        "--secret-file",
        "-",
        stdin=secret + "\n",
    )
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout) == {"app_id": 42, "name": "billing"}
    assert secret not in proc.stdout + proc.stderr
    # The same id again is refused; a new app without --id gets an id after 42.
    again = run_sso(settings, "apps", "create", "billing2", "--id", "42", "--secret", "x" * 40)
    assert again.returncode == 1 and "already exists" in again.stderr
    secret_file = tmp_path / "secret.txt"
    secret_file.write_text("y" * 40 + "\n")
    other = run_sso(settings, "apps", "create", "reports", "--secret-file", str(secret_file))
    assert other.returncode == 0, other.stderr
    assert json.loads(other.stdout)["app_id"] > 42

    # The legacy token of app 42 is signed with exactly the given secret.
    running = await start(settings)
    try:
        stub = legacy_grpc.AuthStub(running.channel)
        await stub.Register(
            legacy_pb2.RegisterRequest(email="kim@example.com", password="kim's long password")
        )
        reply = await stub.Login(
            legacy_pb2.LoginRequest(
                email="kim@example.com", password="kim's long password", app_id=42
            )
        )
        assert jwt.decode(reply.token, secret, algorithms=["HS256"])["app_id"] == 42
        assert running.app.id > 42
    finally:
        await stop(running)


async def test_two_imports_at_once_import_each_row_once(tmp_path: Path, db_url: str) -> None:
    """Real concurrency: two importers on two engines start together and are serialised.

    (Unserialised, both would plan 2,000 inserts from an empty table and the second
    would fail on the unique index.)
    """
    source = create(tmp_path / "go.db")
    add_users(source, [(i, f"u{i}@example.com", GOOD, False) for i in range(1, 2001)])
    add_apps(source, [(1, "web", "w" * 40)])
    settings = make_settings(tmp_path, db_url)
    assert settings.data_key is not None
    snapshot = await read_legacy(source)
    box = SecretBox.from_data_key(load_data_key(settings))
    engines = [create_engine(settings.database) for _ in range(2)]
    try:
        first, second = await asyncio.gather(
            *(LegacyImporter(engine, box).run(snapshot) for engine in engines)
        )
    finally:
        for engine in engines:
            await engine.dispose()
    assert sorted([len(first.plan.new_users), len(second.plan.new_users)]) == [0, 2000]
    assert sorted([first.plan.users_unchanged, second.plan.users_unchanged]) == [0, 2000]
    assert len(first.plan.new_apps) + len(second.plan.new_apps) == 1
    assert await scalar(db_url, "SELECT COUNT(*) FROM users") == 2000


async def test_report_limit_cuts_lists_not_counts(tmp_path: Path, db_url: str) -> None:
    source = create(tmp_path / "go.db")
    add_users(source, [(i, f"bad{i}", GOOD, False) for i in range(1, 6)])
    settings = make_settings(tmp_path, db_url)
    doc = await run_import(settings, source, "--dry-run", "--report-limit", "2")
    assert doc["truncated"] is True and doc["users"]["skipped"] == 5
    assert [n["id"] for n in doc["skipped"]] == [1, 2]
    human = run_sso(settings, "import", "legacy-sqlite", str(source), "--dry-run")
    assert human.returncode == 0
    assert "skipped 5" in human.stdout and "users id 5: invalid_email" in human.stdout


def test_apps_create_works_with_the_redis_app_cache_configured(
    tmp_path: Path, pg_url: str, redis_server: str
) -> None:
    """A Job or a shell next to PostgreSQL: SSO_REDIS__URL may be set, and there is
    no signing key set in the working directory; neither is needed to register an app."""
    settings = make_settings(tmp_path, pg_url)
    env = {**cli_env(settings), "SSO_REDIS__URL": redis_server}
    proc = subprocess.run(
        [sys.executable, "-m", "sso", "apps", "create", "cached", "--id", "77"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        cwd=tmp_path,  # no .sso/keys here
    )
    assert proc.returncode == 0, proc.stderr
    assert not (tmp_path / ".sso" / "keys").exists()
    created = json.loads(proc.stdout.splitlines()[0])
    assert created["app_id"] == 77 and created["name"] == "cached" and created["secret"]
