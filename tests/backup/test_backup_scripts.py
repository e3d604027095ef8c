"""backup.sh and restore_test.sh, run for real against the test PostgreSQL.

The scripts the backup and restore-test CronJobs mount are tested with the
binaries they run in the PostgreSQL image (pg_dump, pg_restore, initdb, pg_ctl,
psql from the Debian packages here): a real dump of a migrated SSO database with
rows in it, the retention policy over dated dumps, a restore into a scratch
server the script starts itself, and the failures an operator must be told
about (corrupted dump, wrong schema, stale backup, unreachable database).
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from sso_operator.resources import backup as resources

pytestmark = pytest.mark.postgres

SCRIPTS = Path(resources.__file__).resolve().parents[1] / "scripts"
BACKUP_SH = SCRIPTS / "backup.sh"
RESTORE_SH = SCRIPTS / "restore_test.sh"


def pg_bin() -> str:
    dirs = sorted(Path("/usr/lib/postgresql").glob("*/bin"), key=lambda p: int(p.parent.name))
    assert dirs, "PostgreSQL binaries not found under /usr/lib/postgresql/*/bin"
    return str(dirs[-1])


def as_postgres(argv: list[str]) -> list[str]:
    """initdb refuses root: run as the Debian postgres user, as the image runs as uid 999."""
    return ["runuser", "-u", "postgres", "--", *argv] if os.geteuid() == 0 else argv


@pytest.fixture
def work_dir() -> Iterator[Path]:
    """A directory the postgres user can use (pytest's tmp_path is private to root)."""
    root = Path(tempfile.mkdtemp(prefix="sso-backup-test-"))
    root.chmod(0o755)
    for sub in ("backups", "scratch"):
        (root / sub).mkdir(mode=0o700)
        if os.geteuid() == 0:
            shutil.chown(root / sub, "postgres", "postgres")
    try:
        yield root
    finally:
        shutil.rmtree(root, ignore_errors=True)


def libpq_env(pg_url: str) -> dict[str, str]:
    # postgresql+asyncpg://sso@127.0.0.1:PORT/DB
    rest = pg_url.split("://", 1)[1]
    user_host, database = rest.rsplit("/", 1)
    user, host_port = user_host.split("@")
    host, port = host_port.split(":")
    return {"PGHOST": host, "PGPORT": port, "PGUSER": user, "PGDATABASE": database}


def run_script(
    script: Path, env: dict[str, str], *args: str, as_pg: bool = False
) -> tuple[subprocess.CompletedProcess[str], dict[str, Any]]:
    full = {"PATH": f"{pg_bin()}:/usr/bin:/bin", "LANG": "C.UTF-8", **env}
    argv = ["env", *(f"{k}={v}" for k, v in full.items()), "bash", str(script), *args]
    proc = subprocess.run(
        as_postgres(argv) if as_pg else argv, capture_output=True, text=True, timeout=180
    )
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    assert lines, f"no JSON result line:\n{proc.stdout}\n{proc.stderr}"
    return proc, json.loads(lines[-1])


async def seed(pg_url: str) -> dict[str, Any]:
    """Rows in the tables the restore test counts; returns what was written."""
    conn = await asyncpg.connect(pg_url.replace("+asyncpg", ""))
    try:
        now = datetime.now(UTC).replace(microsecond=0)
        for i in range(5):
            await conn.execute(
                "INSERT INTO users (email, password_hash, created_at, updated_at)"
                " VALUES ($1, 'x', $2, $2)",
                f"user{i}@example.com",
                now - timedelta(minutes=10 - i),
            )
        await conn.execute(
            "INSERT INTO apps (name, secret_encrypted, created_at) VALUES ('app', 'v1.x.y', $1)",
            now,
        )
        app_id = await conn.fetchval("SELECT id FROM apps")
        user_id = await conn.fetchval("SELECT min(id) FROM users")
        for i in range(3):
            await conn.execute(
                "INSERT INTO sessions (id, user_id, app_id, user_agent, ip, device_name,"
                " created_at, last_used_at, expires_at) VALUES ($1, $2, $3, 'ua', '127.0.0.1',"
                " 'dev', $4, $4, $5)",
                f"s{i}",
                user_id,
                app_id,
                now,
                now + timedelta(days=30),
            )
        await conn.execute(
            "INSERT INTO audit_events (ts, event, outcome)"
            " VALUES ($1, 'authn_login_success', 'ok')",
            now,
        )
        version = await conn.fetchval("SELECT version_num FROM alembic_version")
    finally:
        await conn.close()
    return {"version": version, "users": 5, "apps": 1, "sessions": 3, "newest": now}


@pytest.fixture
def seeded(pg_url: str) -> dict[str, Any]:
    return asyncio.run(seed(pg_url))


def backup_env(pg_url: str, work_dir: Path, **extra: str) -> dict[str, str]:
    return {
        **libpq_env(pg_url),
        "BACKUP_DIR": str(work_dir / "backups"),
        "TERMINATION_LOG": str(work_dir / "termination-log"),
        **extra,
    }


def restore_env(work_dir: Path, **extra: str) -> dict[str, str]:
    log = work_dir / "restore-termination-log"
    log.touch()
    if os.geteuid() == 0:
        shutil.chown(log, "postgres", "postgres")
    return {
        "BACKUP_DIR": str(work_dir / "backups"),
        "SCRATCH_DIR": str(work_dir / "scratch"),
        "TERMINATION_LOG": str(log),
        **extra,
    }


def make_readable(work_dir: Path) -> None:
    for path in (work_dir / "backups").iterdir():
        if os.geteuid() == 0:
            shutil.chown(path, "postgres", "postgres")


# ------------------------------------------------------------------ backup


def test_backup_writes_a_restorable_dump_and_its_metadata(
    pg_url: str, seeded: dict[str, Any], work_dir: Path
) -> None:
    proc, result = run_script(BACKUP_SH, backup_env(pg_url, work_dir))
    assert proc.returncode == 0, proc.stderr
    assert result["kind"] == "backup" and result["result"] == "Succeeded"
    dump = work_dir / "backups" / result["file"]
    assert dump.stat().st_size == result["sizeBytes"] > 0
    assert dump.read_bytes()[:5] == b"PGDMP"  # the custom format (-Fc)
    assert oct(dump.stat().st_mode & 0o777) == "0o600"
    listing = subprocess.run(
        [f"{pg_bin()}/pg_restore", "--list", str(dump)], capture_output=True, text=True, check=True
    ).stdout
    for table in ("users", "apps", "sessions", "audit_events", "alembic_version"):
        assert f"TABLE DATA public {table} " in listing
    meta = json.loads(dump.with_suffix(".json").read_text())
    assert meta["sha256"] == result["sha256"] and meta["size_bytes"] == result["sizeBytes"]
    assert meta["schema_version"] == result["schemaVersion"] == seeded["version"]
    assert (meta["rows_users"], meta["rows_apps"], meta["rows_sessions"]) == (5, 1, 3)
    assert meta["newest_timestamp"] == seeded["newest"].strftime("%Y-%m-%dT%H:%M:%SZ")
    # The operator's channel: the same line in the termination log.
    assert json.loads((work_dir / "termination-log").read_text()) == result
    assert not list((work_dir / "backups").glob(".*"))  # no partial files left


def test_backup_reads_an_asyncpg_url_too(pg_url: str, work_dir: Path) -> None:
    env = backup_env(pg_url, work_dir)
    for key in ("PGHOST", "PGPORT", "PGUSER", "PGDATABASE"):
        env.pop(key)
    env["DATABASE_URL"] = pg_url  # postgresql+asyncpg://..., as in the external Secret
    proc, result = run_script(BACKUP_SH, env)
    assert result["result"] == "Succeeded", result
    assert proc.returncode == 0


def test_backup_failure_is_reported_and_leaves_nothing_behind(pg_url: str, work_dir: Path) -> None:
    env = backup_env(pg_url, work_dir, PGDATABASE="no_such_database")
    proc, result = run_script(BACKUP_SH, env)
    assert proc.returncode == 1
    assert result["result"] == "Failed" and result["step"] == "inspect"
    assert "no_such_database" in result["message"] and "does not exist" in result["message"]
    assert json.loads((work_dir / "termination-log").read_text()) == result
    assert list((work_dir / "backups").iterdir()) == []


def test_backup_without_a_volume_says_so(pg_url: str, work_dir: Path) -> None:
    env = backup_env(pg_url, work_dir, BACKUP_DIR=str(work_dir / "missing"))
    proc, result = run_script(BACKUP_SH, env)
    assert proc.returncode == 1 and "is the volume mounted?" in result["message"]


# --------------------------------------------------------------- retention


def fake_dumps(directory: Path, stamps: list[str]) -> None:
    for stamp in stamps:
        (directory / f"sso-{stamp}.dump").write_bytes(b"PGDMP fake")
        (directory / f"sso-{stamp}.json").write_text("{}")


def kept(directory: Path) -> list[str]:
    return sorted(p.name[4:-5] for p in directory.glob("sso-2*.dump"))


def test_retention_keeps_newest_per_day_and_per_week(work_dir: Path) -> None:
    backups = work_dir / "backups"
    # 2026-03-16 is a Monday. Two dumps on the newest day, daily dumps for three
    # weeks, one dump per week before that, and a file that is not ours.
    stamps = ["20260322T030000Z", "20260322T150000Z"]
    stamps += [f"202603{day:02d}T030000Z" for day in range(1, 22)]
    stamps += ["20260201T030000Z", "20260208T030000Z", "20260215T030000Z", "20260222T030000Z"]
    fake_dumps(backups, stamps)
    (backups / "sso-manual-copy.dump").write_bytes(b"mine")
    env = backup_env("postgresql://u@h:1/d", work_dir, RETAIN_DAYS="7", RETAIN_WEEKS="4")
    proc, result = run_script(BACKUP_SH, env, "retention")
    assert proc.returncode == 0, proc.stderr
    expected_daily = ["20260322T150000Z"] + [f"202603{d:02d}T030000Z" for d in range(16, 22)]
    # Newest of each of the last 4 ISO weeks: weeks of Mar 16 (daily already),
    # Mar 9 (Sun Mar 15), Mar 2 (Sun Mar 8), Feb 23 (Sun Mar 1).
    expected_weekly = ["20260315T030000Z", "20260308T030000Z", "20260301T030000Z"]
    assert kept(backups) == sorted(expected_daily + expected_weekly)
    assert result == {"kind": "retention", "result": "Succeeded", "kept": 10, "deleted": 17}
    assert (backups / "sso-manual-copy.dump").exists()  # never delete what we did not write
    assert sorted(p.stem for p in backups.glob("sso-2*.json")) == sorted(
        f"sso-{s}" for s in kept(backups)
    )  # metadata goes with its dump


def reference_retention(stamps: list[str], days: int, weeks: int) -> list[str]:
    """The policy in Python, as docs/operations.md states it."""
    ordered = sorted(stamps, reverse=True)
    newest = datetime.strptime(ordered[0][:8], "%Y%m%d").date()
    newest_monday = newest - timedelta(days=newest.weekday())
    seen_days: set[date] = set()
    seen_weeks: set[date] = set()
    keep = []
    for stamp in ordered:
        day = datetime.strptime(stamp[:8], "%Y%m%d").date()
        monday = day - timedelta(days=day.weekday())
        hit = False
        if (newest - day).days < days and day not in seen_days:
            seen_days.add(day)
            hit = True
        if (newest_monday - monday).days // 7 < weeks and monday not in seen_weeks:
            seen_weeks.add(monday)
            hit = True
        if hit:
            keep.append(stamp)
    return sorted(keep)


@pytest.mark.parametrize(("days", "weeks"), [(1, 0), (3, 1), (7, 4), (14, 0), (2, 12)])
def test_retention_matches_the_documented_policy(work_dir: Path, days: int, weeks: int) -> None:
    backups = work_dir / "backups"
    start = datetime(2025, 12, 20, 3, 0, tzinfo=UTC)
    # Irregular history: gaps of 0-3 days, sometimes two dumps a day, across a year end.
    stamps, when = [], start
    for i in range(60):
        stamps.append(when.strftime("%Y%m%dT%H%M%SZ"))
        when += timedelta(hours=(i * 37) % 80 + 5)
    fake_dumps(backups, stamps)
    retain = {"RETAIN_DAYS": str(days), "RETAIN_WEEKS": str(weeks)}
    env = backup_env("postgresql://u@h:1/d", work_dir, **retain)
    proc, _ = run_script(BACKUP_SH, env, "retention")
    assert proc.returncode == 0, proc.stderr
    assert kept(backups) == reference_retention(stamps, days, weeks)
    assert max(stamps) in kept(backups)  # the newest dump always stays


# ------------------------------------------------------------ restore test


@pytest.fixture
def backed_up(pg_url: str, seeded: dict[str, Any], work_dir: Path) -> dict[str, Any]:
    proc, result = run_script(BACKUP_SH, backup_env(pg_url, work_dir))
    assert proc.returncode == 0, proc.stderr
    make_readable(work_dir)
    return result


def test_restore_test_restores_the_newest_backup_and_checks_it(
    backed_up: dict[str, Any], seeded: dict[str, Any], work_dir: Path
) -> None:
    # An older dump next to it must not be the one restored.
    older = work_dir / "backups" / "sso-20200101T000000Z.dump"
    older.write_bytes(b"not a dump")
    (work_dir / "backups" / "sso-manual-copy.dump").write_bytes(b"sorts after the dates")
    proc, result = run_script(RESTORE_SH, restore_env(work_dir), as_pg=True)
    assert proc.returncode == 0, (proc.stdout, proc.stderr)
    assert result["result"] == "Succeeded" and result["kind"] == "restore-test"
    assert result["backup"] == backed_up["file"]
    assert result["schemaVersion"] == seeded["version"]
    assert result["rows"] == {"users": 5, "apps": 1, "sessions": 3}
    assert result["newestTimestamp"] == seeded["newest"].strftime("%Y-%m-%dT%H:%M:%SZ")
    assert 0 < result["restoreSeconds"] <= result["durationSeconds"]
    assert 0 <= result["backupAgeSeconds"] < 600
    log = json.loads((work_dir / "restore-termination-log").read_text())
    assert log == result
    # The scratch server is stopped and nothing listens any more.
    assert not (work_dir / "scratch" / "data" / "postmaster.pid").exists()


def test_a_corrupted_dump_fails_the_checksum(backed_up: dict[str, Any], work_dir: Path) -> None:
    dump = work_dir / "backups" / backed_up["file"]
    data = bytearray(dump.read_bytes())
    data[len(data) // 2] ^= 0xFF
    dump.write_bytes(bytes(data))
    proc, result = run_script(RESTORE_SH, restore_env(work_dir), as_pg=True)
    assert proc.returncode == 1
    assert result["result"] == "Failed" and result["step"] == "checksum"
    assert "checksum mismatch" in result["message"]


def test_a_truncated_dump_with_a_matching_checksum_fails_the_restore(
    backed_up: dict[str, Any], work_dir: Path
) -> None:
    """A dump broken before its checksum was taken (say, by a full disk) fails in pg_restore."""
    dump = work_dir / "backups" / backed_up["file"]
    dump.write_bytes(dump.read_bytes()[: dump.stat().st_size // 2])
    meta_path = dump.with_suffix(".json")
    meta = json.loads(meta_path.read_text())
    meta["sha256"] = subprocess.run(
        ["sha256sum", str(dump)], capture_output=True, text=True, check=True
    ).stdout.split()[0]
    meta_path.write_text(json.dumps(meta, indent=1))
    proc, result = run_script(RESTORE_SH, restore_env(work_dir), as_pg=True)
    assert proc.returncode == 1
    assert result["result"] == "Failed" and result["step"] == "restore", result
    assert "pg_restore" in result["message"]
    assert result["durationSeconds"] > 0
    assert not (work_dir / "scratch" / "data" / "postmaster.pid").exists()


def test_a_schema_version_mismatch_fails(backed_up: dict[str, Any], work_dir: Path) -> None:
    env = restore_env(work_dir, EXPECTED_SCHEMA_VERSION="9999_future")
    proc, result = run_script(RESTORE_SH, env, as_pg=True)
    assert proc.returncode == 1 and result["step"] == "schema"
    assert "expected 9999_future" in result["message"]


def test_a_backup_older_than_the_rpo_fails(backed_up: dict[str, Any], work_dir: Path) -> None:
    time.sleep(1.1)
    env = restore_env(work_dir, MAX_BACKUP_AGE_SECONDS="0")
    proc, result = run_script(RESTORE_SH, env, as_pg=True)
    assert proc.returncode == 1 and result["step"] == "freshness"
    assert "more than the RPO of 0 s" in result["message"]


def test_no_backup_at_all_fails_clearly(work_dir: Path) -> None:
    proc, result = run_script(RESTORE_SH, restore_env(work_dir), as_pg=True)
    assert proc.returncode == 1 and result["step"] == "find"
    assert result["message"].startswith("no backup found in ")
