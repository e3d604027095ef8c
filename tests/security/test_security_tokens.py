"""JwtAccessTokens: round trips per algorithm, the F2 claims matrix, F3 header abuse."""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from jwt.algorithms import RSAAlgorithm
from security_test_helpers import AUDIENCE, ISSUER, NOW, b64json, b64url, base_claims, sign

from sso.errors import TokenError, TokenExpired
from sso.security import keys
from sso.security.keys import KeyRing
from sso.security.opaque import new_refresh_token
from sso.security.tokens import JwtAccessTokens

T = int(NOW.timestamp())


@pytest.fixture(scope="module")
def tokens(multi_ring: KeyRing) -> JwtAccessTokens:
    return JwtAccessTokens(multi_ring, ISSUER, leeway=timedelta(seconds=60))


@pytest.fixture(scope="module")
def attacker_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def verify(tokens: JwtAccessTokens, token: str, audience: str | None = AUDIENCE) -> dict[str, Any]:
    return tokens.verify(token, audience=audience, now=NOW)


@pytest.mark.parametrize("alg", ["RS256", "ES256", "EdDSA"])
def test_each_algorithm_round_trips(tmp_path: Path, alg: keys.Algorithm) -> None:
    keys.ensure(tmp_path, alg)
    ring = KeyRing.load(tmp_path)
    tokens = JwtAccessTokens(ring, ISSUER, leeway=30)
    claims = {"sub": "42", "aud": AUDIENCE, "sid": "s-1", "email": "a@b.c", "amr": ["pwd"]}
    token = tokens.issue(claims, ttl=timedelta(minutes=5), now=NOW)
    header = jwt.get_unverified_header(token)
    assert header == {"alg": alg, "kid": ring.active.kid, "typ": "at+jwt"}
    verified = tokens.verify(token, audience=AUDIENCE, now=NOW + timedelta(minutes=4))
    assert {k: verified[k] for k in claims} == claims
    assert verified["iss"] == ISSUER
    assert verified["iat"] == verified["nbf"] == T
    assert verified["exp"] == T + 300
    assert isinstance(verified["jti"], str) and len(verified["jti"]) >= 22
    again = tokens.verify(token, audience=None, now=NOW)  # aud present, not checked
    assert again["sub"] == "42"
    # A relying app with only the JWKS and a standard library accepts it too.
    (jwk,) = [k for k in tokens.jwks()["keys"] if k["kid"] == header["kid"]]
    public = jwt.PyJWK(jwk)
    relying = jwt.decode(
        token,
        public,
        algorithms=[alg],
        audience=AUDIENCE,
        issuer=ISSUER,
        options={"verify_exp": False, "verify_iat": False, "verify_nbf": False},
    )
    assert relying["sub"] == "42"


def test_jti_unique_and_registered_claims_win(tokens: JwtAccessTokens) -> None:
    forged = {"sub": "1", "aud": AUDIENCE, "iss": "evil", "exp": 2**40, "jti": "mine"}
    issued = [tokens.issue(forged, ttl=timedelta(minutes=5), now=NOW) for _ in range(50)]
    claims = [verify(tokens, t) for t in issued]
    assert len({c["jti"] for c in claims}) == 50
    assert all(c["iss"] == ISSUER and c["exp"] == T + 300 for c in claims)


def test_issue_refuses_claims_that_could_never_verify(tokens: JwtAccessTokens) -> None:
    for claims in (
        {"aud": AUDIENCE},
        {"sub": 42, "aud": AUDIENCE},
        {"sub": "1"},
        {"sub": "1", "aud": ""},
    ):
        with pytest.raises(ValueError, match="sub and an aud"):
            tokens.issue(claims, ttl=timedelta(minutes=5), now=NOW)


def test_leeway_is_bounded(multi_ring: KeyRing) -> None:
    with pytest.raises(ValueError, match="leeway"):
        JwtAccessTokens(multi_ring, ISSUER, leeway=timedelta(seconds=61))
    with pytest.raises(ValueError, match="leeway"):
        JwtAccessTokens(multi_ring, ISSUER, leeway=-1)


# ---------------------------------------------------------------- F2: claims matrix

