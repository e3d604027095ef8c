"""The per-call wrappers (errors, metrics, tracing), applied where handlers are registered.

Why this module exists: grpc.aio runs server interceptors on every call, as a
chain of coroutines (`intercept_service` -> `continuation` -> the handler
lookup) before the handler starts, even when each interceptor only wraps the
handler it finds. On ValidateToken (a ~0.3 ms call) that chain is measurable
work per call. The wrappers are fixed per method, so they are applied once
instead: `WrappingServer` stands in for the aio server while the generated
`add_*Servicer_to_server` functions (and health, reflection) register their
handlers, and wraps every unary-unary handler of every method, innermost
first, the first time the method is looked up. The server then runs without
interceptors. Streaming methods (reflection) are left as they are, as before.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import grpc

# (Quoted: grpc's handler type is not subscriptable at run time.)
Wrap = Callable[[str, "grpc.RpcMethodHandler[Any, Any]"], "grpc.RpcMethodHandler[Any, Any]"]


def wrapped(
    method: str, handler: grpc.RpcMethodHandler[Any, Any], wraps: Sequence[Wrap]
) -> grpc.RpcMethodHandler[Any, Any]:
    """`handler` inside every wrapper of `wraps` (innermost first); unary-unary only."""
    if handler.unary_unary is None:
        return handler
    for wrap in wraps:
        handler = wrap(method, handler)
    return handler


class _WrappingGenericHandler(grpc.GenericRpcHandler):
    """A registered generic handler whose unary handlers come out wrapped (once per method).

    Only methods the inner handler knows get here, so the cache is bounded by the
    registered methods.
    """

    def __init__(self, inner: grpc.GenericRpcHandler, wraps: Sequence[Wrap]) -> None:
        self._inner = inner
        self._wraps = tuple(wraps)
        self._cache: dict[
            str, tuple[grpc.RpcMethodHandler[Any, Any], grpc.RpcMethodHandler[Any, Any]]
        ] = {}

    def service(
        self, handler_call_details: grpc.HandlerCallDetails
    ) -> grpc.RpcMethodHandler[Any, Any] | None:
        handler = self._inner.service(handler_call_details)
        if handler is None:
            return None
        method: str = handler_call_details.method
        hit = self._cache.get(method)
        if hit is not None and hit[0] is handler:
            return hit[1]
        result = wrapped(method, handler, self._wraps)
        self._cache[method] = (handler, result)
        return result


class WrappingServer:
    """What registration functions see instead of the aio server (see the module doc)."""

    def __init__(self, server: grpc.aio.Server, wraps: Sequence[Wrap]) -> None:
        self.server = server
        self.wraps = tuple(wraps)

    def add_generic_rpc_handlers(self, handlers: Sequence[grpc.GenericRpcHandler]) -> None:
        self.server.add_generic_rpc_handlers(
            tuple(_WrappingGenericHandler(h, self.wraps) for h in handlers)
        )

    def add_registered_method_handlers(
        self, service: str, handlers: Mapping[str, grpc.RpcMethodHandler[Any, Any]]
    ) -> None:
        # Registered handlers take precedence over generic ones: wrap these too.
        self.server.add_registered_method_handlers(
            service,
            {name: wrapped(f"/{service}/{name}", h, self.wraps) for name, h in handlers.items()},
        )
