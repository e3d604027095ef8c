"""Metrics and trace spans for the database and Redis, hooked onto the live clients.

Why this module exists: the storage layer owns SQLAlchemy and redis-py, so it
is the one place that can time their calls. No auto-instrumentation package is
used (only pre-releases exist); the hooks are small:

- SQLAlchemy: `before/after_cursor_execute` and `handle_error` events on the
  engine's sync engine time every statement (`sso_db_query_duration_seconds`,
  by operation) and open a CLIENT span per statement; the span's parent is
  whatever span is current in the calling task (SQLAlchemy's greenlets inherit
  the task's context), so statements nest under the gRPC server span. Pool
  events keep the pool gauges (checked out, idle, overflow) current.
- Redis: the client's `execute_command` (every command, `EVALSHA` of a
  registered script included) and its pipelines' `execute` are wrapped to time
  each call, count errors and open a CLIENT span.

Labels are bounded by construction: SQL operation keywords, Redis command
names, exception class names. No statement parameters, keys or values ever
become a label or a span attribute. Gauges use the `livesum` multiprocess mode,
so `sso serve --workers N` reports the sum over live workers.
"""

from __future__ import annotations

import functools
import re
import time
import weakref
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from typing import Any

from opentelemetry.trace import SpanKind, Status, StatusCode, Tracer
from prometheus_client import Counter, Gauge, Histogram
from redis.asyncio import Redis
from sqlalchemy import event
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.ext.asyncio import AsyncEngine

# Statement latencies: sub-millisecond lookups up to the 5 s statement timeout.
DB_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
# Redis calls are bounded by RedisSettings.timeout (0.25 s by default).
REDIS_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0)
MAX_QUERY_TEXT = 2000
_OPERATION = re.compile(r"\s*(?:/\*.*?\*/\s*)?([A-Za-z]+)", re.DOTALL)
_KNOWN_OPERATIONS = frozenset(
    {"SELECT", "INSERT", "UPDATE", "DELETE", "WITH", "BEGIN", "COMMIT", "ROLLBACK", "PRAGMA"}
)
# Engines already hooked (a second call would double-count every statement), and their
# hooks, which also time the statements sent past SQLAlchemy (`observed_statement`).
_INSTRUMENTED: weakref.WeakKeyDictionary[Engine, _DbHooks] = weakref.WeakKeyDictionary()
_COMMAND = re.compile(r"^[A-Z][A-Z.-]{0,31}$")

DB_QUERY_SECONDS = Histogram(
    "sso_db_query_duration_seconds",
    "Duration of one SQL statement (cursor execute), by operation.",
    ["operation"],
    buckets=DB_BUCKETS,
)
DB_ERRORS = Counter(
    "sso_db_errors_total", "SQL statements that raised, by operation.", ["operation"]
)
DB_POOL_SIZE = Gauge(
    "sso_db_pool_size",
    "Configured persistent connections of the pool (SSO_DATABASE__POOL_SIZE).",
    multiprocess_mode="livesum",
)
DB_POOL_CHECKED_OUT = Gauge(
    "sso_db_pool_checked_out",
    "Connections currently lent to a request.",
    multiprocess_mode="livesum",
)
DB_POOL_CHECKED_IN = Gauge(
    "sso_db_pool_checked_in", "Open connections idle in the pool.", multiprocess_mode="livesum"
)
DB_POOL_OVERFLOW = Gauge(
    "sso_db_pool_overflow",
    "Open connections beyond the pool size (bounded by SSO_DATABASE__MAX_OVERFLOW).",
    multiprocess_mode="livesum",
)
REDIS_SECONDS = Histogram(
    "sso_redis_command_duration_seconds",
    "Duration of one Redis call (a command, or a pipeline as PIPELINE), errors included.",
    ["command"],
    buckets=REDIS_BUCKETS,
)
REDIS_ERRORS = Counter(
    "sso_redis_errors_total",
    "Redis calls that failed, by command and exception class.",
    ["command", "error"],
)


def sql_operation(statement: str) -> str:
    """The statement's leading keyword (`SELECT`, `INSERT`, …); OTHER when unusual."""
    match = _OPERATION.match(statement)
    word = match.group(1).upper() if match else ""
    return word if word in _KNOWN_OPERATIONS else "OTHER"


