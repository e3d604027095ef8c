"""gRPC health (`grpc.health.v1`) with the three meanings Kubernetes probes need.

- `liveness`: the process and its event loop work. Never depends on a backend,
  so a database outage does not restart every pod. A timer task measures how
  late the loop runs it (`sso_event_loop_lag_seconds`); while that lag exceeds
  `max_loop_lag` the entry reports NOT_SERVING. A loop blocked outright cannot
  answer at all, which the probe's timeout turns into a failure too.
- `readiness` and `""`: the pod can serve: the database answers. Redis is
  checked too but is *advisory* by default: while it is down the service keeps
  serving in degraded mode (rate limits per pod, SECURITY_CHECKLIST L1), so a
  shared Redis outage must not pull every pod out of its Service; it shows as
  `degraded` on `/readyz` and as `sso_health_check_up{check="redis"} 0`.
  (`SSO_OBSERVABILITY__READINESS_REQUIRES_REDIS=true` makes it gating.) All
  checks run concurrently every `interval` seconds in a background task; a
  Check only reads the last result, so it answers at once while a backend hangs.
- the served service names (`auth.Auth`, `sso.v1.Auth`, …) follow readiness.
Watch streams the current status, then every change. On shutdown every entry
but `liveness` goes NOT_SERVING at once and stays there, so load balancers
drain the pod while the kubelet still sees it alive; when the server then
stops, open Watch streams end (`close_watches`), or each would hold
`server.stop(grace)` for the whole grace period.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Collection, Sequence
from typing import Any

import grpc
from grpc_health.v1 import health_pb2

from sso.api.metrics import EVENT_LOOP_LAG, HEALTH_CHECK_UP

log = logging.getLogger("sso.health")
SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
SERVICE_UNKNOWN = health_pb2.HealthCheckResponse.SERVICE_UNKNOWN
LIVENESS = "liveness"
READINESS = "readiness"

Check = Callable[[], Awaitable[bool]]


class HealthServicer:
    """`grpc.health.v1.Health` over a status table; Watch streams end on `close_watches`.

    Unlike grpc_health's servicer no lock is held while a Watch writes, so a
    slow watcher never delays `set` (and so never delays NOT_SERVING).
    """

    def __init__(self) -> None:
        self._status: dict[str, int] = {}
        self._changed = asyncio.Event()
        self._closed = False

    async def Check(
        self, request: health_pb2.HealthCheckRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> health_pb2.HealthCheckResponse:
        status = self._status.get(request.service)
        if status is None:
            await context.abort(grpc.StatusCode.NOT_FOUND, "unknown service")
        return health_pb2.HealthCheckResponse(status=status)

    async def List(
        self, request: health_pb2.HealthListRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> health_pb2.HealthListResponse:
        return health_pb2.HealthListResponse(
            statuses={k: health_pb2.HealthCheckResponse(status=v) for k, v in self._status.items()}
        )

    async def Watch(
        self, request: health_pb2.HealthCheckRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> None:
        last: int | None = None
        while True:
            changed = self._changed  # taken before the read: a later change sets it
            status = self._status.get(request.service, SERVICE_UNKNOWN)
            if status != last:
                await context.write(health_pb2.HealthCheckResponse(status=status))
                last = status
            if self._closed:
                return
            await changed.wait()

    async def set(self, service: str, status: int) -> None:
        if self._status.get(service) != status:
            self._status[service] = status
            self._wake()

    def close_watches(self) -> None:
        self._closed = True
        self._wake()

    def _wake(self) -> None:
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()


class HealthState:
    def __init__(
        self,
        checks: dict[str, Check],
        services: Sequence[str],
        interval: float = 2.0,
        *,
        max_loop_lag: float = 5.0,
        lag_tick: float = 0.5,
        advisory: Collection[str] = (),
    ) -> None:
        self.servicer = HealthServicer()
        self._checks = checks
        self._advisory = frozenset(advisory)
        self._services = list(services)
        self._interval = interval
        self._max_loop_lag = max_loop_lag
        self._lag_tick = lag_tick
        self._tasks: list[asyncio.Task[None]] = []
        self._draining = False
        self.ready = False
        self.alive = True
        self.loop_lag = 0.0
        # Failing checks that make the pod unready / that only degrade it.
        self.failing: list[str] = []
        self.degraded: list[str] = []

    @property
    def draining(self) -> bool:
        return self._draining

    async def start(self) -> None:
        await self.servicer.set(LIVENESS, SERVING)
        await self.refresh()
        self._tasks = [
            asyncio.create_task(self._loop(), name="health-checks"),
            asyncio.create_task(self._watch_loop_lag(), name="health-loop-lag"),
        ]

    async def _run(self, name: str, check: Check) -> bool:
        try:
            ok = bool(await asyncio.wait_for(check(), timeout=max(1.0, self._interval)))
        except Exception:  # a probe must never crash the loop
            ok = False
        HEALTH_CHECK_UP.labels(name).set(1 if ok else 0)
        return ok

    async def refresh(self) -> bool:
        checks = list(self._checks.items())
        results = await asyncio.gather(*(self._run(name, check) for name, check in checks))
        down = [name for (name, _), ok in zip(checks, results, strict=True) if not ok]
        if self._draining:
            return False
        failing = [name for name in down if name not in self._advisory]
        degraded = [name for name in down if name in self._advisory]
        ready = not failing
        if ready != self.ready or failing != self.failing or degraded != self.degraded:
            log.info(
                "readiness changed",
                extra={"ready": ready, "failing": failing, "degraded": degraded},
            )
        self.ready, self.failing, self.degraded = ready, failing, degraded
        status = SERVING if ready else NOT_SERVING
        for name in ["", READINESS, *self._services]:
            await self.servicer.set(name, status)
        return ready

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(self._interval)
            await self.refresh()

    async def _watch_loop_lag(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            started = loop.time()
            await asyncio.sleep(self._lag_tick)
            await self.record_loop_lag(max(0.0, loop.time() - started - self._lag_tick))

    async def record_loop_lag(self, lag: float) -> None:
        """Liveness from one measured lag (the timer task calls this every tick)."""
        self.loop_lag = lag
        EVENT_LOOP_LAG.set(lag)
        alive = lag <= self._max_loop_lag
        if alive != self.alive:
            log.warning("event loop lag", extra={"lag_seconds": round(lag, 3), "alive": alive})
            self.alive = alive
            await self.servicer.set(LIVENESS, SERVING if alive else NOT_SERVING)

    async def shutdown(self) -> None:
        """Drain: NOT_SERVING everywhere except liveness, at once and for good."""
        self._draining = True
        self.ready = False
        tasks, self._tasks = self._tasks, []
        for task in tasks:
            task.cancel()
        for name in ["", READINESS, *self._services]:
            await self.servicer.set(name, NOT_SERVING)
        log.info("health: draining (NOT_SERVING)")
        await asyncio.gather(*tasks, return_exceptions=True)

    def close_watches(self) -> None:
        """End every Watch stream (the server is about to stop)."""
        self.servicer.close_watches()
