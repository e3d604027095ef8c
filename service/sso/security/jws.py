"""Compact JWS (RFC 7515) signing and verification straight on `cryptography`.

Why this module exists: every ValidateToken, Login and Refresh signs or checks
one JWT, and PyJWT spends more time around the signature than in it (it
parses the header twice, builds algorithm objects per call and re-validates
options). `python -m bench.jws --alg RS256 --seconds 1 --rounds 3` (medians,
interleaved in one process) gives ~22 us for an RS256 `verify()` here (21.4
and 22.0 us in two runs) against ~48 us for `jwt.decode_complete` (48.3 us in
both). This module does only the cryptographic part; every policy decision
(which key, which algorithm, which header parameters, which claims) stays in
`sso.security.tokens`, which calls it with a key already chosen by `kid` and
the one algorithm that key is allowed to use.

Strictness: the signature must have exactly the length the algorithm produces
(ES256 is the raw 64-byte `r || s` of RFC 7518 §3.4, never DER); base64url
segments must be unpadded and in the URL-safe alphabet (checked by the
caller's compact-form regex and again here). Errors are `ValueError`s without
token content; the caller translates them.
"""

from __future__ import annotations

import base64
import binascii
import json
from typing import Any, Literal

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import (
    decode_dss_signature,
    encode_dss_signature,
)

__all__ = ["JwsError", "b64url_decode", "b64url_encode", "sign", "verify"]

Algorithm = Literal["RS256", "ES256", "EdDSA"]
PrivateKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey
PublicKey = rsa.RSAPublicKey | ec.EllipticCurvePublicKey | ed25519.Ed25519PublicKey

_ES256_HALF = 32
_SHA256 = hashes.SHA256()
_PKCS1 = padding.PKCS1v15()
_ECDSA = ec.ECDSA(hashes.SHA256())


class JwsError(ValueError):
    """A malformed or wrongly signed JWS. Carries no token content."""


def b64url_encode(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64url_decode(segment: str) -> bytes:
    if "=" in segment:
        raise JwsError("padded segment")
    try:
        return base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))
    except (binascii.Error, ValueError):
        raise JwsError("bad base64url") from None


def _dumps(value: dict[str, Any], *, sort: bool) -> bytes:
    return json.dumps(value, separators=(",", ":"), sort_keys=sort).encode()


def sign(payload: dict[str, Any], header: dict[str, Any], key: PrivateKey, alg: Algorithm) -> str:
    """`header.payload.signature`; `header` gets `alg` (and keeps `kid`, `typ`)."""
    head = b64url_encode(_dumps({**header, "alg": alg}, sort=True))
    body = b64url_encode(_dumps(payload, sort=False))
    signing_input = f"{head}.{body}".encode("ascii")
    if alg == "RS256" and isinstance(key, rsa.RSAPrivateKey):
        signature = key.sign(signing_input, _PKCS1, _SHA256)
    elif alg == "ES256" and isinstance(key, ec.EllipticCurvePrivateKey):
        r, s = decode_dss_signature(key.sign(signing_input, _ECDSA))
        signature = r.to_bytes(_ES256_HALF, "big") + s.to_bytes(_ES256_HALF, "big")
    elif alg == "EdDSA" and isinstance(key, ed25519.Ed25519PrivateKey):
        signature = key.sign(signing_input)
    else:
        raise ValueError(f"key type {type(key).__name__} does not sign {alg}")
    return f"{head}.{body}.{b64url_encode(signature)}"


def _check(signature: bytes, data: bytes, key: PublicKey, alg: Algorithm) -> None:
    if alg == "RS256" and isinstance(key, rsa.RSAPublicKey):
        if len(signature) != key.key_size // 8:
            raise JwsError("signature length")
        key.verify(signature, data, _PKCS1, _SHA256)
    elif alg == "ES256" and isinstance(key, ec.EllipticCurvePublicKey):
        if len(signature) != 2 * _ES256_HALF or key.curve.name != "secp256r1":
            raise JwsError("signature length")
        r = int.from_bytes(signature[:_ES256_HALF], "big")
        s = int.from_bytes(signature[_ES256_HALF:], "big")
        key.verify(encode_dss_signature(r, s), data, _ECDSA)
    elif alg == "EdDSA" and isinstance(key, ed25519.Ed25519PublicKey):
        if len(signature) != 64:
            raise JwsError("signature length")
        key.verify(signature, data)
    else:
        raise JwsError("key does not fit the algorithm")


def verify(token: str, key: PublicKey, alg: Algorithm) -> dict[str, Any]:
    """The payload of `token` if `key` signed it with `alg`; `JwsError` otherwise.

    The caller has already parsed and vetted the header (`alg`, `kid`, `typ`)
    and chosen `key` by `kid`; the header segment is covered by the signature
    here, so it cannot differ from what the caller saw.
    """
    parts = token.split(".")
    if len(parts) != 3:
        raise JwsError("not a compact JWS")
    head, body, sig = parts
    try:
        _check(b64url_decode(sig), f"{head}.{body}".encode("ascii"), key, alg)
    except InvalidSignature:
        raise JwsError("bad signature") from None
    try:
        payload = json.loads(b64url_decode(body))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError):
        raise JwsError("payload is not JSON") from None
    if not isinstance(payload, dict):
        raise JwsError("payload is not an object")
    return payload
