"""OpenTelemetry tracing: the tracer provider from the standard `OTEL_*` variables, server spans.

Why this module exists: every gRPC call should be one trace span, continuing
the caller's trace, with the database and Redis calls it makes as children,
exported over OTLP. No instrumentation package is used (only pre-releases
exist); this module and `sso.storage.instrumentation` are the whole of it.

- `setup_tracing()` builds a `TracerProvider` only when the environment asks
  for export: `OTEL_TRACES_EXPORTER=otlp|console`, or an
  `OTEL_EXPORTER_OTLP_(TRACES_)ENDPOINT` (then OTLP over gRPC). Otherwise, with
  `OTEL_TRACES_EXPORTER=none`, `OTEL_SDK_DISABLED=true` or
  `SSO_OBSERVABILITY__TRACING_ENABLED=false`, it returns None and nothing is
  traced (no span objects on the hot path). Everything else is the SDK's own
  reading of the standard variables: endpoint, headers, TLS, timeout and
  compression (`OTEL_EXPORTER_OTLP_*`), sampling (`OTEL_TRACES_SAMPLER*`),
  batching (`OTEL_BSP_*`), resource (`OTEL_SERVICE_NAME`, default `sso`,
  `OTEL_RESOURCE_ATTRIBUTES`).
- `TracingInterceptor` (outermost gRPC interceptor) extracts the caller's
  context from the call metadata with the global propagator (W3C
  `traceparent`/`tracestate` and baggage by default, `OTEL_PROPAGATORS`),
  opens a SERVER span named `package.Service/Method` and makes it current, so
  the statements and Redis commands of the call nest under it, and log lines
  written during the call carry its trace id (`sso.logs`). Health checks
  (probes, every few seconds) are not traced.
The provider is not installed globally: the composition root hands the tracer
to the interceptor and to the storage hooks, and closes the provider (flush).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, cast

import grpc
from opentelemetry import propagate
from opentelemetry.sdk.resources import SERVICE_NAME, Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter, SpanExporter
from opentelemetry.trace import SpanKind, Status, StatusCode, Tracer

from sso.api.metrics import Handler, WrappedHandlers, final_code, unary_handler
from sso.config import ObservabilitySettings

if TYPE_CHECKING:
    from sso.api.metrics import Continuation

log = logging.getLogger("sso.tracing")
INSTRUMENTATION_NAME = "sso"
DEFAULT_SERVICE_NAME = "sso"
# Server-side codes that mean the server failed (OpenTelemetry gRPC conventions);
# client mistakes (INVALID_ARGUMENT, UNAUTHENTICATED, …) leave the span status unset.
# Probes call these every few seconds: metered, but not worth a trace each.
UNTRACED_PREFIXES = ("/grpc.health.v1.Health/",)
SERVER_ERRORS = frozenset(
    {"UNKNOWN", "DEADLINE_EXCEEDED", "UNIMPLEMENTED", "INTERNAL", "UNAVAILABLE", "DATA_LOSS"}
)


def _exporter_names(env: Mapping[str, str]) -> list[str]:
    configured = env.get("OTEL_TRACES_EXPORTER", "").strip().lower()
    if configured:
        return [name.strip() for name in configured.split(",") if name.strip()]
    if env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") or env.get("OTEL_EXPORTER_OTLP_ENDPOINT"):
        return ["otlp"]
    return []


def _exporter(name: str, env: Mapping[str, str]) -> SpanExporter | None:
    if name == "otlp":
        protocol = (
            env.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL") or env.get("OTEL_EXPORTER_OTLP_PROTOCOL")
        ) or "grpc"
        if protocol != "grpc":
            log.warning(
                "only OTLP over gRPC is supported; exporting with grpc",
                extra={"protocol": protocol},
            )
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

        return OTLPSpanExporter()
    if name == "console":
        return ConsoleSpanExporter()
    if name != "none":
        log.warning("unknown trace exporter ignored", extra={"exporter": name})
    return None


def _resource() -> Resource:
    detected = Resource.create()
    name = str(detected.attributes.get(SERVICE_NAME, ""))
    if not name or name.startswith("unknown_service"):
        detected = detected.merge(Resource({SERVICE_NAME: DEFAULT_SERVICE_NAME}))
    return detected


def setup_tracing(
    settings: ObservabilitySettings, env: Mapping[str, str] | None = None
) -> TracerProvider | None:
    """A provider exporting as the `OTEL_*` variables say, or None when tracing is off."""
    env = os.environ if env is None else env
    if not settings.tracing_enabled or env.get("OTEL_SDK_DISABLED", "").lower() == "true":
        return None
    exporters = [e for e in (_exporter(n, env) for n in _exporter_names(env)) if e is not None]
    if not exporters:
        return None
    provider = TracerProvider(resource=_resource())
    for exporter in exporters:
        provider.add_span_processor(BatchSpanProcessor(exporter))
    log.info(
        "tracing enabled",
        extra={"exporters": [type(e).__name__ for e in exporters]},
    )
    return provider


def tracer_of(provider: TracerProvider | None) -> Tracer | None:
    if provider is None:
        return None
    return provider.get_tracer(INSTRUMENTATION_NAME)


def _carrier(metadata: Any) -> dict[str, str]:
    carrier: dict[str, str] = {}
    for key, value in metadata or ():
        if isinstance(value, str):
            carrier[key] = value
    return carrier


class TracingInterceptor(grpc.aio.ServerInterceptor):
    """One SERVER span per unary call, continuing the trace named in the call metadata."""

    def __init__(self, tracer: Tracer) -> None:
        self.tracer = tracer
        self._handlers = WrappedHandlers(self._wrap)

    async def intercept_service(
        self, continuation: Continuation, handler_call_details: grpc.HandlerCallDetails
    ) -> grpc.RpcMethodHandler[Any, Any] | None:
        handler = await continuation(handler_call_details)
        if handler is None or handler.unary_unary is None:
            return handler
        method: str = handler_call_details.method
        if method.startswith(UNTRACED_PREFIXES):
            return handler
        return self._handlers.get(method, handler)

    def _wrap(
        self, method: str, handler: grpc.RpcMethodHandler[Any, Any]
    ) -> grpc.RpcMethodHandler[Any, Any]:
        service, _, name = method.lstrip("/").partition("/")
        span_name = method.lstrip("/")
        attributes = {"rpc.system": "grpc", "rpc.service": service, "rpc.method": name}
        inner = cast(Handler, handler.unary_unary)
        tracer = self.tracer

        async def wrapper(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
            # The caller's trace context is per call: read from this call's metadata.
            parent = propagate.extract(_carrier(context.invocation_metadata()))
            with tracer.start_as_current_span(
                span_name,
                context=parent,
                kind=SpanKind.SERVER,
                attributes=attributes,
                record_exception=False,
                set_status_on_exception=False,
            ) as span:
                error: BaseException | None = None
                try:
                    return await inner(request, context)
                except BaseException as exc:
                    error = exc
                    raise
                finally:
                    code = final_code(context, error)
                    span.set_attribute("rpc.grpc.status_code", grpc.StatusCode[code].value[0])
                    if code in SERVER_ERRORS:
                        span.set_status(Status(StatusCode.ERROR, code))

        return unary_handler(handler, wrapper)
