"""Reading who is calling from a gRPC context: client address, user agent, bearer token.

The client address keys the per-IP rate limits, so it must not be choosable by
the caller: `x-forwarded-for` is believed only when the transport peer is one
of the trusted proxies (`SSO_RATELIMIT__TRUSTED_PROXIES`, installed once per
process by the composition root through `trust_proxies`); the rule itself is
`sso.domain.limits.client_address`.
"""

from __future__ import annotations

from collections.abc import Iterable

import grpc

from sso.domain.auth import ClientInfo
from sso.domain.limits import IPNetwork, client_address, parse_networks
from sso.errors import Unauthenticated

MAX_METADATA_CHARS = 512
FORWARDED_FOR = "x-forwarded-for"
MAX_FORWARDED_CHARS = 2048

# The proxies whose x-forwarded-for is believed; empty = the peer is the client.
_trusted_proxies: tuple[IPNetwork, ...] = ()


def trust_proxies(cidrs: Iterable[str]) -> None:
    """Install this process's trusted proxies (called by `sso.app` from the settings)."""
    global _trusted_proxies
    _trusted_proxies = parse_networks(cidrs)


def metadata_value(context: grpc.aio.ServicerContext[object, object], key: str) -> str:
    for item_key, value in context.invocation_metadata() or ():
        if item_key == key:
            return value.decode("utf-8", "replace") if isinstance(value, bytes) else value
    return ""


def transport_peer(context: grpc.aio.ServicerContext[object, object]) -> str:
    """`ipv4:127.0.0.1:5555` / `ipv6:[::1]:5555` → the address alone."""
    peer = context.peer() or ""
    kind, _, rest = peer.partition(":")
    if kind == "ipv4":
        return rest.rsplit(":", 1)[0]
    if kind == "ipv6":
        host = rest.rsplit(":", 1)[0]
        return host.strip("[]")
    return kind or ""


def forwarded_for(context: grpc.aio.ServicerContext[object, object]) -> str:
    """Every `x-forwarded-for` value of the call, joined as one comma-separated chain."""
    values = [
        value.decode("utf-8", "replace") if isinstance(value, bytes) else value
        for key, value in context.invocation_metadata() or ()
        if key == FORWARDED_FOR
    ]
    return ",".join(values)[-MAX_FORWARDED_CHARS:]


def peer_ip(context: grpc.aio.ServicerContext[object, object]) -> str:
    """The client's address: the transport peer, or the client a trusted proxy names."""
    peer = transport_peer(context)
    if not _trusted_proxies:
        return peer
    return client_address(peer, forwarded_for(context), _trusted_proxies)


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
