"""Reading gRPC errors the way clients do: status code, message, ErrorInfo reason."""

from __future__ import annotations

from collections.abc import Awaitable
from typing import Any

import grpc
from google.rpc import error_details_pb2, status_pb2

STRONG = "correct horse battery staple"


def reason_of(error: grpc.aio.AioRpcError) -> str:
    for key, value in error.trailing_metadata() or ():
        if key == "grpc-status-details-bin":
            status = status_pb2.Status.FromString(value)
            for detail in status.details:
                info = error_details_pb2.ErrorInfo()
                if detail.Unpack(info):
                    assert info.domain == "sso.dev"
                    return str(info.reason)
    return ""


async def expect_error(call: Awaitable[Any], code: grpc.StatusCode) -> grpc.aio.AioRpcError:
    try:
        await call
    except grpc.aio.AioRpcError as error:
        assert error.code() == code, (error.code(), error.details())
        return error
    raise AssertionError(f"expected {code.name}, the call succeeded")


async def http_get_json(url: str) -> Any:
    """GET from the in-process server without blocking its event loop."""
    import asyncio
    import json
    import urllib.request

    def fetch() -> Any:
        with urllib.request.urlopen(url, timeout=10) as response:  # noqa: S310 (loopback only)
            return json.load(response)

    return await asyncio.to_thread(fetch)