def redis_command(args: tuple[Any, ...]) -> str:
    """The command name of a redis-py call (`GET`, `EVALSHA`, …); OTHER when unusual."""
    if not args:
        return "OTHER"
    first = args[0]
    name = (first.decode("ascii", "replace") if isinstance(first, bytes) else str(first)).upper()
    name = name.split(" ", 1)[0]
    return name if _COMMAND.match(name) else "OTHER"


# -- SQLAlchemy -------------------------------------------------------------------------


class _DbHooks:
    """The event handlers of one engine (kept on an object so each engine has its own)."""

    _KEY = "sso_instrumentation"

    def __init__(self, engine: AsyncEngine, tracer: Tracer | None) -> None:
        # Weak: the registry maps the engine to these hooks, which must not keep it alive.
        self.engine = weakref.ref(engine.sync_engine)
        self.tracer = tracer
        url = make_url(engine.url)
        self.system = "postgresql" if url.get_backend_name() == "postgresql" else "sqlite"
        self.attributes: dict[str, str | int] = {"db.system.name": self.system}
        if self.system == "postgresql":
            self.attributes["db.namespace"] = url.database or ""
            self.attributes["server.address"] = url.host or ""
            if url.port:
                self.attributes["server.port"] = url.port
        self.namespace = (url.database or "") if self.system == "postgresql" else "main"

    def before(
        self,
        _conn: Any,
        _cursor: Any,
        statement: str,
        _parameters: Any,
        context: Any,
        _executemany: bool,
    ) -> None:
        if context is not None:
            setattr(context, self._KEY, self.start(statement))

    def start(self, statement: str) -> tuple[float, str, Any]:
        """(started, operation, span) for one statement about to be sent."""
        operation = sql_operation(statement)
        span = None
        if self.tracer is not None:
            attributes = dict(self.attributes)
            attributes["db.operation.name"] = operation
            attributes["db.query.text"] = statement[:MAX_QUERY_TEXT]
            span = self.tracer.start_span(
                f"{operation} {self.namespace}".strip(), kind=SpanKind.CLIENT, attributes=attributes
            )
        return time.perf_counter(), operation, span

    @staticmethod
    def finish(state: tuple[float, str, Any], error: BaseException | None) -> None:
        started, operation, span = state
        DB_QUERY_SECONDS.labels(operation).observe(time.perf_counter() - started)
        if error is not None:
            DB_ERRORS.labels(operation).inc()
        if span is not None:
            if error is not None:
                span.set_attribute("error.type", type(error).__name__)
                span.set_status(Status(StatusCode.ERROR, type(error).__name__))
            span.end()

    def after(
        self,
        _conn: Any,
        _cursor: Any,
        _statement: str,
        _parameters: Any,
        context: Any,
        _executemany: bool,
    ) -> None:
        state = getattr(context, self._KEY, None) if context is not None else None
        if state is not None:
            setattr(context, self._KEY, None)
            self.finish(state, None)

    def error(self, exception_context: Any) -> None:
        context = exception_context.execution_context
        state = getattr(context, self._KEY, None) if context is not None else None
        if state is not None:
            setattr(context, self._KEY, None)
            self.finish(state, exception_context.original_exception)

    def checked_out(self, *_args: Any) -> None:
        self._pool_gauges(returning=False)

    def checked_in(self, *_args: Any) -> None:
        self._pool_gauges(returning=True)

    def _pool_gauges(self, *, returning: bool) -> None:
        """Set the pool gauges; `returning`: the checkin event fires before the pool
        takes the connection back (kept idle, or closed when the pool is full)."""
        engine = self.engine()
        if engine is None:
            return
        pool: Any = engine.pool
        queue = getattr(pool, "_pool", None)
        if queue is None or not hasattr(pool, "size"):
            return  # StaticPool / NullPool: nothing to report
        configured = int(pool.size())
        overflow = int(getattr(pool, "_overflow", 0))  # connections opened minus the pool size
        idle = int(queue.qsize())
        if returning:
            if configured and idle >= configured:
                overflow -= 1  # the pool is full: the connection gets closed
            else:
                idle += 1
        opened = configured + overflow
        DB_POOL_SIZE.set(configured)
        DB_POOL_CHECKED_IN.set(idle)
        DB_POOL_CHECKED_OUT.set(max(0, opened - idle))
        DB_POOL_OVERFLOW.set(max(0, overflow))


