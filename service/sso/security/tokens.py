"""Access tokens: JWTs signed with the key ring's active key, verified strictly.

Why this module exists: the access token is what every relying app trusts, so
its verifier is where the JWT attack classes (RFC 8725, checklist F1-F3) are
closed, in one place:

- the key is found by `kid` with a bounded dict lookup (the kid is attacker
  input: never a path, a query or a URL), and each key verifies with exactly
  its own algorithm (`algorithms=[key.alg]`), so `none`, HS256-with-our-public-
  key and RS/PS or ES swaps all fail;
- only the header parameters we write (`alg`, `kid`, `typ`) are accepted:
  `jwk`, `jku`, `x5u`, `x5c`, `crit`, `b64` ... are refused, nothing is fetched;
- `typ` must be `at+jwt` (RFC 9068), so no other kind of JWT passes as one;
- `exp iat nbf sub aud iss jti` are required, `iss` must match exactly, `aud`
  must contain the expected audience (or at least be present), and the clock
  leeway is at most 60 s.

Signatures are made and checked by `sso.security.jws` directly on
`cryptography` (PyJWT's `decode_complete` costs ~2x a bare `jws.verify`: ~48
vs ~22 us for RS256 in `python -m bench.jws`); every exception on the way is
translated in `_translate` into `TokenExpired` or `TokenError` with the generic
message of `sso.errors`; no token content ever reaches a message.

A relying app sends the same access token with each of its requests for the
token's few minutes of life, so tokens that passed every check are remembered
(`cache_size`, which the service sets from `tokens.verified_cache_size`; a
bounded dict, oldest out first; the same idea as Envoy's jwt_authn cache):
a repeat skips parsing and the signature but not what can change between
calls. The caller's audience and the clock are checked on every call, and the
entry is used only while the key ring still holds the very key object that
verified it, so a key-set reload (rotation, a key removed) sends every token
through full verification again. Only valid tokens are stored, so garbage
cannot fill the cache; the revocation denylist is consulted by the caller
after this, on every call.
"""

from __future__ import annotations

import json
import logging
import math
import re
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

from sso.errors import TokenError, TokenExpired
from sso.security import jws
from sso.security.keys import KeyRing, SigningKey

__all__ = ["ACCESS_TOKEN_TYPE", "MAX_LEEWAY", "MAX_TOKEN_CHARS", "JwtAccessTokens"]

log = logging.getLogger(__name__)

ACCESS_TOKEN_TYPE = "at+jwt"  # noqa: S105 (a media type, not a secret)
_ACCEPTED_TYP = frozenset({"at+jwt", "application/at+jwt"})
_ALLOWED_HEADER = frozenset({"alg", "kid", "typ"})
REQUIRED_CLAIMS = ("exp", "iat", "nbf", "sub", "aud", "iss", "jti")
MAX_LEEWAY = timedelta(seconds=60)
# Compact JWS: three base64url segments, no padding (what we issue).
_COMPACT = re.compile(r"[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+")
# Far above any token we issue (~1 kB), far below the gRPC metadata limits.
MAX_TOKEN_CHARS = 8192


def _seconds(value: datetime) -> int:
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return int(value.timestamp())


def _numeric_date(payload: dict[str, Any], claim: str) -> float:
    value = payload.get(claim)
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise TokenError()
    return float(value)


def _peek_header(token: str) -> dict[str, Any]:
    """The unverified header, parsed once (PyJWT would parse the whole token twice)."""
    if not _COMPACT.fullmatch(token):
        raise TokenError()
    header = json.loads(jws.b64url_decode(token.split(".", 1)[0]))
    if not isinstance(header, dict):
        raise TokenError()
    return header


def _has_audience(aud: object, audience: str) -> bool:
    if isinstance(aud, str):
        return aud == audience
    return isinstance(aud, list) and audience in aud


def _valid_aud(aud: object) -> bool:
    if isinstance(aud, str):
        return bool(aud)
    return isinstance(aud, list) and bool(aud) and all(isinstance(a, str) and a for a in aud)


@contextmanager
def _translate() -> Iterator[None]:
    """The one place where the JWS layer's and the parsers' exceptions become ours."""
    try:
        yield
    except TokenError:
        raise
    except (ValueError, TypeError, KeyError, OverflowError, RecursionError) as exc:
        log.debug("access token rejected: %s", type(exc).__name__)
        raise TokenError() from None


