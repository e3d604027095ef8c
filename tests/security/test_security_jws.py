"""sso.security.jws: interoperable with PyJWT both ways, strict about signature shape."""

from __future__ import annotations

from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from sso.security import jws
from sso.security.keyset import generate_key

ALGS: tuple[jws.Algorithm, ...] = ("RS256", "ES256", "EdDSA")
PAYLOAD: dict[str, Any] = {"sub": "42", "aud": "7", "n": 1, "s": "ünï", "l": [1, 2]}


@pytest.fixture(scope="module", params=ALGS)
def keypair(request: pytest.FixtureRequest) -> tuple[jws.Algorithm, jws.PrivateKey]:
    alg: jws.Algorithm = request.param
    return alg, generate_key(alg)


def test_ours_verifies_with_pyjwt_and_back(keypair: tuple[jws.Algorithm, Any]) -> None:
    alg, key = keypair
    ours = jws.sign(PAYLOAD, {"kid": "k1", "typ": "at+jwt"}, key, alg)
    decoded = jwt.decode_complete(ours, key.public_key(), algorithms=[alg], audience="7")
    assert decoded["payload"] == PAYLOAD
    assert decoded["header"] == {"alg": alg, "kid": "k1", "typ": "at+jwt"}
    theirs = jwt.encode(PAYLOAD, key, algorithm=alg, headers={"kid": "k1"})
    assert jws.verify(theirs, key.public_key(), alg) == PAYLOAD


def test_tampering_anywhere_is_refused(keypair: tuple[jws.Algorithm, Any]) -> None:
    alg, key = keypair
    token = jws.sign(PAYLOAD, {"kid": "k1"}, key, alg)
    head, body, sig = token.split(".")
    other_body = jws.b64url_encode(b'{"sub":"1","aud":"7"}')
    flipped = sig[:-2] + ("A" if sig[-2] != "A" else "B") + sig[-1]
    other_head = jws.b64url_encode(b'{"alg":"none","kid":"k1"}')
    for bad in (
        f"{head}.{other_body}.{sig}",
        f"{head}.{body}.{flipped}",
        f"{other_head}.{body}.{sig}",
        f"{head}.{body}.",
        f"{head}.{body}",
        f"{head}.{body}.{sig}.x",
        f"{head}.{body}.{sig}==",
    ):
        with pytest.raises(jws.JwsError):
            jws.verify(bad, key.public_key(), alg)


def test_a_key_of_another_type_is_refused(keypair: tuple[jws.Algorithm, Any]) -> None:
    alg, key = keypair
    token = jws.sign(PAYLOAD, {}, key, alg)
    for other in ALGS:
        if other != alg:
            with pytest.raises(jws.JwsError):
                jws.verify(token, generate_key(other).public_key(), alg)
            with pytest.raises(jws.JwsError):
                jws.verify(token, key.public_key(), other)


def test_es256_accepts_only_raw_r_s_not_der() -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    token = jws.sign(PAYLOAD, {}, key, "ES256")
    head, body, _ = token.split(".")
    der = key.sign(f"{head}.{body}".encode(), ec.ECDSA(jws.hashes.SHA256()))
    with pytest.raises(jws.JwsError):
        jws.verify(f"{head}.{body}.{jws.b64url_encode(der)}", key.public_key(), "ES256")
    p384 = ec.generate_private_key(ec.SECP384R1())
    with pytest.raises(jws.JwsError):
        jws.verify(token, p384.public_key(), "ES256")


def test_payload_must_be_a_json_object() -> None:
    key = ed25519.Ed25519PrivateKey.generate()
    for body in (b"[1,2]", b"not json", b"\xff\xfe"):
        head = jws.b64url_encode(b'{"alg":"EdDSA"}')
        seg = jws.b64url_encode(body)
        sig = jws.b64url_encode(key.sign(f"{head}.{seg}".encode()))
        with pytest.raises(jws.JwsError):
            jws.verify(f"{head}.{seg}.{sig}", key.public_key(), "EdDSA")


def test_rsa_signature_length_is_exact() -> None:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    token = jws.sign(PAYLOAD, {}, key, "RS256")
    head, body, sig = token.split(".")
    raw = jws.b64url_decode(sig)
    for wrong in (raw[:-1], b"\x00" + raw):
        with pytest.raises(jws.JwsError):
            jws.verify(f"{head}.{body}.{jws.b64url_encode(wrong)}", key.public_key(), "RS256")


def test_signing_with_a_mismatched_key_is_a_programming_error() -> None:
    with pytest.raises(ValueError, match="does not sign"):
        jws.sign(PAYLOAD, {}, ed25519.Ed25519PrivateKey.generate(), "RS256")
