"""F1/F3 through the real gRPC surface: forged access tokens are UNAUTHENTICATED.

The unit-level corpus (`tests/security/test_security_forged_tokens.py`) is
rebuilt here against the running service's own key set (RS256, ES256 and
EdDSA keys) with live claims (its issuer, a real user, session and app), plus
header attacks the unit corpus does not carry: an embedded `jwk`, `jku`/`x5u`
pointing at an attacker server, `x5c`, and hostile `kid`s. Every token goes
through `sso.v1.Auth/ValidateToken` and the `sso.v1.Sessions` bearer path:
all UNAUTHENTICATED, no INTERNAL, and the attacker server sees no request.
Control: the same claims properly signed by each service key are accepted.
"""

from __future__ import annotations

import base64
import http.server
import json
import threading
from collections.abc import AsyncIterator, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import grpc
import jwt
import observability_support as support
import pytest
import test_security_forged_tokens as forged
from cryptography.hazmat.primitives.asymmetric import rsa
from observability_support import Running, client_texts, make_settings, start, stop
from security_test_helpers import b64json, sign

from sso.security import keys as keyset
from sso_proto.sso.v1 import auth_pb2, auth_pb2_grpc, sessions_pb2, sessions_pb2_grpc

# Fixtures shared by the observability tests (bound here so pytest finds them).
obs_backend, captured = support.obs_backend, support.captured
STRONG = "correct horse battery staple"
# gRPC refuses metadata between its 8 KiB soft and 16 KiB hard limit at random:
# tokens longer than this are sent to ValidateToken only.
MAX_BEARER = 7000


@pytest.fixture
def attacker() -> Iterator[list[str]]:
    """An HTTP server on loopback that records every request (jku/x5u targets)."""
    hits: list[str] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            hits.append(self.path)
            self.send_response(200)
            self.end_headers()
            self.wfile.write(b'{"keys": []}')

        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    hits.append(f"http://127.0.0.1:{server.server_address[1]}")
    yield hits
    server.shutdown()
    server.server_close()


@pytest.fixture
async def multi_key_server(
    tmp_path: Path, obs_backend: tuple[str, str | None]
) -> AsyncIterator[Running]:
    """The service with RS256, ES256 and EdDSA keys in its set (every algorithm)."""
    directory = tmp_path / "keys"
    keyset.ensure(directory, "RS256")
    keyset.add_next(directory, "ES256")
    keyset.rotate(directory, "EdDSA", retire_after=timedelta(days=30))
    running = await start(make_settings(tmp_path, *obs_backend))
    yield running
    await stop(running)


async def live_claims(running: Running) -> dict[str, Any]:
    """Claims of a real login, so only the signature or header can be at fault."""
    stub = auth_pb2_grpc.AuthStub(running.channel)
    await stub.Register(auth_pb2.RegisterRequest(email="victim@example.com", password=STRONG))
    login = auth_pb2.LoginRequest(
        email="victim@example.com", password=STRONG, app_id=running.app.id
    )
    access = (await stub.Login(login)).tokens.access_token
    return dict(jwt.decode(access, options={"verify_signature": False}))


def header_attacks(
    ring: keyset.KeyRing, claims: dict[str, Any], attacker_url: str
) -> dict[str, str]:
    rs = forged.by_alg(ring, "RS256")
    evil = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    evil_jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(evil.public_key()))
    cert = base64.b64encode(b"0\x82\x01\x00not-a-real-certificate").decode()

    def evil_token(**header: Any) -> str:
        return jwt.encode(claims, evil, algorithm="RS256", headers={"typ": "at+jwt", **header})

    cases = {
        "embedded jwk, attacker key, no kid": evil_token(jwk=evil_jwk),
        "embedded jwk, attacker key, our kid": evil_token(jwk=evil_jwk, kid=rs.kid),
        "jku to attacker server": evil_token(jku=f"{attacker_url}/jwks.json", kid="evil-1"),
        "jku to attacker server, our kid": evil_token(jku=f"{attacker_url}/jwks.json", kid=rs.kid),
        "x5u to attacker server": evil_token(x5u=f"{attacker_url}/cert.pem", kid="evil-2"),
        "x5c with attacker chain": evil_token(x5c=[cert], kid="evil-3"),
    }
    for name, kid in {
        "path traversal": "../../../../dev/null",
        "SQL": "' OR 1=1--",
        "NUL and newline": "k\x00\n1",
        "4 kB": "k" * 4000,
        "10 kB": "k" * 10_000,
    }.items():
        # Signed by our own key: only the kid is wrong, so nothing but the lookup decides.
        cases[f"hostile kid ({name}), our signature"] = sign(rs, claims, kid=kid)
    deep = base64.urlsafe_b64encode(b"[" * 5500).decode().rstrip("=")
    cases["payload nested past the recursion limit"] = f"{b64json({'alg': 'none'})}.{deep}.x"
    head = b64json({"alg": "RS256", "typ": "at+jwt", "kid": {"$ne": None}})
    cases["kid as a JSON object"] = f"{head}.{sign(rs, claims).split('.', 1)[1]}"
    return cases


async def test_forged_tokens_are_unauthenticated_at_the_api(
    multi_key_server: Running, attacker: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    running = multi_key_server
    attacker_url = attacker.pop(0)
    claims = await live_claims(running)
    ring = running.container.keyring
    auth = auth_pb2_grpc.AuthStub(running.channel)
    sessions = sessions_pb2_grpc.SessionsStub(running.channel)

    async def outcomes(token: str) -> list[tuple[str, grpc.StatusCode]]:
        found = []
        _, _, code = await client_texts(
            auth.ValidateToken(auth_pb2.ValidateTokenRequest(token=token))
        )
        found.append(("ValidateToken", code))
        if len(token) <= MAX_BEARER:
            metadata = (("authorization", f"Bearer {token}"),)
            _, _, code = await client_texts(
                sessions.ListSessions(sessions_pb2.ListSessionsRequest(), metadata=metadata)
            )
            found.append(("ListSessions", code))
        return found

    # Control: the live claims, correctly signed by each key of the set, are accepted.
    for key in ring.keyset.keys:
        assert await outcomes(sign(key, claims)) == [
            ("ValidateToken", grpc.StatusCode.OK),
            ("ListSessions", grpc.StatusCode.OK),
        ], key.alg

    # The unit corpus, with its claims replaced by the live ones.
    monkeypatch.setattr(forged, "base_claims", lambda *a, **k: dict(claims))
    corpus = {**forged.corpus(ring), **header_attacks(ring, claims, attacker_url)}
    assert len(corpus) >= 12
    accepted, not_unauthenticated, via_bearer = [], [], 0
    for name, token in corpus.items():
        for path, code in await outcomes(token):
            via_bearer += path == "ListSessions"
            if code == grpc.StatusCode.OK:
                accepted.append((name, path))
            elif code != grpc.StatusCode.UNAUTHENTICATED:
                not_unauthenticated.append((name, path, code.name))
    print(
        f"\nforged corpus: {len(corpus)} tokens, {len(corpus) + via_bearer} calls "
        f"(ValidateToken + {via_bearer} bearer), attacker requests: {len(attacker)}"
    )
    assert accepted == []
    assert not_unauthenticated == []
    assert attacker == []  # no outbound request to jku / x5u
