"""Prometheus metrics of the service: gRPC, business and security counters, `/metrics`.

Why this module exists: one place declares every metric the edge and the use
cases feed, and renders them for the HTTP listener's `/metrics`:

- `MetricsInterceptor` (a gRPC server interceptor) times every unary call
  (`sso_grpc_request_duration_seconds`, per method), counts it by method and
  status code, counts errors, and keeps an in-flight gauge. Methods are only
  the registered ones (an unknown method never becomes a label).
- `MetricsSink` (a `sso.domain.events.EventSink`) turns security events into
  business and security counters. Labels are the event name and outcome and a
  few fixed reasons, never a user id, email, address or token.
- `MeteredLimiter` wraps the rate limiter: denied hits and decisions taken by
  the in-process fallback while Redis was unreachable (degraded).
- `render()` returns the exposition text. When `PROMETHEUS_MULTIPROC_DIR` is set
  (`sso serve --workers N` sets it for its children) every worker writes its
  values to files there and any worker answers a scrape with the sum over all.

Database and Redis metrics live in `sso.storage.instrumentation` (the storage
layer owns those clients); they share the process registry and appear here too.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
import os
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any, Protocol, cast

import grpc
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
    multiprocess,
)

from sso.domain.events import Detail, SecurityEvent
from sso.domain.limits import LimitDecision, LimitRule, RateLimiter

log = logging.getLogger("sso.metrics")
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
# No `*_created` series: a timestamp per label set that nobody queries doubles the output.
disable_created_metrics()  # type: ignore[no-untyped-call]
# RPC latencies: a token validation (~1 ms) up to an argon2 login under load.
RPC_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

GRPC_REQUESTS = Counter(
    "sso_grpc_requests_total", "gRPC calls handled, by method and status code.", ["method", "code"]
)
GRPC_ERRORS = Counter(
    "sso_grpc_errors_total",
    "gRPC calls that ended with a status other than OK.",
    ["method", "code"],
)
GRPC_SECONDS = Histogram(
    "sso_grpc_request_duration_seconds",
    "Time from receiving a gRPC call to its status, by method.",
    ["method"],
    buckets=RPC_BUCKETS,
)
GRPC_IN_FLIGHT = Gauge(
    "sso_grpc_requests_in_flight",
    "gRPC calls being handled right now, by method.",
    ["method"],
    multiprocess_mode="livesum",
)
REGISTRATIONS = Counter("sso_registrations_total", "Accounts created.")
LOGINS = Counter(
    "sso_logins_total",
    "Password logins by result (success, failure, locked: refused because locked).",
    ["result"],
)
TOKEN_VALIDATIONS = Counter(
    "sso_token_validations_total",
    "ValidateToken calls by result (valid, invalid, error).",
    ["result"],
)
REFRESHES = Counter("sso_token_refreshes_total", "Refresh tokens rotated successfully.")
REFRESH_REUSE = Counter(
    "sso_refresh_token_reuse_total",
    "Spent refresh tokens presented again (the session was revoked).",
)
LOGIN_FAILURES = Counter(
    "sso_login_failures_total",
    "Failed logins by reason (bad_password, unknown_user, locked).",
    ["reason"],
)
LOCKOUTS = Counter(
    "sso_lockouts_total",
    "Failed logins that locked an account (temporary: set or extended; hard: until unlock).",
    ["kind"],
)
RATE_LIMITED = Counter(
    "sso_rate_limited_total", "Requests refused by a rate limit, by rule.", ["rule"]
)
RATELIMIT_DEGRADED = Counter(
    "sso_ratelimit_degraded_total",
    "Rate-limit decisions taken in-process because Redis was unreachable, by rule.",
    ["rule"],
)
SECURITY_EVENTS = Counter(
    "sso_security_events_total", "Every security event, by event and outcome.", ["event", "outcome"]
)
HEALTH_CHECK_UP = Gauge(
    "sso_health_check_up",
    "Whether a readiness check (database, redis) passed last time (1) or not (0).",
    ["check"],
    multiprocess_mode="livemin",
)
EVENT_LOOP_LAG = Gauge(
    "sso_event_loop_lag_seconds",
    "How late the event loop last ran a timer (the liveness check's measure).",
    multiprocess_mode="livemax",
)

LEGACY_PASSWORD_HASHES = Gauge(
    "sso_legacy_password_hashes",
    "Users whose stored hash is still the Go service's bcrypt (argon2id after their next login).",
    multiprocess_mode="mostrecent",
)
# Read replicas (docs/operations.md): labelled by index in database.replica_urls, never the URL.
REPLICA_LAG_SECONDS = Gauge(
    "sso_db_replica_lag_seconds",
    "Seconds the replica's replayed data is behind the primary at the last sample (+Inf: down).",
    ["replica"],
    multiprocess_mode="livemax",
)
REPLICA_LAG_BYTES = Gauge(
    "sso_db_replica_lag_bytes",
    "WAL bytes the replica has received but not replayed at the last sample (+Inf: down).",
    ["replica"],
    multiprocess_mode="livemax",
)
REPLICA_HEALTHY = Gauge(
    "sso_db_replica_healthy",
    "Whether the replica serves lag-tolerant reads (1: up and within max_replica_lag).",
    ["replica"],
    multiprocess_mode="livemin",
)
REPLICA_FALLBACKS = Gauge(
    "sso_db_replica_read_fallbacks",
    "Reads that failed on a replica and ran again on the primary, since the process started.",
    multiprocess_mode="livesum",
)


class ReplicaStatus(Protocol):
    name: str
    healthy: bool
    lag_seconds: float
    lag_bytes: float


def record_replicas(replicas: Iterable[ReplicaStatus], fallbacks: int) -> None:
    """Export the read router's last samples (called by the lag sampler after each round)."""
    for r in replicas:
        REPLICA_LAG_SECONDS.labels(r.name).set(r.lag_seconds)
        REPLICA_LAG_BYTES.labels(r.name).set(r.lag_bytes)
        REPLICA_HEALTHY.labels(r.name).set(1 if r.healthy else 0)
    REPLICA_FALLBACKS.set(fallbacks)


