"""A deliberately small HTTP/1.1 listener for what relying parties fetch over HTTP.

Serves `/.well-known/jwks.json`, `/.well-known/openid-configuration` (issuer and
jwks_uri, so PyJWT's PyJWKClient and other OIDC libraries find our keys),
`/healthz` (liveness), `/readyz` (readiness) and `/metrics` (Prometheus text).
GET only, bounded request size, one response per connection; no framework
needed for five routes. A route returns `(status, JSON body)`, or a `Response`
for other content types; it may be a coroutine function (`/metrics` renders
off the event loop).
"""

from __future__ import annotations

import asyncio
import inspect
import json
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

log = logging.getLogger("sso.http")
MAX_HEADER_BYTES = 8192
JSON_CACHE_CONTROL = "public, max-age=300"


@dataclass(frozen=True, slots=True)
class Response:
    """A non-JSON response (e.g. the Prometheus exposition text)."""

    status: int
    body: bytes
    content_type: str
    cache_control: str = "no-store"


Result = tuple[int, dict[str, Any]] | Response
Route = Callable[[], Result | Awaitable[Result]]
REASONS = {
    200: "OK",
    404: "Not Found",
    405: "Method Not Allowed",
    503: "Service Unavailable",
    400: "Bad Request",
}


class HttpListener:
    def __init__(self, routes: dict[str, Route]) -> None:
        self._routes = routes
        self._server: asyncio.Server | None = None

    async def start(self, host: str, port: int, *, reuse_port: bool = False) -> int:
        self._server = await asyncio.start_server(
            self._handle, host, port, reuse_port=reuse_port, limit=MAX_HEADER_BYTES
        )
        return int(self._server.sockets[0].getsockname()[1])

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout=5)
            request_line = head.split(b"\r\n", 1)[0].decode("latin-1")
            method, path, *_ = [*request_line.split(" "), "", ""]
            path = path.split("?", 1)[0]
            result: Result
            if method not in ("GET", "HEAD"):
                result = 405, {"error": "method not allowed"}
            elif path in self._routes:
                produced = self._routes[path]()
                result = await produced if inspect.isawaitable(produced) else produced
            else:
                result = 404, {"error": "not found"}
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, TimeoutError, ValueError):
            result, method = (400, {"error": "bad request"}), "GET"
        if not isinstance(result, Response):
            status, body = result
            result = Response(
                status,
                json.dumps(body, sort_keys=True).encode(),
                "application/json",
                JSON_CACHE_CONTROL,
            )
        payload = result.body
        headers = (
            f"HTTP/1.1 {result.status} {REASONS.get(result.status, 'OK')}\r\n"
            f"Content-Type: {result.content_type}\r\n"
            f"Content-Length: {len(payload)}\r\n"
            f"Cache-Control: {result.cache_control}\r\n"
            "Connection: close\r\n\r\n"
        ).encode()
        try:
            writer.write(headers + (payload if method != "HEAD" else b""))
            await writer.drain()
        except ConnectionError:
            pass
        finally:
            writer.close()