class JwtAccessTokens:
    """The `AccessTokenIssuer` port on top of a `KeyRing`."""

    def __init__(
        self,
        keyring: KeyRing,
        issuer: str,
        leeway: timedelta | float = 30,
        *,
        cache_size: int = 0,
    ) -> None:
        if not isinstance(leeway, timedelta):
            leeway = timedelta(seconds=leeway)
        if not timedelta(0) <= leeway <= MAX_LEEWAY:
            raise ValueError("leeway must be between 0 and 60 seconds")
        if not issuer:
            raise ValueError("issuer must not be empty")
        self._keyring = keyring
        self._issuer = issuer
        self._leeway = leeway.total_seconds()
        # token -> (claims, key) of tokens that passed every check; see the module doc.
        self._verified: dict[str, tuple[dict[str, Any], SigningKey]] = {}
        self._cache_size = max(0, cache_size)  # 0 (the default): no cache
        self.cache_hits = 0

    @property
    def issuer(self) -> str:
        return self._issuer

    @property
    def cached(self) -> int:
        """How many verified tokens are remembered now (at most `cache_size`)."""
        return len(self._verified)

    def issue(self, claims: dict[str, Any], *, ttl: timedelta, now: datetime) -> str:
        """Sign `claims` plus iss, iat, nbf, exp and jti with the active key.

        `claims` must hold `sub` (a string) and `aud`: a token without them would
        never verify, so that is a programming error (`ValueError`), found here.
        """
        if not isinstance(claims.get("sub"), str) or not _valid_aud(claims.get("aud")):
            raise ValueError("access-token claims need a string sub and an aud")
        key = self._keyring.active
        issued_at = _seconds(now)
        payload = dict(claims)
        payload.update(
            iss=self._issuer,
            iat=issued_at,
            nbf=issued_at,
            exp=issued_at + int(ttl.total_seconds()),
            jti=secrets.token_urlsafe(16),
        )
        headers = {"kid": key.kid, "typ": ACCESS_TOKEN_TYPE}
        return jws.sign(payload, headers, key.private_key, key.alg)

    def verify(
        self, token: str, *, audience: str | None, now: datetime | None = None
    ) -> dict[str, Any]:
        """The verified claims; `TokenExpired` or `TokenError` otherwise."""
        if not isinstance(token, str) or not 0 < len(token) <= MAX_TOKEN_CHARS:
            raise TokenError()
        at = _seconds(now or datetime.now(UTC))
        hit = self._verified.get(token)
        if hit is not None:
            payload, key = hit
            if self._keyring.get(key.kid) is key:  # still in the ring, not reloaded away
                self.cache_hits += 1
                try:
                    self._current(payload, audience, at)
                except TokenExpired:
                    del self._verified[token]  # it will never be valid again
                    raise
                return dict(payload)
            del self._verified[token]
        with _translate():
            payload, key = self._verify(token, audience, at)
        if not self._cache_size:
            return payload
        if len(self._verified) >= self._cache_size:
            del self._verified[next(iter(self._verified))]  # the oldest entry
        self._verified[token] = (payload, key)
        return dict(payload)

    def jwks(self) -> dict[str, Any]:
        return self._keyring.jwks()

    def _verify(
        self, token: str, audience: str | None, now: int
    ) -> tuple[dict[str, Any], SigningKey]:
        header = _peek_header(token)
        if not _ALLOWED_HEADER.issuperset(header):
            raise TokenError()
        typ = header.get("typ")
        if not isinstance(typ, str) or typ.lower() not in _ACCEPTED_TYP:
            raise TokenError()
        key = self._keyring.get(header.get("kid"))
        if key is None or header.get("alg") != key.alg:
            raise TokenError()
        payload = jws.verify(token, key.public_key, key.alg)
        if any(claim not in payload for claim in REQUIRED_CLAIMS):
            raise TokenError()
        # Signature good; the audience and the clock (the issuer is compared below).
        self._current(payload, audience, now)
        if not isinstance(payload.get("sub"), str) or not isinstance(payload.get("jti"), str):
            raise TokenError()
        if payload.get("iss") != self._issuer or not _valid_aud(payload.get("aud")):
            raise TokenError()
        return payload, key

    def _current(self, payload: dict[str, Any], audience: str | None, now: int) -> None:
        """The per-call checks: the caller's audience, and the clock."""
        if audience is not None and not _has_audience(payload.get("aud"), audience):
            raise TokenError()
        leeway = self._leeway
        if _numeric_date(payload, "exp") <= now - leeway:
            raise TokenExpired()
        if _numeric_date(payload, "nbf") > now + leeway:
            raise TokenError()
        if _numeric_date(payload, "iat") > now + leeway:
            raise TokenError()
