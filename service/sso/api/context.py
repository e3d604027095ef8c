"""Reading who is calling from a gRPC context: peer address, user agent, bearer token."""

from __future__ import annotations

import grpc

from sso.domain.auth import ClientInfo
from sso.errors import Unauthenticated

MAX_METADATA_CHARS = 512


def metadata_value(context: grpc.aio.ServicerContext[object, object], key: str) -> str:
    for item_key, value in context.invocation_metadata() or ():
        if item_key == key:
            return value.decode("utf-8", "replace") if isinstance(value, bytes) else value
    return ""


def peer_ip(context: grpc.aio.ServicerContext[object, object]) -> str:
    """`ipv4:127.0.0.1:5555` / `ipv6:[::1]:5555` → the address alone."""
    peer = context.peer() or ""
    kind, _, rest = peer.partition(":")
    if kind == "ipv4":
        return rest.rsplit(":", 1)[0]
    if kind == "ipv6":
        host = rest.rsplit(":", 1)[0]
        return host.strip("[]")
    return kind or ""


def client_info(
    context: grpc.aio.ServicerContext[object, object], device_name: str = ""
) -> ClientInfo:
    return ClientInfo(
        ip=peer_ip(context),
        user_agent=metadata_value(context, "user-agent")[:MAX_METADATA_CHARS],
        device_name=device_name[:MAX_METADATA_CHARS],
    )


def bearer_token(context: grpc.aio.ServicerContext[object, object]) -> str:
    value = metadata_value(context, "authorization")
    scheme, _, token = value.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthenticated("missing bearer token", reason="TOKEN_MISSING")
    return token.strip()
