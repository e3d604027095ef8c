"""The managed database's scripts and settings, run for real on local PostgreSQL binaries.

kwok only pretends to run pods, so the primary's first-start script, the
replicas' ``pg_basebackup`` clone script and the ``postgres -c …`` settings
the StatefulSets carry are executed here, exactly as the builders emit them,
against the Debian PostgreSQL the other tests use: a primary and two
replicas named like the StatefulSet's pods. The checks: the application role
owns its database and is no superuser; both replicas stream from the primary;
with ``ANY 1 (…)`` they are quorum standbys, so a commit waits for one of
them; a row written on the primary is readable on each replica.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from operator_support import free_port

from sso_operator.resources import common, database
from sso_operator.spec import parse_instance_spec

OWNER = common.Owner(name="sso", namespace="team-a", uid="u")
PASSWORDS = {
    "SSO_DB_USER": "sso",
    "SSO_DB_PASSWORD": "app-pass-7Qe2",
    "SSO_DB_NAME": "sso",
    "SSO_REPLICATION_USER": "replicator",
    "SSO_REPLICATION_PASSWORD": "repl-pass-9Xk1",
}
AS_ROOT = os.geteuid() == 0


def bin_dir() -> Path:
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin"), key=lambda p: int(p.parent.name))
    if not found:
        pytest.skip("no PostgreSQL binaries under /usr/lib/postgresql")
    return found[-1]


def run(argv: list[str], env: dict[str, str] | None = None) -> str:
    """As the postgres user (initdb and postgres refuse root), with exactly ``env`` added."""
    prefix = ["runuser", "-u", "postgres", "--"] if AS_ROOT else []
    extra = [f"{key}={value}" for key, value in (env or {}).items()]
    proc = subprocess.run(
        [*prefix, "env", f"PATH={bin_dir()}:/usr/bin:/bin", *extra, *argv],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, f"{argv[:3]} failed:\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout


def container_settings(args: list[str], port: int, socket_dir: Path) -> list[str]:
    """The StatefulSet's ``postgres -c …`` arguments, bound to this test's port."""
    assert args[0] == "postgres"
    return [
        str(bin_dir() / "postgres"),
        *args[1:],
        "-c", f"port={port}",
        "-c", f"unix_socket_directories={socket_dir}",
        "-c", "listen_addresses=127.0.0.1",
        "-c", "fsync=off",
    ]  # fmt: skip


def wait_ready(data: Path, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and proc.poll() is None:
        with contextlib.suppress(OSError):
            lines = (data / "postmaster.pid").read_text().splitlines()
            if len(lines) >= 8 and lines[7].strip() == "ready":
                return
        time.sleep(0.05)
    raise AssertionError(f"postgres in {data} did not start (exit {proc.poll()})")


@contextlib.contextmanager
def postgres(args: list[str], data: Path, port: int, log: Path) -> Iterator[None]:
    with log.open("wb") as handle:
        proc = subprocess.Popen(
            container_settings(args, port, data.parent),
            stdout=handle,
            stderr=subprocess.STDOUT,
            user="postgres" if AS_ROOT else None,
            group="postgres" if AS_ROOT else None,
            extra_groups=[] if AS_ROOT else None,
            env={"PGDATA": str(data)},
        )
    try:
        wait_ready(data, proc)
        yield
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


def sql(port: int, query: str, *, user: str, password: str, db: str = "sso") -> str:
    out = run(
        [str(bin_dir() / "psql"), "-h", "127.0.0.1", "-p", str(port), "-U", user, "-d", db,
         "-At", "-v", "ON_ERROR_STOP=1", "-c", query],
        {"PGPASSWORD": password},
    )  # fmt: skip
    return out.strip()


def wait_for_sql(port: int, query: str, expected: str, **login: str) -> None:
    deadline = time.monotonic() + 30
    last = ""
    while time.monotonic() < deadline:
        last = sql(port, query, **login)
        if last == expected:
            return
        time.sleep(0.2)
    raise AssertionError(f"{query!r} gave {last!r}, expected {expected!r}")


@pytest.fixture
def workdir() -> Iterator[Path]:
    root = Path(
        tempfile.mkdtemp(prefix="sso-repl-", dir="/dev/shm" if Path("/dev/shm").is_dir() else None)
    )
    if AS_ROOT:
        shutil.chown(root, "postgres", "postgres")
    try:
        yield root
    finally:
        shutil.rmtree(root, ignore_errors=True)


def test_primary_and_two_replicas_replicate_with_a_quorum(workdir: Path) -> None:
    spec = parse_instance_spec({"database": {"managed": {"instances": 3}}})
    primary_args = database.primary(spec, OWNER)["spec"]["template"]["spec"]["containers"][0][
        "args"
    ]
    replicas = database.replicas(spec, OWNER)
    assert replicas is not None
    replica_pod = replicas["spec"]["template"]["spec"]
    replica_args = replica_pod["containers"][0]["args"]
    clone_script = replica_pod["initContainers"][0]["command"][-1]
    superuser_password = "super-pass-3Vb8"

    # The primary, initialised as the postgres image does, then our first-start script.
    primary_dir = workdir / "primary"
    primary_dir.mkdir()
    pwfile = primary_dir / "pw"
    pwfile.write_text(superuser_password)
    if AS_ROOT:
        shutil.chown(primary_dir, "postgres", "postgres")
        shutil.chown(pwfile, "postgres", "postgres")
    data = primary_dir / "pgdata"
    run([str(bin_dir() / "initdb"), "-D", str(data), "-U", "postgres", f"--pwfile={pwfile}",
         "--auth-local=trust", "--auth-host=scram-sha-256", "--no-sync"])  # fmt: skip
    with (data / "pg_hba.conf").open("a") as hba:
        hba.write("host all all all scram-sha-256\n")
    port = free_port()
    with postgres(primary_args, data, port, primary_dir / "log"):
        run(
            ["bash", "-c", database.INIT_SCRIPT],
            {**PASSWORDS, "POSTGRES_USER": "postgres", "PGDATA": str(data),
             "PGHOST": str(primary_dir), "PGPORT": str(port)},
        )  # fmt: skip
        run([str(bin_dir() / "pg_ctl"), "-D", str(data), "reload"])
        app = {"user": "sso", "password": PASSWORDS["SSO_DB_PASSWORD"]}
        assert sql(port, "select current_user, rolsuper from pg_roles where rolname = current_user",
                   **app) == "sso|f"  # fmt: skip

        # Two replicas, cloned by the init container's script, started with the same settings.
        started = []
        with contextlib.ExitStack() as stack:
            for index in range(2):
                pod = f"sso-db-replica-{index}"
                home = workdir / pod
                home.mkdir()
                if AS_ROOT:
                    shutil.chown(home, "postgres", "postgres")
                replica_data = home / "pgdata"
                run(
                    ["bash", "-c", clone_script],
                    {"PGDATA": str(replica_data), "PRIMARY_HOST": "127.0.0.1",
                     "PRIMARY_PORT": str(port), "POD_NAME": pod,
                     "REPLICATION_USER": PASSWORDS["SSO_REPLICATION_USER"],
                     "REPLICATION_PASSWORD": PASSWORDS["SSO_REPLICATION_PASSWORD"]},
                )  # fmt: skip
                assert (replica_data / "standby.signal").exists()
                replica_port = free_port()
                stack.enter_context(
                    postgres(replica_args, replica_data, replica_port, home / "log")
                )
                started.append(replica_port)

            superuser = {"user": "postgres", "password": superuser_password, "db": "postgres"}
            wait_for_sql(
                port,
                "select string_agg(application_name || ':' || sync_state, ',' order by 1)"
                " from pg_stat_replication",
                "sso-db-replica-0:quorum,sso-db-replica-1:quorum",
                **superuser,
            )
            assert sql(port, "show synchronous_standby_names", **superuser) == (
                'ANY 1 ("sso-db-replica-0", "sso-db-replica-1")'
            )
            # Commits on the primary (each waiting for one standby) reach every replica.
            sql(port, "create table canary (id int primary key)", **app)
            sql(port, "insert into canary values (42)", **app)
            for replica_port in started:
                assert sql(replica_port, "select pg_is_in_recovery()", **app) == "t"
                wait_for_sql(replica_port, "select count(*) from canary where id = 42", "1", **app)

            # Re-running the clone script on a replica that has data keeps its data (restarts).
            replica_data = workdir / "sso-db-replica-0" / "pgdata"
            marker = (replica_data / "PG_VERSION").stat().st_ino
            run(
                ["bash", "-c", clone_script],
                {"PGDATA": str(replica_data), "PRIMARY_HOST": "127.0.0.1",
                 "PRIMARY_PORT": str(port), "POD_NAME": "sso-db-replica-0",
                 "REPLICATION_USER": "replicator",
                 "REPLICATION_PASSWORD": PASSWORDS["SSO_REPLICATION_PASSWORD"]},
            )  # fmt: skip
            assert (replica_data / "PG_VERSION").stat().st_ino == marker

        # With both standbys gone, a commit is not acknowledged: it waits for a standby
        # (wait event SyncRep) until one returns, or until it is cancelled.
        prefix = ["runuser", "-u", "postgres", "--"] if AS_ROOT else []
        waiter = subprocess.Popen(
            [*prefix, "env", f"PGPASSWORD={PASSWORDS['SSO_DB_PASSWORD']}",
             "PGAPPNAME=sso-waiter", str(bin_dir() / "psql"), "-h", "127.0.0.1", "-p", str(port),
             "-U", "sso", "-d", "sso", "-c", "insert into canary values (43)"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        try:
            waiting = (
                "select count(*) from pg_stat_activity"
                " where application_name = 'sso-waiter' and wait_event = 'SyncRep'"
            )
            wait_for_sql(port, waiting, "1", **superuser)
            sql(
                port,
                "select pg_cancel_backend(pid) from pg_stat_activity"
                " where application_name = 'sso-waiter'",
                **superuser,
            )
            _, stderr = waiter.communicate(timeout=30)
        finally:
            if waiter.poll() is None:
                waiter.kill()
        assert "canceling wait for synchronous replication" in stderr, stderr
