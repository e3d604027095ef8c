"""A deliberately small HTTP/1.1 listener for what relying parties fetch over HTTP.

Serves `/.well-known/jwks.json`, `/.well-known/openid-configuration` (issuer and
jwks_uri, so PyJWT's PyJWKClient and other OIDC libraries find our keys),
`/healthz` (liveness) and `/readyz` (readiness). GET only, bounded request
size, one response per connection; no framework needed for four static routes.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable
from typing import Any

log = logging.getLogger("sso.http")
MAX_HEADER_BYTES = 8192
Route = Callable[[], tuple[int, dict[str, Any]]]
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
            if method not in ("GET", "HEAD"):
                status, body = 405, {"error": "method not allowed"}
            elif path in self._routes:
                status, body = self._routes[path]()
            else:
                status, body = 404, {"error": "not found"}
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, TimeoutError, ValueError):
            status, body, method = 400, {"error": "bad request"}, "GET"
        payload = json.dumps(body, sort_keys=True).encode()
        headers = (
            f"HTTP/1.1 {status} {REASONS.get(status, 'OK')}\r\n"
            "Content-Type: application/json\r\n"
            f"Content-Length: {len(payload)}\r\n"
            "Cache-Control: public, max-age=300\r\n"
            "Connection: close\r\n\r\n"
        ).encode()
        try:
            writer.write(headers + (payload if method != "HEAD" else b""))
            await writer.drain()
        except ConnectionError:
            pass
        finally:
            writer.close()
