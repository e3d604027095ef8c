"""Process plumbing for the benchmark: start server trees, wait for every listener, count CPU.

Why this module exists: both servers under test (`sso serve --workers N` and
`bench.echo`) are a supervisor plus N workers sharing one port through
SO_REUSEPORT. "The port answers" only proves that one worker is up, so
readiness here means N listening sockets on the port (read from
/proc/net/tcp). And because this 2-core machine is shared, every measured
window also records who used the CPU: the server's processes, the load
generator, PostgreSQL + Redis, and everything else on the machine.
"""

from __future__ import annotations

import contextlib
import os
import resource
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Self

CLK_TCK = os.sysconf("SC_CLK_TCK")


def listening_sockets(port: int) -> int:
    """How many TCP sockets listen on `port` (IPv4 and IPv6), SO_REUSEPORT copies included."""
    count = 0
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if (
                len(fields) > 3
                and fields[3] == "0A"
                and int(fields[1].rsplit(":", 1)[1], 16) == port
            ):
                count += 1
    return count


def children_of(pid: int) -> list[int]:
    """Direct children of `pid` (from /proc/*/stat)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            # The command name may contain spaces and parentheses: split after the last ')'.
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            if int(fields[1]) == pid:
                found.append(int(entry.name))
        except (OSError, IndexError, ValueError):
            continue  # the process ended while we looked
    return found


def tree(pid: int) -> list[int]:
    """`pid` and all its descendants."""
    result, pending = [], [pid]
    while pending:
        current = pending.pop()
        result.append(current)
        pending.extend(children_of(current))
    return result


def cpu_seconds(pids: Iterable[int], *, reaped: bool = True, main_thread: bool = False) -> float:
    """User + system CPU seconds used so far by `pids` (vanished processes count 0).

    With `reaped`, each process's count includes its children that have exited
    and been waited for (cutime, cstime): summed over a process tree, that is the
    CPU of everything the tree ever ran, short-lived processes included (a
    PostgreSQL backend that lived for one pooled connection, for example).
    With `main_thread`, only each process's main thread counts (for asyncio
    servers: the event loop, without the hashing or gRPC poller threads).
    """
    total = 0
    for pid in pids:
        stat = f"/proc/{pid}/task/{pid}/stat" if main_thread else f"/proc/{pid}/stat"
        try:
            fields = Path(stat).read_text().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])  # utime, stime
            if reaped:
                total += int(fields[13]) + int(fields[14])  # cutime, cstime
        except (OSError, IndexError, ValueError):
            continue  # the process ended while we looked
    return total / CLK_TCK


def children_cpu() -> float:
    """CPU seconds of this process's finished (waited-for) children, since it started."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def machine_cpu() -> tuple[float, float]:
    """(busy, total) CPU seconds of the whole machine since boot, all cores."""
    fields = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = fields[3] + fields[4]  # idle + iowait
    total = sum(fields[:8])  # guest time is already inside user
    return (total - idle) / CLK_TCK, total / CLK_TCK


@dataclass
class CpuUsage:
    """Cores busy on average during a window, by who used them."""

    server: float
    generator: float
    datastores: float
    other: float  # everything else on the machine (other people's work)
    machine: float
    seconds: float

    def as_dict(self) -> dict[str, float]:
        return {
            "server_cores": round(self.server, 2),
            "generator_cores": round(self.generator, 2),
            "datastore_cores": round(self.datastores, 2),
            "other_cores": round(self.other, 2),
            "machine_cores": round(self.machine, 2),
            "seconds": round(self.seconds, 2),
        }


Pids = Callable[[], Iterable[int]]


class CpuWindow:
    """CPU used between `start()` and `stop()` by the server, the datastores and the machine.

    Each group is a process tree, re-read at both ends: processes born inside the
    window count, and those that ended inside it still count through their
    parent's reaped-children time (see `cpu_seconds`). The load generator's CPU
    is not sampled here: the generator runners measure it exactly (getrusage of
    the finished child) and pass it to `usage()`.
    """

    def __init__(self, server: Pids, datastores: Pids) -> None:
        self._pids = {"server": server, "datastores": datastores}
        self._start: dict[str, float] = {}
        self._delta: dict[str, float] | None = None

    def _snap(self) -> dict[str, float]:
        snap = {name: cpu_seconds(pids()) for name, pids in self._pids.items()}
        snap["wall"], snap["machine"] = time.monotonic(), machine_cpu()[0]
        return snap

    def start(self) -> None:
        try:
            self._start = self._snap()
        except Exception as error:  # a sampling failure must not abort the benchmark
            print(f"warning: CPU sampling failed: {error!r}", file=sys.stderr)

    def stop(self) -> None:
        if not self._start or self._delta is not None:
            return
        end = self._snap()
        self._delta = {k: max(0.0, end[k] - self._start[k]) for k in end}

    @property
    def server_cpu(self) -> float:
        """Server CPU seconds in the window."""
        return self._delta["server"] if self._delta else 0.0

    def usage(self, generator_cpu: float = 0.0, server_cpu: float | None = None) -> CpuUsage | None:
        """Average cores in use (None when the window was never opened).

        `server_cpu` overrides the sampled server figure.
        """
        self.stop()
        d = self._delta
        if d is None or d["wall"] <= 0:
            return None
        wall = d["wall"]
        server = d["server"] if server_cpu is None else server_cpu
        return CpuUsage(
            server=server / wall,
            generator=generator_cpu / wall,
            datastores=d["datastores"] / wall,
            other=max(0.0, d["machine"] - server - generator_cpu - d["datastores"]) / wall,
            machine=d["machine"] / wall,
            seconds=wall,
        )


class ServerTree:
    """A supervisor process whose workers share `port`; stopped with SIGTERM to the group."""

    def __init__(
        self,
        argv: list[str],
        *,
        port: int,
        workers: int,
        env: dict[str, str],
        log: Path,
        ready_timeout: float = 60.0,
    ) -> None:
        self.argv, self.port, self.workers, self.env = argv, port, workers, env
        self.log, self.ready_timeout = log, ready_timeout
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> Self:
        with self.log.open("ab") as out:
            self.process = subprocess.Popen(
                self.argv,
                env=self.env,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = time.monotonic() + self.ready_timeout
        while listening_sockets(self.port) < self.workers:
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                tail = "\n".join(self.log.read_text(errors="replace").splitlines()[-30:])
                raise RuntimeError(
                    f"{self.argv[2:4]} did not start {self.workers} workers:\n{tail}"
                )
            time.sleep(0.1)
        return self

    @property
    def pids(self) -> list[int]:
        return tree(self.process.pid) if self.process is not None else []

    def stop(self) -> None:
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        pgid = process.pid  # start_new_session: the group is ours alone
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pgid, signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pgid, signal.SIGKILL)
            process.wait(timeout=10)
        # Workers exit with the supervisor; give stragglers in our group a last chance.
        deadline = time.monotonic() + 10
        while listening_sockets(self.port) and time.monotonic() < deadline:
            time.sleep(0.1)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
