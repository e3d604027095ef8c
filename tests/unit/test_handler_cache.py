"""The interceptors build each method's wrapped handler once, not per call."""

from __future__ import annotations

from typing import Any

import grpc

from sso.api.metrics import WrappedHandlers


async def _handler(request: Any, context: Any) -> Any:
    return request


def test_built_once_per_method_and_rebuilt_for_another_inner_handler() -> None:
    built: list[str] = []

    def build(method: str, handler: Any) -> Any:
        built.append(method)
        return grpc.unary_unary_rpc_method_handler(_handler)

    cache = WrappedHandlers(build)
    inner = grpc.unary_unary_rpc_method_handler(_handler)
    first = cache.get("/a.A/X", inner)
    assert cache.get("/a.A/X", inner) is first
    assert cache.get("/a.A/Y", inner) is not first
    replaced = grpc.unary_unary_rpc_method_handler(_handler)
    assert cache.get("/a.A/X", replaced) is not first
    assert built == ["/a.A/X", "/a.A/Y", "/a.A/X"]
