"""The domain's exception tree, drawn once.

Every failure the service can report is one of these classes; each carries a
machine-readable `reason` (sent to clients as `google.rpc.ErrorInfo.reason`) and
a message that is safe to show (it never contains a password, a token, a hash or
a SQL fragment). Lower layers (SQLAlchemy, asyncpg, redis, PyJWT) translate
their own errors into these in exactly one place each; `sso.api.errors` maps
these to gRPC status codes in one table. Nothing here imports grpc or a driver.
"""

from __future__ import annotations


class SSOError(Exception):
    """Base of every error the service reports on purpose."""

    reason: str = "INTERNAL"
    default_message: str = "internal error"

    def __init__(
        self,
        message: str | None = None,
        *,
        reason: str | None = None,
        metadata: dict[str, str] | None = None,
    ) -> None:
        self.message = message or self.default_message
        if reason is not None:
            self.reason = reason
        self.metadata: dict[str, str] = dict(metadata or {})
        super().__init__(self.message)


class InvalidArgument(SSOError):
    """Raised when a request field is missing, malformed or out of bounds."""

    reason = "INVALID_ARGUMENT"
    default_message = "invalid argument"


class WeakPassword(InvalidArgument):
    """Raised when a new password fails the password policy."""

    reason = "WEAK_PASSWORD"
    default_message = "password does not meet the policy"


class Unauthenticated(SSOError):
    """Raised when credentials are wrong or missing (one message for every cause)."""

    reason = "INVALID_CREDENTIALS"
    default_message = "invalid email or password"


class TokenError(Unauthenticated):
    """Raised when a token is malformed, forged, expired, revoked or reused."""

    reason = "TOKEN_INVALID"
    default_message = "invalid token"


class TokenExpired(TokenError):
    """Raised when a token was valid once but its lifetime is over."""

    reason = "TOKEN_EXPIRED"
    default_message = "token expired"


class TokenRevoked(TokenError):
    """Raised when the token's session was revoked."""

    reason = "TOKEN_REVOKED"
    default_message = "token revoked"


class TokenReused(TokenError):
    """Raised when a spent refresh token is presented again (its family is revoked)."""

    reason = "TOKEN_REUSED"
    default_message = "refresh token already used; session revoked"


class PermissionDenied(SSOError):
    """Raised when the caller is authenticated but not allowed to do this."""

    reason = "PERMISSION_DENIED"
    default_message = "permission denied"


class NotFound(SSOError):
    """Raised when the thing asked for does not exist (or is not the caller's)."""

    reason = "NOT_FOUND"
    default_message = "not found"


class AlreadyExists(SSOError):
    """Raised when a unique thing (an email, an app name) is taken."""

    reason = "ALREADY_EXISTS"
    default_message = "already exists"


class RateLimited(SSOError):
    """Raised when a caller is throttled; `retry_after` seconds go in trailing metadata."""

    reason = "RATE_LIMITED"
    default_message = "too many requests"

    def __init__(self, message: str | None = None, *, retry_after: float = 1.0) -> None:
        super().__init__(message, metadata={"retry-after": str(max(1, round(retry_after)))})
        self.retry_after = retry_after


class AppRateLimited(RateLimited):
    """Raised when an app's own login rate limit (Admin API setting) is exhausted."""

    reason = "APP_RATE_LIMITED"
    default_message = "too many logins for this app"


class Overloaded(RateLimited):
    """Raised when a bounded internal queue (password hashing) is full."""

    reason = "OVERLOADED"
    default_message = "server busy, retry later"


class FailedPrecondition(SSOError):
    """Raised when the account's state forbids the operation (locked, unverified)."""

    reason = "FAILED_PRECONDITION"
    default_message = "failed precondition"


class MfaRequired(FailedPrecondition):
    """Raised when a login path that cannot carry a second factor meets an account with one."""

    reason = "MFA_REQUIRED"
    default_message = (
        "two-factor authentication is enabled for this account: log in with sso.v1.Auth/Login"
    )


class Conflict(SSOError):
    """Raised when the call lost a race with a concurrent one; retrying may succeed."""

    reason = "CONFLICT"
    default_message = "concurrent modification, retry"


class Unavailable(SSOError):
    """Raised when a backing store (database, Redis) is down or timed out."""

    reason = "BACKEND_UNAVAILABLE"
    default_message = "service temporarily unavailable"
