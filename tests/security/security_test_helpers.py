"""Helpers shared by the sso.security tests (tokens crafted by hand, fixed clock)."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime
from typing import Any

import jwt

from sso.security import keys

ISSUER = "https://sso.example.test"
AUDIENCE = "app-1"
NOW = datetime(2025, 6, 1, 12, 0, 0, tzinfo=UTC)


def b64url(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def b64json(obj: Any) -> str:
    return b64url(json.dumps(obj, separators=(",", ":")).encode())


def base_claims(now: datetime = NOW, **overrides: Any) -> dict[str, Any]:
    t = int(now.timestamp())
    claims: dict[str, Any] = {
        "iss": ISSUER,
        "sub": "42",
        "aud": AUDIENCE,
        "iat": t,
        "nbf": t,
        "exp": t + 300,
        "jti": "j-1",
    }
    claims.update(overrides)
    return {k: v for k, v in claims.items() if v is not None}


def sign(key: keys.SigningKey, claims: dict[str, Any], **header: Any) -> str:
    """A correctly signed token with any header (None values drop a field)."""
    headers = {"kid": key.kid, "typ": "at+jwt", **header}
    headers = {k: v for k, v in headers.items() if v is not None}
    return jwt.encode(claims, key.private_key, algorithm=key.alg, headers=headers)