Handler = Callable[[Any, grpc.aio.ServicerContext[Any, Any]], Awaitable[Any]]
if TYPE_CHECKING:
    Build = Callable[[str, grpc.RpcMethodHandler[Any, Any]], grpc.RpcMethodHandler[Any, Any]]
    Continuation = Callable[
        [grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler[Any, Any] | None]
    ]
_OUTCOMES = frozenset({"success", "failure"})
_RULES = frozenset({"login_ip", "login_email", "register_ip"})


def final_code(context: grpc.aio.ServicerContext[Any, Any], error: BaseException | None) -> str:
    """The status a handler ended with: what it set or aborted with, else from the exception."""
    code = context.code()
    if isinstance(code, grpc.StatusCode):
        return code.name
    if error is None:
        return "OK"
    return "CANCELLED" if isinstance(error, asyncio.CancelledError) else "UNKNOWN"


def unary_handler(
    handler: grpc.RpcMethodHandler[Any, Any], wrapper: Handler
) -> grpc.RpcMethodHandler[Any, Any]:
    return grpc.unary_unary_rpc_method_handler(
        wrapper,
        request_deserializer=handler.request_deserializer,
        response_serializer=handler.response_serializer,
    )


class WrappedHandlers:
    """Each method's wrapped handler, built once instead of on every call.

    Keyed by method name and valid while the server hands out the same inner
    handler object for it (registered handlers are fixed; anything else is
    rebuilt). Only methods the server knows get here, so the cache is bounded
    by the registered methods (and capped, to be safe).
    """

    MAX_METHODS = 1024

    def __init__(self, build: Build) -> None:
        self._build = build
        self._cache: dict[
            str, tuple[grpc.RpcMethodHandler[Any, Any], grpc.RpcMethodHandler[Any, Any]]
        ] = {}

    def get(
        self, method: str, handler: grpc.RpcMethodHandler[Any, Any]
    ) -> grpc.RpcMethodHandler[Any, Any]:
        hit = self._cache.get(method)
        if hit is not None and hit[0] is handler:
            return hit[1]
        wrapped = self._build(method, handler)
        if len(self._cache) < self.MAX_METHODS or method in self._cache:
            self._cache[method] = (handler, wrapped)
        return wrapped


def _validation_result(code: str) -> str:
    if code == "OK":
        return "valid"
    return "invalid" if code == "UNAUTHENTICATED" else "error"


# Per-method business counters fed from the status of the call itself.
_BY_METHOD: dict[str, Callable[[str], None]] = {
    "/sso.v1.Auth/ValidateToken": lambda code: TOKEN_VALIDATIONS.labels(
        _validation_result(code)
    ).inc(),
}


