"""F1: a corpus of forged access tokens; every one must be refused with TokenError.

Covers alg "none" in several spellings, HS256 signed with our public key in
every encoding (PyJWT CVE-2022-29217, python-jose CVE-2024-33663, Authlib
CVE-2024-37568), an empty HMAC key, RS256/PS256 swaps, ECDSA r = s = 0
("psychic signatures"), ES384 on a P-256 key, and algorithms that do not match
the key named by `kid`.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from datetime import timedelta

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa
from security_test_helpers import AUDIENCE, ISSUER, NOW, b64json, b64url, base_claims, sign

from sso.errors import TokenError
from sso.security.keys import KeyRing, SigningKey
from sso.security.tokens import JwtAccessTokens


def by_alg(ring: KeyRing, alg: str) -> SigningKey:
    return next(k for k in ring.keyset.keys if k.alg == alg)


def unsigned(header: dict[str, object], signature: bytes = b"", *, dot: bool = True) -> str:
    head = f"{b64json(header)}.{b64json(base_claims())}"
    return f"{head}.{b64url(signature)}" if dot else head


def hs256(kid: str, secret: bytes) -> str:
    head = f"{b64json({'alg': 'HS256', 'typ': 'at+jwt', 'kid': kid})}.{b64json(base_claims())}"
    mac = hmac.new(secret, head.encode(), hashlib.sha256).digest()
    return f"{head}.{b64url(mac)}"


def public_encodings(key: SigningKey) -> dict[str, bytes]:
    public = key.public_key
    enc, fmt = serialization.Encoding, serialization.PublicFormat
    forms = {
        "pem": public.public_bytes(enc.PEM, fmt.SubjectPublicKeyInfo),
        "der": public.public_bytes(enc.DER, fmt.SubjectPublicKeyInfo),
        "ssh": public.public_bytes(enc.OpenSSH, fmt.OpenSSH),
        "jwk-json": json.dumps(dict(key.jwk)).encode(),
    }
    if key.alg == "RS256":
        forms["pkcs1"] = public.public_bytes(enc.PEM, fmt.PKCS1)
        assert forms["pkcs1"].startswith(b"-----BEGIN RSA PUBLIC KEY-----")
    return forms


def corpus(ring: KeyRing) -> dict[str, str]:
    rs, es, ed = by_alg(ring, "RS256"), by_alg(ring, "ES256"), by_alg(ring, "EdDSA")
    claims = base_claims()
    attacker_rsa = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    attacker_ed = ed25519.Ed25519PrivateKey.generate()
    cases: dict[str, str] = {}
    for spelling in ("none", "None", "NONE", "nOnE"):
        cases[f"alg {spelling}, empty signature"] = unsigned(
            {"alg": spelling, "typ": "at+jwt", "kid": rs.kid}
        )
    cases["alg none, no trailing dot"] = unsigned(
        {"alg": "none", "typ": "at+jwt", "kid": es.kid}, dot=False
    )
    cases["alg none, no kid"] = unsigned({"alg": "none", "typ": "at+jwt"})
    for key in (rs, es, ed):
        for form, secret in public_encodings(key).items():
            cases[f"HS256 with {key.alg} public key as {form}"] = hs256(key.kid, secret)
    cases["HS256 with an empty key"] = hs256(rs.kid, b"")
    cases["HS256 with the kid as key"] = hs256(rs.kid, rs.kid.encode())
    # RS256 <-> PS256: a real PS256 signature by our RSA key, and a relabelled RS256 one.
    cases["PS256 signed by our RS256 key"] = jwt.encode(
        claims, rs.private_key, algorithm="PS256", headers={"kid": rs.kid, "typ": "at+jwt"}
    )
    head, payload, sig = sign(rs, claims).split(".")
    relabelled = b64json({"alg": "PS256", "kid": rs.kid, "typ": "at+jwt"})
    cases["RS256 signature relabelled PS256"] = f"{relabelled}.{payload}.{sig}"
    cases["ES256 r = s = 0"] = unsigned({"alg": "ES256", "typ": "at+jwt", "kid": es.kid}, bytes(64))
    cases["ES256 r = s = n (curve order)"] = unsigned(
        {"alg": "ES256", "typ": "at+jwt", "kid": es.kid},
        bytes.fromhex("FFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551" * 2),
    )
    cases["ES384 header on the P-256 key"] = unsigned(
        {"alg": "ES384", "typ": "at+jwt", "kid": es.kid}, bytes(96)
    )
    cases["ES256 signature on the RS256 kid"] = jwt.encode(
        claims, es.private_key, algorithm="ES256", headers={"kid": rs.kid, "typ": "at+jwt"}
    )
    cases["RS256 signature on the EdDSA kid"] = jwt.encode(
        claims, rs.private_key, algorithm="RS256", headers={"kid": ed.kid, "typ": "at+jwt"}
    )
    cases["attacker EdDSA on the RS256 kid"] = jwt.encode(
        claims, attacker_ed, algorithm="EdDSA", headers={"kid": rs.kid, "typ": "at+jwt"}
    )
    cases["attacker RS256 key with our kid"] = jwt.encode(
        claims, attacker_rsa, algorithm="RS256", headers={"kid": rs.kid, "typ": "at+jwt"}
    )
    cases["our header and payload, attacker signature"] = ".".join(
        [head, payload, cases["attacker RS256 key with our kid"].split(".")[2]]
    )
    cases["valid token, signature stripped"] = f"{head}.{payload}."
    cases["unknown kid"] = jwt.encode(
        claims, attacker_rsa, algorithm="RS256", headers={"kid": "k-unknown", "typ": "at+jwt"}
    )
    return cases


@pytest.fixture(scope="module")
def tokens(multi_ring: KeyRing) -> JwtAccessTokens:
    return JwtAccessTokens(multi_ring, ISSUER, leeway=timedelta(seconds=60))


def test_corpus_is_large_enough_and_controls_pass(
    multi_ring: KeyRing, tokens: JwtAccessTokens
) -> None:
    assert len(corpus(multi_ring)) >= 12
    # Control: the same claims correctly signed by each key are accepted.
    for key in multi_ring.keyset.keys:
        assert tokens.verify(sign(key, base_claims()), audience=AUDIENCE, now=NOW)["sub"] == "42"


def test_every_forged_token_is_rejected(multi_ring: KeyRing, tokens: JwtAccessTokens) -> None:
    accepted = []
    for name, token in corpus(multi_ring).items():
        try:
            tokens.verify(token, audience=AUDIENCE, now=NOW)
        except TokenError as exc:
            assert type(exc) is TokenError, name
            assert exc.message == "invalid token"
            assert token not in str(exc)
        else:
            accepted.append(name)
    assert accepted == []
