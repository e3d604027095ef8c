"""A real PostgreSQL primary with a real streaming replica, for the read-routing tests.

Why this module exists: lag awareness can only be shown against a replica that
really replays WAL (and can really be paused, killed and restarted). The
primary is `bench.servers.PostgresServer` with `wal_level=replica` and a
`replication` entry in pg_hba; the standby is the same class started from a
`pg_basebackup -R` copy of it (standby.signal + primary_conninfo) instead of
`initdb`, on another port, as the same OS user as every other test cluster.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Self

from bench.servers import PostgresServer, default_parent_dir

PRIMARY_SETTINGS = {
    "wal_level": "replica",
    "max_wal_senders": "5",
    "wal_keep_size": "64MB",
    "max_connections": "200",
}


class StandbyServer(PostgresServer):
    """A hot standby cloned from `primary` with `pg_basebackup -R`, streaming from it."""

    def __init__(self, primary: PostgresServer) -> None:
        super().__init__(
            bindir=primary.bin_dir,
            superuser=primary.user,
            max_connections=200,
            settings={"hot_standby": "on", "wal_receiver_status_interval": "1s"},
        )
        self.primary = primary

    def start(self) -> Self:
        if self._root is not None:
            return self
        self._root = root = Path(tempfile.mkdtemp(prefix="sso-pg-", dir=default_parent_dir()))
        try:
            if os.geteuid() == 0:
                shutil.chown(root, user=self._system_user, group=self._system_user)
            backup = [str(self.bin_dir / "pg_basebackup"), "-h", self.primary.host]
            backup += ["-p", str(self.primary.port), "-U", self.primary.user]
            backup += ["-D", str(self.data_dir), "-R", "-X", "stream", "-c", "fast", "--no-sync"]
            self._run_as_owner(backup, timeout=120)
            self._launch()
        except BaseException:
            self.stop()
            raise
        return self

    def kill(self) -> None:
        """Stop the standby abruptly but keep its data directory (`restart()` resumes it)."""
        if self._process is not None:
            self._process.kill()
            self._process.wait(timeout=10)
            self._process = None
        (self.data_dir / "postmaster.pid").unlink(missing_ok=True)

    def restart(self) -> None:
        """Start the killed standby again on the same port; it catches up by streaming."""
        deadline = time.monotonic() + 20
        while True:
            try:
                self._launch()
                return
            except Exception:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.5)


def start_primary() -> PostgresServer:
    primary = PostgresServer(settings=PRIMARY_SETTINGS)
    primary.start()
    try:
        # Explicit replication entry (initdb's defaults have one too; this one does not
        # depend on them): the standby connects over TCP from 127.0.0.1.
        hba = primary.data_dir / "pg_hba.conf"
        with hba.open("a") as f:
            f.write(f"\nhost replication {primary.user} 127.0.0.1/32 trust\n")
        primary.execute("SELECT pg_reload_conf()")
    except BaseException:
        primary.stop()
        raise
    return primary


@dataclass
class Pair:
    primary: PostgresServer
    standby: StandbyServer

    def standby_sql(self, sql: str, dbname: str = "postgres") -> str:
        return self.standby.execute(sql, dbname).strip()

    def wait_replayed(self, dbname: str, timeout: float = 30.0) -> None:
        """Until the standby has replayed everything the primary has written so far."""
        target = self.primary.execute("SELECT pg_current_wal_insert_lsn()").strip()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                done = self.standby_sql(
                    f"SELECT pg_last_wal_replay_lsn() >= '{target}'::pg_lsn", dbname
                )
                if done == "t":
                    return
            except RuntimeError:
                pass  # the database is not on the standby yet
            time.sleep(0.1)
        raise AssertionError(f"standby did not replay up to {target} in {timeout}s")
