"""The seed service's token, kept byte-compatible for existing `auth.Auth` clients.

Why this module exists: the service we grew from answered `Login` with an HS256
JWT signed with the calling app's secret and carrying exactly `uid` (int),
`email`, `exp` (int) and `app_id` (int) (DESIGN §2, Wire API). Its clients, Go
programs among them, verify it with that secret, so this token keeps that
shape: header `{"alg":"HS256","typ":"JWT"}`, claims in the order Go's
encoding/json writes a map (sorted keys), no other claim. Verification pins
HS256 and requires `exp`.

PyJWT warns (`InsecureKeyLengthWarning`) about app secrets shorter than 32
bytes; secrets this service generates are longer, imported ones may not be.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import jwt

from sso.errors import TokenError, TokenExpired

__all__ = ["LEGACY_ALGORITHM", "LegacyClaims", "issue_legacy", "peek_legacy", "verify_legacy"]

LEGACY_ALGORITHM = "HS256"
_CLAIMS = ("app_id", "email", "exp", "uid")
_MAX_TOKEN_CHARS = 8192


@dataclass(frozen=True)
class LegacyClaims:
    uid: int
    email: str
    exp: int
    app_id: int


def _key(secret: str | bytes) -> bytes:
    key = secret.encode("utf-8") if isinstance(secret, str) else bytes(secret)
    if not key:
        raise ValueError("an app secret must not be empty")
    return key


def _int_claim(value: object) -> int:
    # encoding/json in Go decodes numbers as float64: accept 7.0, refuse 7.5 and bools.
    if isinstance(value, bool):
        raise TokenError()
    if isinstance(value, float) and math.isfinite(value) and value.is_integer():
        return int(value)
    if isinstance(value, int):
        return value
    raise TokenError()


def issue_legacy(
    user_id: int,
    email: str,
    app_id: int,
    secret: str | bytes,
    ttl: timedelta,
    now: datetime,
) -> str:
    """The seed's Login token: HS256(app secret) over {app_id, email, exp, uid}."""
    if now.tzinfo is None:
        now = now.replace(tzinfo=UTC)
    payload = {
        "app_id": int(app_id),
        "email": email,
        "exp": int((now + ttl).timestamp()),
        "uid": int(user_id),
    }
    return jwt.encode(payload, _key(secret), algorithm=LEGACY_ALGORITHM)


def verify_legacy(token: str, secret: str | bytes, *, now: datetime | None = None) -> LegacyClaims:
    """Check signature (HS256 only) and expiry; `TokenExpired` / `TokenError` otherwise."""
    if not isinstance(token, str) or not 0 < len(token) <= _MAX_TOKEN_CHARS:
        raise TokenError()
    current = (now or datetime.now(UTC)).timestamp()
    try:
        payload = jwt.decode(
            token,
            _key(secret),
            algorithms=[LEGACY_ALGORITHM],
            options={"require": ["exp"], "verify_exp": False},
        )
    except (jwt.PyJWTError, ValueError, TypeError, RecursionError):
        raise TokenError() from None
    if not all(name in payload for name in _CLAIMS) or not isinstance(payload["email"], str):
        raise TokenError()
    claims = LegacyClaims(
        uid=_int_claim(payload["uid"]),
        email=payload["email"],
        exp=_int_claim(payload["exp"]),
        app_id=_int_claim(payload["app_id"]),
    )
    if claims.exp <= current:
        raise TokenExpired()
    return claims


def peek_legacy(token: str) -> dict[str, object]:
    """Unverified claims, used only to pick the app whose secret then verifies the token.

    Never trust what this returns: it is {} for anything malformed.
    """
    if not isinstance(token, str) or not 0 < len(token) <= _MAX_TOKEN_CHARS:
        return {}
    try:
        payload = jwt.decode(token, options={"verify_signature": False})
    except (jwt.PyJWTError, ValueError, TypeError, RecursionError):
        return {}
    return payload if isinstance(payload, dict) else {}
