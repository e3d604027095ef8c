"""The Login ceiling: raw argon2id verifications per second, shaped like the service.

Why this module exists: a password login can never beat the hash it must
compute, so Login throughput is judged against raw argon2 on the same machine in
the same run. The shape copies the service: `processes` worker processes (as
`sso serve --workers N`) each running `threads` verifying threads (the service's
`passwords.workers` thread pool; argon2-cffi releases the GIL), at the
service's parameters (m, t, p, 32-byte hash, 16-byte salt), verifying the
correct password as a successful login does. Nothing else: no event loop, no
gRPC, no database.

All processes get the same absolute start time, load for `warmup` seconds, then
count the verifications that finish inside the `seconds`-long window.

    python -m bench.argon2_ceiling --processes 2 --threads 2 --seconds 10
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import threading
import time
from dataclasses import asdict, dataclass
from typing import Protocol

import argon2

PASSWORD = "bench-argon2-ceiling-password"


class Window(Protocol):
    """Marks the measured window (bench.procs.CpuWindow samples the machine there)."""

    def start(self) -> None: ...

    def stop(self) -> None: ...


@dataclass(frozen=True)
class Argon2Params:
    memory_kib: int = 19456
    time_cost: int = 2
    parallelism: int = 1

    def hasher(self) -> argon2.PasswordHasher:
        return argon2.PasswordHasher(
            time_cost=self.time_cost,
            memory_cost=self.memory_kib,
            parallelism=self.parallelism,
            hash_len=32,
            salt_len=16,
            type=argon2.Type.ID,
        )


@dataclass(frozen=True)
class CeilingResult:
    processes: int
    threads: int
    seconds: float
    count: int
    rps: float
    p50_ms: float
    p99_ms: float
    single_ms: float  # one verify, nothing else running
    cpu_s: float  # CPU the verifying processes used inside the window
    params: Argon2Params


def _percentile(sorted_values: list[float], pct: float) -> float:
    if not sorted_values:
        return 0.0
    return sorted_values[int(pct / 100 * (len(sorted_values) - 1))]


def worker(
    params: Argon2Params, threads: int, start_at: float, warmup: float, seconds: float
) -> None:
    """One process: `threads` threads verifying until the window closes; JSON on stdout."""
    hasher = params.hasher()
    encoded = hasher.hash(PASSWORD)
    measure_from, stop_at = start_at + warmup, start_at + warmup + seconds
    latencies: list[list[float]] = [[] for _ in range(threads)]

    def loop(index: int) -> None:
        mine = latencies[index]
        while True:
            t0 = time.time()
            if t0 >= stop_at:
                return
            hasher.verify(encoded, PASSWORD)
            t1 = time.time()
            if t0 >= measure_from and t1 < stop_at:
                mine.append((t1 - t0) * 1000)

    time.sleep(max(0.0, start_at - time.time()))
    pool = [threading.Thread(target=loop, args=(i,)) for i in range(threads)]
    for thread in pool:
        thread.start()
    time.sleep(max(0.0, measure_from - time.time()))
    cpu_from = time.process_time()
    time.sleep(max(0.0, stop_at - time.time()))
    cpu_s = time.process_time() - cpu_from
    for thread in pool:
        thread.join()
    samples = [x for chunk in latencies for x in chunk]
    print(json.dumps({"latencies_ms": samples, "cpu_s": cpu_s}))


def single_verify_ms(params: Argon2Params, repeat: int = 5) -> float:
    hasher = params.hasher()
    encoded = hasher.hash(PASSWORD)
    samples = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        hasher.verify(encoded, PASSWORD)
        samples.append((time.perf_counter() - t0) * 1000)
    return statistics.median(samples)


def measure(
    params: Argon2Params,
    *,
    processes: int,
    threads: int,
    seconds: float,
    warmup: float = 2.0,
    window: Window | None = None,
) -> CeilingResult:
    """Run the ceiling with `processes` x `threads` verifiers; return verifies/s."""
    single = single_verify_ms(params)
    start_at = time.time() + 1.0 + 0.2 * processes  # every process imported and hashed by then
    argv = [
        sys.executable,
        "-m",
        "bench.argon2_ceiling",
        "--worker",
        f"--threads={threads}",
        f"--start-at={start_at}",
        f"--warmup={warmup}",
        f"--seconds={seconds}",
        f"--memory-kib={params.memory_kib}",
        f"--time-cost={params.time_cost}",
        f"--parallelism={params.parallelism}",
    ]
    children = [
        subprocess.Popen(argv, stdout=subprocess.PIPE, text=True, env=dict(os.environ))
        for _ in range(processes)
    ]
    timers: list[threading.Timer] = []
    if window is not None:
        timers = [
            threading.Timer(start_at + warmup - time.time(), window.start),
            threading.Timer(start_at + warmup + seconds - time.time(), window.stop),
        ]
        for timer in timers:
            timer.start()
    latencies: list[float] = []
    cpu_s = 0.0
    try:
        for child in children:
            out, _ = child.communicate(timeout=start_at - time.time() + warmup + seconds + 60)
            if child.returncode != 0:
                raise RuntimeError(f"argon2 ceiling worker failed with {child.returncode}")
            report = json.loads(out.strip().splitlines()[-1])
            latencies.extend(report["latencies_ms"])
            cpu_s += float(report["cpu_s"])
    finally:
        for timer in timers:
            timer.join()
    latencies.sort()
    return CeilingResult(
        processes=processes,
        threads=threads,
        seconds=seconds,
        count=len(latencies),
        rps=len(latencies) / seconds,
        p50_ms=_percentile(latencies, 50),
        p99_ms=_percentile(latencies, 99),
        single_ms=single,
        cpu_s=cpu_s,
        params=params,
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.argon2_ceiling", description=__doc__)
    parser.add_argument("--processes", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--threads", type=int, default=max(2, os.cpu_count() or 2))
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--warmup", type=float, default=2.0)
    parser.add_argument("--memory-kib", type=int, default=Argon2Params.memory_kib)
    parser.add_argument("--time-cost", type=int, default=Argon2Params.time_cost)
    parser.add_argument("--parallelism", type=int, default=Argon2Params.parallelism)
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--start-at", type=float, default=0.0, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    params = Argon2Params(args.memory_kib, args.time_cost, args.parallelism)
    if args.worker:
        worker(params, args.threads, args.start_at, args.warmup, args.seconds)
        return 0
    result = measure(
        params,
        processes=args.processes,
        threads=args.threads,
        seconds=args.seconds,
        warmup=args.warmup,
    )
    print(json.dumps(asdict(result), indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
