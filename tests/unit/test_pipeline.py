"""The per-call wrappers are applied at registration, once per method, innermost first."""

from __future__ import annotations

from typing import Any

import grpc

from sso.api.pipeline import WrappingServer


async def _handler(request: Any, context: Any) -> Any:
    return request


class _Recorder:
    """A stand-in aio server: keeps what is registered on it."""

    def __init__(self) -> None:
        self.generic: list[grpc.GenericRpcHandler] = []
        self.registered: dict[str, dict[str, Any]] = {}

    def add_generic_rpc_handlers(self, handlers: Any) -> None:
        self.generic.extend(handlers)

    def add_registered_method_handlers(self, service: str, handlers: Any) -> None:
        self.registered[service] = dict(handlers)


class _Details(grpc.HandlerCallDetails):
    def __init__(self, method: str) -> None:
        self.method = method
        self.invocation_metadata = ()


def _tagging(tag: str, built: list[str]) -> Any:
    def wrap(method: str, handler: Any) -> Any:
        built.append(f"{tag}{method}")
        inner = handler.unary_unary

        async def wrapper(request: Any, context: Any) -> Any:
            return f"{tag}({await inner(request, context)})"

        return grpc.unary_unary_rpc_method_handler(wrapper)

    return wrap


async def test_generic_handlers_wrapped_once_per_method_innermost_first() -> None:
    built: list[str] = []
    recorder = _Recorder()
    server = WrappingServer(recorder, [_tagging("in", built), _tagging("out", built)])  # type: ignore[arg-type]
    server.add_generic_rpc_handlers(
        (
            grpc.method_handlers_generic_handler(
                "a.A",
                {
                    "X": grpc.unary_unary_rpc_method_handler(_handler),
                    "S": grpc.unary_stream_rpc_method_handler(_handler),
                },
            ),
        )
    )
    (generic,) = recorder.generic
    first = generic.service(_Details("/a.A/X"))
    assert first is not None
    assert generic.service(_Details("/a.A/X")) is first  # built once, reused per call
    assert await first.unary_unary("r", None) == "out(in(r))"
    assert built == ["in/a.A/X", "out/a.A/X"]
    stream = generic.service(_Details("/a.A/S"))
    assert stream is not None and stream.unary_unary is None  # streaming: untouched
    assert generic.service(_Details("/a.A/missing")) is None
    assert built == ["in/a.A/X", "out/a.A/X"]


async def test_registered_handlers_are_wrapped_too() -> None:
    # Registered handlers take precedence over generic ones in grpc.aio: an unwrapped
    # one would bypass the error boundary.
    built: list[str] = []
    recorder = _Recorder()
    server = WrappingServer(recorder, [_tagging("w", built)])  # type: ignore[arg-type]
    server.add_registered_method_handlers(
        "grpc.health.v1.Health", {"Check": grpc.unary_unary_rpc_method_handler(_handler)}
    )
    check = recorder.registered["grpc.health.v1.Health"]["Check"]
    assert await check.unary_unary("r", None) == "w(r)"
    assert built == ["w/grpc.health.v1.Health/Check"]
