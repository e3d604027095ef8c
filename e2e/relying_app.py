"""A small relying application: what a team's app does with a ClientApp's credentials Secret.

Why this exists: the end-to-end test of ClientApp must prove that the Secret
the operator writes is enough for an application to work, and this file is that
application. It reads only the Secret's keys (as environment variables, the way
a Pod gets them from ``envFrom: secretRef``), registers and logs users in
through ``SSO_ENDPOINT`` as a confidential client (its ``SSO_APP_ID`` and, in
``x-client-secret`` metadata, its ``SSO_CLIENT_SECRET``), and verifies access
tokens offline against ``SSO_JWKS_URI`` with PyJWT: signature, ``iss`` equal to
``SSO_ISSUER`` and ``aud`` equal to the app id. It uses the published gRPC stubs
(``sso_proto``) and nothing of the service.

Run it against any instance (the variables come from the Secret)::

    export $(kubectl get secret billing-sso-credentials -o json \\
      | jq -r '.data | to_entries[] | "\\(.key)=\\(.value | @base64d)"')
    python e2e/relying_app.py register alice@example.com 'correct horse battery staple'
    python e2e/relying_app.py login alice@example.com 'correct horse battery staple'
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import grpc
import jwt

from sso_proto.sso.v1 import auth_pb2, auth_pb2_grpc

DEADLINE_S = 10.0


@dataclass(frozen=True)
class Credentials:
    """The keys of a ClientApp's credentials Secret."""

    endpoint: str
    app_id: int
    client_secret: str
    issuer: str
    jwks_uri: str

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Credentials:
        """Read the ``SSO_*`` variables (or hydra-maester's ``CLIENT_ID``/``CLIENT_SECRET``)."""
        source = os.environ if env is None else env
        return cls(
            endpoint=source["SSO_ENDPOINT"],
            app_id=int(source.get("SSO_APP_ID") or source["CLIENT_ID"]),
            client_secret=source.get("SSO_CLIENT_SECRET") or source["CLIENT_SECRET"],
            issuer=source["SSO_ISSUER"],
            jwks_uri=source["SSO_JWKS_URI"],
        )


def _kid(token: str) -> str | None:
    """The header's ``kid``, read from the first segment only (``jwt.get_unverified_header``
    would decode the whole token once more, on every verification)."""
    segment = token.split(".", 1)[0]
    try:
        header = json.loads(base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4)))
    except ValueError:
        return None
    kid = header.get("kid") if isinstance(header, dict) else None
    return kid if isinstance(kid, str) else None


class JwksKeys:
    """Signing keys by ``kid``: PyJWKClient fetches the JWK Set, a small dict remembers keys.

    ``PyJWKClient.get_signing_key_from_jwt`` re-reads its cached set on every call
    (``python -m bench.suite``, bench/results/sweep.json of 27 November 18:31,
    relying-app ceiling: 11,673 verifications/s through it against 19,569/s for
    the raw RS256 decode, 18,609/s through this class), so a busy app keeps the
    keys it has seen. Entries expire after ``lifespan`` seconds (read from
    ``clock``), so a key the SSO stopped publishing (retired, or withdrawn after
    a compromise) stops being trusted within that bound; an unknown ``kid`` goes
    to PyJWKClient, which refetches.
    The dict is bounded: a ``kid`` is attacker input.
    """

    MAX_KEYS = 32

    def __init__(
        self,
        client: jwt.PyJWKClient,
        lifespan: float = 300.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._client = client
        self._lifespan = lifespan
        self._clock = clock
        self._keys: dict[str, tuple[float, jwt.PyJWK]] = {}

    def key_for(self, token: str) -> jwt.PyJWK:
        kid = _kid(token)
        if kid is None:
            raise jwt.InvalidTokenError("the token names no key")
        now = self._clock()
        known = self._keys.get(kid)
        if known is not None and known[0] > now:
            return known[1]
        key = self._client.get_signing_key(kid)  # raises for a kid the SSO does not publish
        if len(self._keys) >= self.MAX_KEYS:
            self._keys.clear()
        self._keys[kid] = (now + self._lifespan, key)
        return key


class LoginRefused(Exception):
    """The SSO refused a login (wrong password, or this app's credentials no longer work)."""

    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        super().__init__(f"{code.name}: {details}")
        self.code = code


class RelyingApp:
    """An application that signs its users in through the SSO and checks their tokens offline."""

    def __init__(self, credentials: Credentials) -> None:
        self.credentials = credentials
        self._channel = grpc.aio.insecure_channel(credentials.endpoint)
        self._auth = auth_pb2_grpc.AuthStub(self._channel)
        # PyJWKClient caches the key set and refetches it when a token names an unknown kid.
        self._jwks = JwksKeys(jwt.PyJWKClient(credentials.jwks_uri, lifespan=60), lifespan=60)

    async def close(self) -> None:
        await self._channel.close()

    async def __aenter__(self) -> RelyingApp:
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.close()

    async def register(self, email: str, password: str) -> int:
        """Create a user; returns its id."""
        response = await self._auth.Register(
            auth_pb2.RegisterRequest(email=email, password=password), timeout=DEADLINE_S
        )
        return int(response.user_id)

    async def login(self, email: str, password: str) -> str:
        """Log a user in to this app; returns the access token. Raises :class:`LoginRefused`."""
        try:
            response = await self._auth.Login(
                auth_pb2.LoginRequest(
                    email=email, password=password, app_id=self.credentials.app_id
                ),
                metadata=(("x-client-secret", self.credentials.client_secret),),
                timeout=DEADLINE_S,
            )
        except grpc.aio.AioRpcError as error:
            raise LoginRefused(error.code(), error.details() or "") from None
        if response.WhichOneof("result") != "tokens":
            raise LoginRefused(grpc.StatusCode.FAILED_PRECONDITION, "a second factor is required")
        return str(response.tokens.access_token)

    def verify(self, access_token: str) -> dict[str, Any]:
        """Check an access token offline: signature by a JWKS key, issuer, audience, expiry."""
        key = self._jwks.key_for(access_token)
        claims: dict[str, Any] = jwt.decode(
            access_token,
            key.key,
            algorithms=[key.algorithm_name],  # the key's own algorithm, nothing else
            issuer=self.credentials.issuer,
            audience=str(self.credentials.app_id),
            options={"require": ["exp", "iat", "sub", "aud", "iss"]},
        )
        return claims

    async def sign_in(self, email: str, password: str) -> dict[str, Any]:
        """Login, then verify the token as the app would before trusting it."""
        token = await self.login(email, password)
        return await asyncio.to_thread(self.verify, token)


async def _main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("command", choices=["register", "login"])
    parser.add_argument("email")
    parser.add_argument("password")
    args = parser.parse_args(argv)
    async with RelyingApp(Credentials.from_env()) as app:
        if args.command == "register":
            print(json.dumps({"user_id": await app.register(args.email, args.password)}))
            return 0
        try:
            claims = await app.sign_in(args.email, args.password)
        except LoginRefused as error:
            print(f"login refused: {error}", file=sys.stderr)
            return 1
        print(json.dumps({"sub": claims["sub"], "aud": claims["aud"], "iss": claims["iss"]}))
        return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(_main(sys.argv[1:])))
