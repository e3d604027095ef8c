"""The server interceptor: request ids, deadlines, input limits, access log, error boundary.

For every unary RPC, in this order:
1. Request id: `x-request-id` from the metadata when it is well-formed, else a
   fresh one; sent back as trailing metadata (on errors too) and put (with the
   client address) on every log line of the call through context variables.
2. Log masking: the request's own secrets (password, tokens, email, session
   ids, `authorization` metadata) are registered with `sso.logs`, so they are
   masked in any log line of the call, tracebacks included.
3. Input limits, before any database access: NUL bytes and per-field octet
   limits (email ≤ 254, local part ≤ 64, RFC 5321). The 64 KiB message cap is
   the server's `grpc.max_receive_message_length` (RESOURCE_EXHAUSTED).
4. Deadline: a call without a client deadline gets the server's
   `default_deadline`, after which it ends with DEADLINE_EXCEEDED.
5. The single error boundary: `sso.errors` exceptions become gRPC statuses via
   `sso.api.errors`; anything unexpected becomes INTERNAL "internal error
   (ref=…)" and its traceback is logged (masked) under that ref.
6. One access line per RPC: method, code, duration.

Streaming methods (health Watch, reflection) pass through untouched.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import re
import secrets
import time
from collections.abc import Awaitable, Callable, Iterator
from typing import Any, Literal, cast

import grpc
from google.protobuf.message import Message

from sso import errors, logs
from sso.api import errors as api_errors
from sso.api.context import peer_ip
from sso.api.metrics import WrappedHandlers

log = logging.getLogger("sso.rpc")
REQUEST_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")
REQUEST_ID_HEADER = "x-request-id"
DEFAULT_DEADLINE = 10.0

MAX_EMAIL_OCTETS = 254
MAX_LOCAL_OCTETS = 64
MAX_TOKEN_OCTETS = 8192
# Octet limits by request field name; any other string field gets DEFAULT_FIELD_OCTETS.
FIELD_OCTETS = {
    "email": MAX_EMAIL_OCTETS,
    "password": 4096,  # 1,024 code points (the policy's ceiling) of up to 4 octets
    "token": MAX_TOKEN_OCTETS,
    "access_token": MAX_TOKEN_OCTETS,
    "refresh_token": MAX_TOKEN_OCTETS,
    "session_id": 128,
    "audience": 256,
    "device_name": 512,
}
DEFAULT_FIELD_OCTETS = 1024
TOKEN_FIELDS = frozenset({"token", "access_token", "refresh_token"})

Handler = Callable[[Any, grpc.aio.ServicerContext[Any, Any]], Awaitable[Any]]


def _request_id(metadata: Any) -> str:
    for key, value in metadata or ():
        if key == REQUEST_ID_HEADER and isinstance(value, str) and REQUEST_ID.match(value):
            return value
    return secrets.token_hex(8)


def _strings(message: Message) -> Iterator[tuple[str, str]]:
    """(field name, value) of every string field set in a request, nested ones included."""
    for descriptor, value in message.ListFields():
        values = value if descriptor.is_repeated else (value,)
        for item in values:
            if isinstance(item, str):
                yield descriptor.name, item
            elif isinstance(item, Message):
                yield from _strings(item)


def _field_error(name: str) -> errors.SSOError:
    if name in TOKEN_FIELDS:
        return errors.TokenError()
    if name == "email":
        return errors.InvalidArgument("invalid email", reason="EMAIL_INVALID")
    if name == "password":
        return errors.InvalidArgument("invalid password", reason="PASSWORD_INVALID")
    return errors.InvalidArgument(f"invalid {name}", reason=f"{name.upper()}_INVALID")


def check_fields(request: object) -> None:
    """Reject NUL bytes and over-long fields before any handler (and any database) runs."""
    if not isinstance(request, Message):
        return
    for name, value in _strings(request):
        octets = len(value.encode("utf-8", "surrogatepass"))
        limit = FIELD_OCTETS.get(name, DEFAULT_FIELD_OCTETS)
        if octets > limit and name == "password":
            raise errors.InvalidArgument("password is too long", reason="PASSWORD_TOO_LONG")
        if octets > limit or "\x00" in value:
            raise _field_error(name)
        if name == "email":
            local = value.strip().rpartition("@")[0]
            if len(local.encode("utf-8", "surrogatepass")) > MAX_LOCAL_OCTETS:
                raise _field_error(name)


def _claims_secrets(token: str) -> list[tuple[str, str]]:
    """A JWT's `sid` and `email` claims (unverified): a traceback may show them, not the token."""
    parts = token.split(".")
    if len(parts) != 3 or len(token) > MAX_TOKEN_OCTETS:
        return []
    try:
        claims = json.loads(base64.urlsafe_b64decode(parts[1] + "=" * (-len(parts[1]) % 4)))
    except (ValueError, RecursionError):  # garbage, or "[[[[…" nested past the stack
        return []
    if not isinstance(claims, dict):
        return []
    found = []
    for claim, kind in (("sid", logs.SESSION), ("email", logs.EMAIL)):
        if isinstance(claims.get(claim), str):
            found.append((claims[claim], kind))
    return found