def instrument_engine(engine: AsyncEngine, tracer: Tracer | None = None) -> None:
    """Time every statement of `engine` (and trace it when `tracer` is given); pool gauges."""
    sync: Engine = engine.sync_engine
    if sync in _INSTRUMENTED:
        return
    hooks = _INSTRUMENTED[sync] = _DbHooks(engine, tracer)
    event.listen(sync, "before_cursor_execute", hooks.before)
    event.listen(sync, "after_cursor_execute", hooks.after)
    event.listen(sync, "handle_error", hooks.error)
    event.listen(sync, "checkout", hooks.checked_out)
    event.listen(sync, "checkin", hooks.checked_in)
    hooks.checked_out()


@contextmanager
def observed_statement(engine: AsyncEngine, statement: str) -> Iterator[None]:
    """Time (and trace) one statement sent on the driver connection, past SQLAlchemy's
    events (`sso.storage.prebuilt`); nothing when `engine` is not instrumented."""
    hooks = _INSTRUMENTED.get(engine.sync_engine)
    if hooks is None:
        yield
        return
    state = hooks.start(statement)
    try:
        yield
    except BaseException as exc:
        hooks.finish(state, exc)
        raise
    hooks.finish(state, None)


# -- Redis --------------------------------------------------------------------------------


async def _observed(
    tracer: Tracer | None,
    command: str,
    call: Callable[[], Awaitable[Any]],
    attributes: dict[str, str | int],
) -> Any:
    span = None
    if tracer is not None:
        span = tracer.start_span(
            command,
            kind=SpanKind.CLIENT,
            attributes={**attributes, "db.operation.name": command},
        )
    started = time.perf_counter()
    try:
        return await call()
    except BaseException as exc:
        error = type(exc).__name__
        REDIS_ERRORS.labels(command, error).inc()
        if span is not None:
            span.set_attribute("error.type", error)
            span.set_status(Status(StatusCode.ERROR, error))
        raise
    finally:
        REDIS_SECONDS.labels(command).observe(time.perf_counter() - started)
        if span is not None:
            span.end()


def instrument_redis(redis: Redis, tracer: Tracer | None = None) -> None:
    """Wrap `redis` (this one client) so each command and pipeline is timed and traced."""
    if getattr(redis, "_sso_instrumented", False):
        return
    kwargs = redis.connection_pool.connection_kwargs
    attributes: dict[str, str | int] = {"db.system.name": "redis"}
    if "host" in kwargs:
        attributes["server.address"] = str(kwargs["host"])
        attributes["server.port"] = int(kwargs.get("port", 6379))
    attributes["db.namespace"] = str(kwargs.get("db", 0))
    execute_command: Callable[..., Awaitable[Any]] = redis.execute_command
    pipeline: Callable[..., Any] = redis.pipeline

    @functools.wraps(execute_command)
    async def traced_command(*args: Any, **options: Any) -> Any:
        command = redis_command(args)
        return await _observed(
            tracer, command, lambda: execute_command(*args, **options), attributes
        )

    @functools.wraps(pipeline)
    def traced_pipeline(*args: Any, **kwargs: Any) -> Any:
        pipe = pipeline(*args, **kwargs)
        execute = pipe.execute

        @functools.wraps(execute)
        async def traced_execute(*a: Any, **kw: Any) -> Any:
            name = "MULTI" if pipe.is_transaction else "PIPELINE"
            return await _observed(tracer, name, lambda: execute(*a, **kw), attributes)

        setattr(pipe, "execute", traced_execute)  # noqa: B010 (mypy: no method assignment)
        return pipe

    setattr(redis, "execute_command", traced_command)  # noqa: B010
    setattr(redis, "pipeline", traced_pipeline)  # noqa: B010
    setattr(redis, "_sso_instrumented", True)  # noqa: B010