ACCEPT = [
    ("exp now-59", {"exp": T - 59}),
    ("nbf now+59", {"nbf": T + 59}),
    ("iat now+59", {"iat": T + 59}),
    ("aud list with ours", {"aud": ["other", AUDIENCE]}),
]
REJECT = [
    ("nbf now+61", {"nbf": T + 61}),
    ("iat now+61", {"iat": T + 61}),
    ("wrong aud", {"aud": "app-2"}),
    ("aud list without ours", {"aud": ["app-2", "app-3"]}),
    ("aud prefix", {"aud": AUDIENCE + "0"}),
    ("missing aud", {"aud": None}),
    ("iss with trailing slash", {"iss": ISSUER + "/"}),
    ("iss other", {"iss": "https://evil.example"}),
    ("missing iss", {"iss": None}),
    ("missing exp", {"exp": None}),
    ("missing iat", {"iat": None}),
    ("missing nbf", {"nbf": None}),
    ("missing sub", {"sub": None}),
    ("missing jti", {"jti": None}),
    ("sub not a string", {"sub": 42}),
    ("jti not a string", {"jti": 7}),
    ("exp as string", {"exp": str(T + 300)}),
    ("exp as bool", {"exp": True}),
    ("exp NaN", {"exp": float("nan")}),
    ("exp infinite", {"exp": float("inf")}),
]


@pytest.mark.parametrize(("name", "overrides"), ACCEPT, ids=[c[0] for c in ACCEPT])
def test_claims_accepted(
    tokens: JwtAccessTokens, multi_ring: KeyRing, name: str, overrides: dict[str, Any]
) -> None:
    token = sign(multi_ring.active, base_claims(**overrides))
    assert verify(tokens, token)["sub"] == "42"


@pytest.mark.parametrize(("name", "overrides"), REJECT, ids=[c[0] for c in REJECT])
def test_claims_rejected(
    tokens: JwtAccessTokens, multi_ring: KeyRing, name: str, overrides: dict[str, Any]
) -> None:
    token = sign(multi_ring.active, base_claims(**overrides))
    with pytest.raises(TokenError) as caught:
        verify(tokens, token)
    assert type(caught.value) is TokenError
    assert caught.value.message == "invalid token"


def test_expired_is_its_own_error(tokens: JwtAccessTokens, multi_ring: KeyRing) -> None:
    for exp in (T - 61, T - 3600, -5):
        with pytest.raises(TokenExpired) as caught:
            verify(tokens, sign(multi_ring.active, base_claims(exp=exp)))
        assert caught.value.reason == "TOKEN_EXPIRED"
    issued = tokens.issue({"sub": "1", "aud": AUDIENCE}, ttl=timedelta(minutes=5), now=NOW)
    with pytest.raises(TokenExpired):
        tokens.verify(issued, audience=AUDIENCE, now=NOW + timedelta(minutes=6, seconds=1))
    # An expired *forgery* is just invalid: the signature is checked first.
    forged = sign(multi_ring.active, base_claims(exp=T - 61))[:-4] + "AAAA"
    with pytest.raises(TokenError) as caught_forged:
        verify(tokens, forged)
    assert type(caught_forged.value) is TokenError


def test_missing_aud_rejected_even_without_expected_audience(
    tokens: JwtAccessTokens, multi_ring: KeyRing
) -> None:
    for aud in (None, "", []):
        with pytest.raises(TokenError):
            verify(tokens, sign(multi_ring.active, base_claims(aud=aud)), audience=None)


@pytest.mark.parametrize("typ", ["JWT", "jwt", "rt+jwt", "id+jwt", "", None, 1])
def test_typ_other_than_at_jwt_rejected(
    tokens: JwtAccessTokens, multi_ring: KeyRing, typ: Any
) -> None:
    token = sign(multi_ring.active, base_claims(), typ=typ) if typ is not None else None
    if token is None:
        token = jwt.encode(
            base_claims(),
            multi_ring.active.private_key,
            algorithm=multi_ring.active.alg,
            headers={"kid": multi_ring.active.kid, "typ": None},
        )
        assert "typ" not in jwt.get_unverified_header(token)
    with pytest.raises(TokenError):
        verify(tokens, token)


@pytest.mark.parametrize("typ", ["at+jwt", "AT+JWT", "application/at+jwt"])
def test_typ_spellings_accepted(tokens: JwtAccessTokens, multi_ring: KeyRing, typ: str) -> None:
    assert verify(tokens, sign(multi_ring.active, base_claims(), typ=typ))["sub"] == "42"


