"""e2e/relying_app.JwksKeys against the real service's JWKS over HTTP.

The relying app's key lookup (PyJWKClient behind a kid dict) must verify our
tokens, fetch the JWK Set once for a known kid, refuse a kid the service does
not publish, and stop trusting a remembered key after its lifespan.
"""

from __future__ import annotations

import asyncio
import time

import jwt
import pytest
from sso_harness import Running

from e2e.relying_app import JwksKeys
from sso_proto.sso.v1 import auth_pb2, auth_pb2_grpc

PASSWORD = "correct horse battery staple 42"


class CountingClient(jwt.PyJWKClient):
    fetches = 0

    def fetch_data(self) -> object:
        self.fetches += 1
        return super().fetch_data()


@pytest.fixture
def backend(sqlite_url: str) -> tuple[str, None]:  # SQLite is enough: this is about HTTP JWKS
    return (sqlite_url, None)


async def test_keys_are_looked_up_once_and_expire(sso_server: Running) -> None:
    stub = auth_pb2_grpc.AuthStub(sso_server.channel)
    await stub.Register(auth_pb2.RegisterRequest(email="rp@example.com", password=PASSWORD))
    login = await stub.Login(
        auth_pb2.LoginRequest(email="rp@example.com", password=PASSWORD, app_id=sso_server.app.id)
    )
    token = login.tokens.access_token
    url = f"http://127.0.0.1:{sso_server.server.http_port}/.well-known/jwks.json"
    client = CountingClient(url, cache_jwk_set=False)  # every lookup would be a fetch
    # The keys' own clock: patching time.monotonic would move the event loop's clock too.
    offset = [0.0]
    keys = JwksKeys(client, lifespan=60, clock=lambda: time.monotonic() + offset[0])

    # PyJWKClient fetches with blocking urllib; the service runs on this event loop.
    for _ in range(50):
        key = await asyncio.to_thread(keys.key_for, token)
        claims = jwt.decode(
            token, key.key, algorithms=[key.algorithm_name], audience=str(sso_server.app.id)
        )
        assert claims["sub"]
    assert client.fetches == 1

    forged_kid = jwt.encode({"sub": "1"}, "x" * 32, algorithm="HS256", headers={"kid": "nope"})
    with pytest.raises(jwt.PyJWKClientError):
        await asyncio.to_thread(keys.key_for, forged_kid)
    assert client.fetches > 1  # an unknown kid is asked for (PyJWKClient refetches), not kept
    fetched = client.fetches

    # After the lifespan the key is fetched again (a withdrawn key stops being trusted).
    offset[0] = 61
    await asyncio.to_thread(keys.key_for, token)
    assert client.fetches == fetched + 1
