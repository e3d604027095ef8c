"""A health-check probe that runs beside a load scenario.

Why this module exists: password hashing must never block the service's
event loop. The proof is a `grpc.health.v1.Health/Check` answered quickly
(p99 < 50 ms) while logins saturate the CPU. The probe runs its own event loop
in a thread of the benchmark process, sends one Check every `interval`
seconds on its own channel (closed loop would measure queueing, not the event
loop) and reports the latency distribution of the calls it made.
"""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc


class HealthProbe:
    """`start()`, run the load, `stop()` -> {"probe_p50_ms", "probe_p99_ms", ...}."""

    def __init__(self, target: str, interval: float = 0.02) -> None:
        self.target, self.interval = target, interval
        self._latencies: list[float] = []
        self._failures = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    async def _run(self) -> None:
        async with grpc.aio.insecure_channel(self.target) as channel:
            stub = health_pb2_grpc.HealthStub(channel)
            await stub.Check(health_pb2.HealthCheckRequest(), timeout=5)  # connect first
            while not self._stop.is_set():
                t0 = time.perf_counter()
                try:
                    await stub.Check(health_pb2.HealthCheckRequest(), timeout=5)
                    self._latencies.append((time.perf_counter() - t0) * 1000)
                except grpc.RpcError:
                    self._failures += 1
                await asyncio.sleep(max(0.0, self.interval - (time.perf_counter() - t0)))

    def start(self) -> None:
        self._thread = threading.Thread(target=lambda: asyncio.run(self._run()), daemon=True)
        self._thread.start()

    def stop(self) -> dict[str, Any]:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
        values = sorted(self._latencies)

        def pct(p: float) -> float | None:
            return round(values[int(p / 100 * (len(values) - 1))], 2) if values else None

        return {
            "probe_calls": len(values),
            "probe_p50_ms": pct(50),
            "probe_p99_ms": pct(99),
            "probe_failures": self._failures,
        }