def test_other_kinds_of_token_rejected(tokens: JwtAccessTokens, multi_ring: KeyRing) -> None:
    from sso.security.legacy import issue_legacy

    legacy = issue_legacy(1, "a@b.c", 1, "s" * 32, timedelta(hours=1), NOW)
    bad = [
        new_refresh_token(),
        legacy,
        "",
        "a.b",
        "a.b.c.d",
        "a.b.c.d.e",
        "!!!.???.***",
        "eyJhbGciOiJFUzI1NiJ9.e30",
        sign(multi_ring.active, base_claims()) + "x" * 9000,
    ]
    for token in bad:
        with pytest.raises(TokenError):
            verify(tokens, token)
    with pytest.raises(TokenError):
        tokens.verify(b"abc", audience=AUDIENCE)  # type: ignore[arg-type]


def test_deeply_nested_json_is_just_invalid(tokens: JwtAccessTokens, multi_ring: KeyRing) -> None:
    deep = b64url(b"[" * 5000)
    good = sign(multi_ring.active, base_claims())
    head, payload, sig = good.split(".")
    for token in (f"{deep}.{payload}.{sig}", f"{head}.{deep}.{sig}"):
        assert len(token) <= 8192
        with pytest.raises(TokenError):
            verify(tokens, token)


# ---------------------------------------------------------------- F3: keys in the header


@pytest.fixture
def listener() -> Iterator[tuple[str, list[object]]]:
    """A real TCP listener standing in for an attacker's jku/x5u host."""
    server = socket.create_server(("127.0.0.1", 0))
    server.settimeout(0.2)
    hits: list[object] = []
    stop = threading.Event()

    def accept() -> None:
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            hits.append(conn)
            conn.close()

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.getsockname()[1]}/jwks.json", hits
    stop.set()
    thread.join(timeout=2)
    server.close()


def test_embedded_and_remote_keys_refused(
    tokens: JwtAccessTokens,
    multi_ring: KeyRing,
    attacker_key: rsa.RSAPrivateKey,
    listener: tuple[str, list[object]],
) -> None:
    url, hits = listener
    ours = multi_ring.active
    rs_kid = next(k.kid for k in multi_ring.keyset.keys if k.alg == "RS256")
    attacker_jwk = json.loads(RSAAlgorithm.to_jwk(attacker_key.public_key()))
    claims = base_claims()

    def attacker(**header: Any) -> str:
        return jwt.encode(claims, attacker_key, algorithm="RS256", headers=header)

    forged = [
        attacker(typ="at+jwt", jwk=attacker_jwk),
        attacker(typ="at+jwt", jwk=attacker_jwk, kid=rs_kid),
        attacker(typ="at+jwt", jku=url, kid="attacker"),
        attacker(typ="at+jwt", jku=url, kid=rs_kid),
        attacker(typ="at+jwt", x5u=url, kid=rs_kid),
        attacker(typ="at+jwt", x5c=["MIIB"], kid=rs_kid),
        # Even our own signature is refused when the header carries such parameters.
        sign(ours, claims, jku=url),
        sign(ours, claims, jwk=attacker_jwk),
        sign(ours, claims, x5u=url),
        sign(ours, claims, crit=["exp"], exp=1),
        sign(ours, claims, cty="JWT"),
    ]
    for token in forged:
        with pytest.raises(TokenError):
            verify(tokens, token)
    assert hits == []  # nothing was fetched


@pytest.mark.parametrize(
    "kid",
    ["../../dev/null", "/etc/passwd", "' OR 1=1--", "x" * 10_240, "", 7, None, ["a"], {"k": 1}],
    ids=["traversal", "absolute", "sql", "10kB", "empty", "int", "null", "list", "object"],
)
def test_hostile_kid_is_just_invalid(
    tokens: JwtAccessTokens, multi_ring: KeyRing, kid: object
) -> None:
    header = {"alg": multi_ring.active.alg, "typ": "at+jwt", "kid": kid}
    token = f"{b64json(header)}.{b64json(base_claims())}.c2ln"
    with pytest.raises(TokenError) as caught:
        verify(tokens, token)
    assert type(caught.value) is TokenError


# -- the verified-token cache --------------------------------------------------