class MetricsInterceptor(grpc.aio.ServerInterceptor):
    """Latency, counts by status code, errors and in-flight calls of every unary method."""

    def __init__(self) -> None:
        self._handlers = WrappedHandlers(self._wrap)

    async def intercept_service(
        self, continuation: Continuation, handler_call_details: grpc.HandlerCallDetails
    ) -> grpc.RpcMethodHandler[Any, Any] | None:
        handler = await continuation(handler_call_details)
        if handler is None or handler.unary_unary is None:
            return handler
        return self._handlers.get(handler_call_details.method, handler)

    @staticmethod
    def _wrap(
        method: str, handler: grpc.RpcMethodHandler[Any, Any]
    ) -> grpc.RpcMethodHandler[Any, Any]:
        inner = cast(Handler, handler.unary_unary)
        in_flight = GRPC_IN_FLIGHT.labels(method)
        seconds = GRPC_SECONDS.labels(method)
        requests_ok = GRPC_REQUESTS.labels(method, "OK")
        extra = _BY_METHOD.get(method)

        async def wrapper(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
            started = time.perf_counter()
            in_flight.inc()
            error: BaseException | None = None
            try:
                return await inner(request, context)
            except BaseException as exc:
                error = exc
                raise
            finally:
                in_flight.dec()
                seconds.observe(time.perf_counter() - started)
                code = final_code(context, error)
                if code == "OK":
                    requests_ok.inc()
                else:
                    GRPC_REQUESTS.labels(method, code).inc()
                    GRPC_ERRORS.labels(method, code).inc()
                if extra is not None:
                    extra(code)

        return unary_handler(handler, wrapper)


class MetricsSink:
    """An `EventSink` that counts security events (appended to the app's sinks)."""

    async def emit(
        self,
        event: SecurityEvent,
        *,
        user_id: int | None = None,
        target: str | None = None,
        outcome: str = "success",
        details: Mapping[str, Detail] | None = None,
    ) -> None:
        count_event(event, outcome, details or {})


def count_event(event: SecurityEvent, outcome: str, details: Mapping[str, Detail]) -> None:
    SECURITY_EVENTS.labels(event.value, outcome if outcome in _OUTCOMES else "other").inc()
    if event is SecurityEvent.USER_CREATED:
        REGISTRATIONS.inc()
    elif event is SecurityEvent.LOGIN_SUCCESS:
        LOGINS.labels("success").inc()
    elif event is SecurityEvent.LOGIN_FAIL:
        reason = details.get("reason")
        if reason == "locked":
            LOGINS.labels("locked").inc()
            LOGIN_FAILURES.labels("locked").inc()
        else:
            LOGINS.labels("failure").inc()
            LOGIN_FAILURES.labels(
                "unknown_user" if reason == "unknown_user" else "bad_password"
            ).inc()
    elif event in (SecurityEvent.LOGIN_LOCK, SecurityEvent.LOGIN_FAIL_MAX):
        LOGINS.labels("failure").inc()
        LOGIN_FAILURES.labels("bad_password").inc()
        LOCKOUTS.labels("hard" if event is SecurityEvent.LOGIN_FAIL_MAX else "temporary").inc()
    elif event is SecurityEvent.TOKEN_REFRESHED:
        REFRESHES.inc()
    elif event is SecurityEvent.TOKEN_REUSE:
        REFRESH_REUSE.inc()


def _rule_label(rule: LimitRule) -> str:
    return rule.name if rule.name in _RULES else "other"


class MeteredLimiter:
    """A `RateLimiter` that counts what the wrapped one decides (denied, degraded)."""

    def __init__(self, inner: RateLimiter) -> None:
        self.inner = inner

    async def hit(self, rule: LimitRule, key: str) -> LimitDecision:
        decision = await self.inner.hit(rule, key)
        if decision.degraded:
            RATELIMIT_DEGRADED.labels(_rule_label(rule)).inc()
        if not decision.allowed:
            RATE_LIMITED.labels(_rule_label(rule)).inc()
        return decision

    def __getattr__(self, name: str) -> Any:  # degraded, degraded_total, on_degraded, …
        return getattr(self.inner, name)


def multiprocess_dir() -> str | None:
    return os.environ.get(MULTIPROC_ENV) or None


def render() -> tuple[bytes, str]:
    """The exposition text of every metric of this process (or of all workers)."""
    if multiprocess_dir() is not None:
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        return generate_latest(registry), CONTENT_TYPE_LATEST
    return generate_latest(REGISTRY), CONTENT_TYPE_LATEST


class LegacyHashGauge:
    """Keeps `sso_legacy_password_hashes` equal to a count read from storage.

    Refreshed at start, every `interval` seconds, and `delay` seconds after
    `poke()` (the hasher pokes when a bcrypt hash verified, so the gauge drops
    shortly after the login's rehash lands); pokes within one delay coalesce.
    """

    def __init__(
        self, count: Callable[[], Awaitable[int]], *, interval: float = 300.0, delay: float = 2.0
    ) -> None:
        self._count = count
        self._interval = interval
        self._delay = delay
        self._loop_task: asyncio.Task[None] | None = None
        self._poke_task: asyncio.Task[None] | None = None

    async def refresh(self) -> int:
        value = await self._count()
        LEGACY_PASSWORD_HASHES.set(value)
        return value

    def start(self) -> None:
        self._loop_task = asyncio.get_running_loop().create_task(self._every_interval())

    def poke(self) -> None:
        if self._poke_task is None or self._poke_task.done():
            # A fresh context: the count is not part of the login that poked (no child span
            # outliving its trace, no request id on its log lines).
            self._poke_task = asyncio.get_running_loop().create_task(
                self._later(), context=contextvars.Context()
            )

    async def close(self) -> None:
        for task in (self._loop_task, self._poke_task):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task

    async def _later(self) -> None:
        await asyncio.sleep(self._delay)
        await self._refresh_logged()

    async def _every_interval(self) -> None:
        while True:
            await self._refresh_logged()
            await asyncio.sleep(self._interval)

    async def _refresh_logged(self) -> None:
        try:
            await self.refresh()
        except Exception:  # the database is down: keep the last value, try again later
            log.warning("legacy hash count failed", exc_info=True)
