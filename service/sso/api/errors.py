"""Domain errors → gRPC status, in one table (DESIGN.md §5).

`sso.v1` errors carry a `google.rpc.ErrorInfo` (reason, domain `sso.dev`) in the
standard `grpc-status-details-bin` trailer, so clients branch on the reason and
never on the message. The legacy `auth.*` API keeps the seed service's own
contract: bad credentials are INVALID_ARGUMENT "invalid email or password", a
taken email is ALREADY_EXISTS "user already exists" (the ErrorInfo trailer is
still attached; the seed's clients ignore it).
"""

from __future__ import annotations

from dataclasses import dataclass

import grpc
from google.protobuf import any_pb2
from google.rpc import error_details_pb2, status_pb2

from sso import errors

ERROR_DOMAIN = "sso.dev"

# Most specific first: the first matching class decides the code.
V1_TABLE: tuple[tuple[type[errors.SSOError], grpc.StatusCode], ...] = (
    (errors.InvalidArgument, grpc.StatusCode.INVALID_ARGUMENT),
    (errors.Unauthenticated, grpc.StatusCode.UNAUTHENTICATED),
    (errors.PermissionDenied, grpc.StatusCode.PERMISSION_DENIED),
    (errors.NotFound, grpc.StatusCode.NOT_FOUND),
    (errors.AlreadyExists, grpc.StatusCode.ALREADY_EXISTS),
    (errors.RateLimited, grpc.StatusCode.RESOURCE_EXHAUSTED),
    (errors.FailedPrecondition, grpc.StatusCode.FAILED_PRECONDITION),
    (errors.Conflict, grpc.StatusCode.ABORTED),
    (errors.Unavailable, grpc.StatusCode.UNAVAILABLE),
)

LEGACY_MESSAGES: dict[type[errors.SSOError], tuple[grpc.StatusCode, str]] = {
    errors.Unauthenticated: (grpc.StatusCode.INVALID_ARGUMENT, "invalid email or password"),
    errors.AlreadyExists: (grpc.StatusCode.ALREADY_EXISTS, "user already exists"),
}


@dataclass(frozen=True, slots=True)
class RpcError:
    code: grpc.StatusCode
    message: str
    trailing_metadata: tuple[tuple[str, str | bytes], ...]


def _code_for(exc: errors.SSOError) -> grpc.StatusCode:
    for cls, code in V1_TABLE:
        if isinstance(exc, cls):
            return code
    return grpc.StatusCode.INTERNAL


def _details(code: grpc.StatusCode, message: str, reason: str, meta: dict[str, str]) -> bytes:
    info = any_pb2.Any()
    info.Pack(error_details_pb2.ErrorInfo(reason=reason, domain=ERROR_DOMAIN, metadata=meta))
    status = status_pb2.Status(code=code.value[0], message=message, details=[info])
    return bytes(status.SerializeToString())


def translate(exc: errors.SSOError, *, legacy: bool = False) -> RpcError:
    code, message = _code_for(exc), exc.message
    if legacy:
        for cls, (legacy_code, legacy_message) in LEGACY_MESSAGES.items():
            if isinstance(exc, cls) and not isinstance(exc, errors.TokenError):
                code, message = legacy_code, legacy_message
                break
    if code is grpc.StatusCode.INTERNAL:
        message = "internal error"
    trailers: list[tuple[str, str | bytes]] = [
        ("grpc-status-details-bin", _details(code, message, exc.reason, exc.metadata))
    ]
    trailers.extend((k, v) for k, v in exc.metadata.items())
    return RpcError(code, message, tuple(trailers))


def internal(ref: str) -> RpcError:
    """An unexpected failure: a generic message and a reference to the logged traceback."""
    message = f"internal error (ref={ref})"
    details = _details(grpc.StatusCode.INTERNAL, message, "INTERNAL", {"ref": ref})
    return RpcError(grpc.StatusCode.INTERNAL, message, (("grpc-status-details-bin", details),))


def deadline_exceeded(seconds: float) -> RpcError:
    """The server's own deadline ended a call that arrived without one."""
    message = f"deadline exceeded (server limit {seconds:g}s)"
    details = _details(grpc.StatusCode.DEADLINE_EXCEEDED, message, "DEADLINE_EXCEEDED", {})
    return RpcError(
        grpc.StatusCode.DEADLINE_EXCEEDED, message, (("grpc-status-details-bin", details),)
    )