def _fresh(tmp_path: Path, *, cache_size: int = 64) -> tuple[KeyRing, JwtAccessTokens]:
    keys.ensure(tmp_path, "RS256")
    ring = KeyRing.load(tmp_path)
    return ring, JwtAccessTokens(ring, ISSUER, leeway=30, cache_size=cache_size)


def _issue(tokens: JwtAccessTokens, sub: str = "7") -> str:
    claims = {"sub": sub, "aud": AUDIENCE, "sid": f"s-{sub}", "email": "a@b.c", "amr": ["pwd"]}
    return tokens.issue(claims, ttl=timedelta(minutes=5), now=NOW)


def test_a_repeated_token_is_answered_from_the_cache_with_its_own_copy(tmp_path: Path) -> None:
    _, tokens = _fresh(tmp_path)
    token = _issue(tokens)
    first = verify(tokens, token)
    assert tokens.cache_hits == 0 and tokens.cached == 1
    first["sub"] = "changed by a caller"
    second = verify(tokens, token)
    assert tokens.cache_hits == 1
    assert second["sub"] == "7" and second == {**first, "sub": "7"}


def test_a_cached_token_still_expires_and_still_checks_the_audience(tmp_path: Path) -> None:
    _, tokens = _fresh(tmp_path)
    token = _issue(tokens)
    verify(tokens, token)
    with pytest.raises(TokenError):
        verify(tokens, token, audience="another-app")
    assert verify(tokens, token, audience=None)["sub"] == "7"
    with pytest.raises(TokenError):  # not yet valid: nbf is NOW, leeway 30 s
        tokens.verify(token, audience=AUDIENCE, now=NOW - timedelta(seconds=31))
    with pytest.raises(TokenExpired):
        tokens.verify(token, audience=AUDIENCE, now=NOW + timedelta(minutes=5, seconds=31))
    assert tokens.cache_hits == 4  # every one of those answers came from the cache
    assert tokens.cached == 0  # expired: dropped


def test_a_tampered_copy_of_a_cached_token_is_verified_and_refused(tmp_path: Path) -> None:
    _, tokens = _fresh(tmp_path)
    token = _issue(tokens)
    verify(tokens, token)
    head, body, sig = token.split(".")
    forged_body = b64json({**json.loads(jwt.utils.base64url_decode(body)), "sub": "1"})
    for forged in (f"{head}.{forged_body}.{sig}", f"{head}.{body}.{sig[:-4]}AAAA"):
        with pytest.raises(TokenError):
            verify(tokens, forged)
    assert tokens.cache_hits == 0 and tokens.cached == 1


def test_a_key_set_reload_sends_tokens_through_full_verification(tmp_path: Path) -> None:
    ring, tokens = _fresh(tmp_path)
    token = _issue(tokens)
    verify(tokens, token)
    keys.rotate(tmp_path, "RS256", retire_after=timedelta(minutes=10), now=NOW)
    assert ring.maybe_reload()
    assert verify(tokens, token)["sub"] == "7"  # the retired key still verifies it ...
    assert tokens.cache_hits == 0  # ... but not from the cache: the key object is new
    assert verify(tokens, token)["sub"] == "7"
    assert tokens.cache_hits == 1
    # Twenty minutes on, the next rotation drops the old key: its tokens fail at once.
    keys.rotate(
        tmp_path, "RS256", retire_after=timedelta(minutes=10), now=NOW + timedelta(minutes=20)
    )
    assert ring.maybe_reload()
    with pytest.raises(TokenError):
        verify(tokens, token)
    assert tokens.cache_hits == 1 and tokens.cached == 0


def test_the_cache_is_bounded_and_drops_the_oldest_first(tmp_path: Path) -> None:
    _, tokens = _fresh(tmp_path, cache_size=3)
    issued = [_issue(tokens, str(i)) for i in range(1, 6)]
    for token in issued:
        verify(tokens, token)
    assert tokens.cached == 3
    verify(tokens, issued[-1])
    assert tokens.cache_hits == 1
    verify(tokens, issued[0])  # dropped earlier: verified again, not a hit
    assert tokens.cache_hits == 1 and tokens.cached == 3


def test_a_cache_of_size_zero_verifies_every_call(tmp_path: Path) -> None:
    _, tokens = _fresh(tmp_path, cache_size=0)
    token = _issue(tokens)
    assert verify(tokens, token) == verify(tokens, token)
    assert tokens.cache_hits == 0 and tokens.cached == 0