def request_secrets(
    request: object, metadata: grpc.aio.Metadata | tuple[Any, ...] | None
) -> list[tuple[str, str]]:
    """The values of this call that log lines must never show, with their kind."""
    found: list[tuple[str, str]] = []
    kinds = {logs.DROP: logs.SECRET, logs.SECRET: logs.SECRET}
    kinds.update({logs.EMAIL: logs.EMAIL, logs.SESSION: logs.SESSION})
    if isinstance(request, Message):
        for name, value in _strings(request):
            kind = kinds.get(logs.classify(name))
            if kind is not None:
                found.append((value, kind))
    for key, raw in metadata or ():
        if isinstance(raw, str) and logs.classify(str(key)) in (logs.SECRET, logs.DROP):
            found.append((raw, logs.SECRET))
            found.extend((part, logs.SECRET) for part in raw.split()[1:])
    for value, kind in list(found):
        if kind == logs.SECRET and value.count(".") == 2:
            found.extend(_claims_secrets(value))
    return found


#: Read-only lookups called on every request of a relying app. With the default
#: access-log policy ("writes") their successes write no access line: at
#: thousands of calls per second the line cost ~20% of ValidateToken's CPU
#: (py-spy, docs/performance.md) and said nothing the metrics do not.
QUIET_WHEN_OK = frozenset(
    {
        "/sso.v1.Auth/ValidateToken",
        "/sso.v1.Auth/GetJwks",
        "/sso.v1.Auth/IsAdmin",
        "/auth.Auth/IsAdmin",
        "/auth.Permissions/IsAdmin",
        "/grpc.health.v1.Health/Check",
    }
)
AccessLog = Literal["all", "writes", "errors"]


class ErrorBoundary(grpc.aio.ServerInterceptor):
    def __init__(
        self, *, default_deadline: float = DEFAULT_DEADLINE, access_log: AccessLog = "writes"
    ) -> None:
        self.default_deadline = default_deadline
        self.access_log = access_log
        self._handlers = WrappedHandlers(self._wrap)

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
        return self._handlers.get(handler_call_details.method, handler)

    def _wrap(
        self, method: str, handler: grpc.RpcMethodHandler[Any, Any]
    ) -> grpc.RpcMethodHandler[Any, Any]:
        """The method's wrapped handler: built once per method, per-call state read per call."""
        legacy = method.startswith("/auth.")
        inner = cast(Handler, handler.unary_unary)
        quiet_ok = self.access_log == "errors" or (
            self.access_log == "writes" and method in QUIET_WHEN_OK
        )

        async def wrapper(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
            metadata = context.invocation_metadata()
            request_id = _request_id(metadata)
            request_id_token = logs.request_id_var.set(request_id)
            ip_token = logs.client_ip_var.set(peer_ip(context))
            secrets_token = logs.bind_request_secrets(lambda: request_secrets(request, metadata))
            started = time.perf_counter()
            code = grpc.StatusCode.OK
            logged = False

            def access_line() -> None:
                # Written before an abort sends the status, so a client that got its
                # answer can already find the line (and once only).
                nonlocal logged
                quiet = quiet_ok and code is grpc.StatusCode.OK
                if not logged and not quiet and log.isEnabledFor(logging.INFO):
                    log.info(
                        "rpc",
                        extra={
                            "method": method,
                            "code": code.name,
                            "duration_ms": round((time.perf_counter() - started) * 1000, 2),
                        },
                    )
                logged = True

            try:
                # In the trailers, which travel in the call's last batch: an early
                # header costs a batch of its own (about 15% of a ValidateToken).
                context.set_trailing_metadata(((REQUEST_ID_HEADER, request_id),))
                check_fields(request)
                return await self._call(inner, request, context)
            except errors.SSOError as exc:
                failure = api_errors.translate(exc, legacy=legacy)
                code = failure.code
                access_line()
                await _abort(context, failure, request_id)
            except _ServerDeadline:
                failure = api_errors.deadline_exceeded(self.default_deadline)
                code = failure.code
                access_line()
                await _abort(context, failure, request_id)
            except grpc.aio.AbortError:
                set_code = context.code()
                code = (
                    set_code if isinstance(set_code, grpc.StatusCode) else grpc.StatusCode.UNKNOWN
                )
                raise
            except asyncio.CancelledError:
                code = grpc.StatusCode.CANCELLED
                raise
            except Exception:
                ref = secrets.token_hex(6)
                log.exception("unhandled error", extra={"method": method, "ref": ref})
                failure = api_errors.internal(ref)
                code = failure.code
                access_line()
                await _abort(context, failure, request_id)
            finally:
                access_line()
                logs.unbind_request_secrets(secrets_token)
                logs.client_ip_var.reset(ip_token)
                logs.request_id_var.reset(request_id_token)

        return grpc.unary_unary_rpc_method_handler(
            wrapper,
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )

    async def _call(
        self, inner: Handler, request: Any, context: grpc.aio.ServicerContext[Any, Any]
    ) -> Any:
        """Run the servicer; without a client deadline, under the server's own."""
        if not self.default_deadline or context.time_remaining() is not None:
            return await inner(request, context)
        timeout = asyncio.timeout(self.default_deadline)
        try:
            async with timeout:
                return await inner(request, context)
        except TimeoutError:
            if timeout.expired():
                raise _ServerDeadline from None
            raise


async def _abort(
    context: grpc.aio.ServicerContext[Any, Any], failure: api_errors.RpcError, request_id: str
) -> None:
    """End the call with `failure`; its trailers replace those already set, so the
    request id goes in again."""
    trailers = ((REQUEST_ID_HEADER, request_id), *failure.trailing_metadata)
    await context.abort(failure.code, failure.message, trailers)


class _ServerDeadline(Exception):
    """The server-side deadline (not an inner timeout) ended the call."""
