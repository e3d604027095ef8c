"""gRPC health (`grpc.health.v1`) with the three meanings Kubernetes probes need.

- `liveness`: the process and its event loop work. Never depends on a backend,
  so a database outage does not restart every pod.
- `readiness` and `""`: the pod can serve: the database answers (and Redis,
  when configured). Re-checked every `interval` seconds by a background task.
- the served service names (`auth.Auth`, `sso.v1.Auth`, …) follow readiness.
On shutdown everything goes NOT_SERVING first, so load balancers drain the pod.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence

from grpc_health.v1 import health, health_pb2

log = logging.getLogger("sso.health")
SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING

Check = Callable[[], Awaitable[bool]]


class HealthState:
    def __init__(self, checks: dict[str, Check], services: Sequence[str], interval: float = 2.0):
        self.servicer = health.aio.HealthServicer()
        self._checks = checks
        self._services = list(services)
        self._interval = interval
        self._task: asyncio.Task[None] | None = None
        self.ready = False
        self.failing: list[str] = []

    async def start(self) -> None:
        await self.servicer.set("liveness", SERVING)
        await self.refresh()
        self._task = asyncio.create_task(self._loop(), name="health-checks")

    async def refresh(self) -> bool:
        failing: list[str] = []
        for name, check in self._checks.items():
            try:
                ok = await asyncio.wait_for(check(), timeout=max(1.0, self._interval))
            except Exception:  # a probe must never crash the loop
                ok = False
            if not ok:
                failing.append(name)
        ready = not failing
        if ready != self.ready or failing != self.failing:
            log.info("readiness changed", extra={"ready": ready, "failing": failing})
        self.ready, self.failing = ready, failing
        status = SERVING if ready else NOT_SERVING
        for name in ["", "readiness", *self._services]:
            await self.servicer.set(name, status)
        return ready

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(self._interval)
            await self.refresh()

    async def shutdown(self) -> None:
        if self._task is not None:
            self._task.cancel()
            self._task = None
        await self.servicer.enter_graceful_shutdown()
