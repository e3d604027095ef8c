"""The server interceptor: request ids, access log, and the single error boundary.

Servicers raise `sso.errors` exceptions; this is the one place they become gRPC
statuses (via `sso.api.errors`). Anything unexpected becomes INTERNAL with a
reference id, and its traceback is logged (masked) under that id. Only unary
methods are wrapped: streaming ones (health Watch, reflection) pass through.
"""

from __future__ import annotations

import logging
import re
import secrets
import time
from collections.abc import Awaitable, Callable
from typing import Any, cast

import grpc

from sso import errors
from sso.api import errors as api_errors
from sso.api.context import peer_ip
from sso.logs import client_ip_var, request_id_var

log = logging.getLogger("sso.rpc")
REQUEST_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")

Handler = Callable[[Any, grpc.aio.ServicerContext[Any, Any]], Awaitable[Any]]


def _request_id(details: grpc.HandlerCallDetails) -> str:
    for key, value in details.invocation_metadata or ():
        if key == "x-request-id" and isinstance(value, str) and REQUEST_ID.match(value):
            return value
    return secrets.token_hex(8)


class ErrorBoundary(grpc.aio.ServerInterceptor):
    async def intercept_service(
        self,
        continuation: Callable[
            [grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler[Any, Any] | None]
        ],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[Any, Any] | None:
        handler = await continuation(handler_call_details)
        if handler is None or handler.unary_unary is None:
            return handler
        method: str = handler_call_details.method
        legacy = method.startswith("/auth.")
        inner = cast(Handler, handler.unary_unary)
        request_id = _request_id(handler_call_details)

        async def wrapper(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
            token = request_id_var.set(request_id)
            ip_token = client_ip_var.set(peer_ip(context))
            started = time.perf_counter()
            outcome = "OK"
            try:
                return await inner(request, context)
            except errors.SSOError as exc:
                failure = api_errors.translate(exc, legacy=legacy)
                outcome = failure.code.name
                await context.abort(failure.code, failure.message, failure.trailing_metadata)
            except grpc.aio.AbortError:
                raise
            except Exception:
                log.exception("unhandled error", extra={"method": method})
                failure = api_errors.internal(request_id)
                outcome = failure.code.name
                await context.abort(failure.code, failure.message, failure.trailing_metadata)
            finally:
                log.info(
                    "rpc",
                    extra={
                        "method": method,
                        "status": outcome,
                        "duration_ms": round((time.perf_counter() - started) * 1000, 2),
                    },
                )
                request_id_var.reset(token)
                client_ip_var.reset(ip_token)

        return grpc.unary_unary_rpc_method_handler(
            wrapper,
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )
