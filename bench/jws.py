"""JWT sign/verify per second: PyJWT against `sso.security.jws`, in one run.

Why this module exists: the service verifies or signs a JWT on every
ValidateToken, Login and Refresh, and issue 8 asks for raw PyJWT sign/verify
as a ceiling next to the service's numbers. This measures, interleaved in the
same process so that machine load hits every row alike:

- `pyjwt.decode_complete` / `pyjwt.encode`: what a relying app does with PyJWT;
- `jws.verify` / `jws.sign`: the bare signature layer the service now uses;
- `tokens.verify` / `tokens.issue`: the service's whole access-token policy
  (header vetting, kid lookup, claims, clock) on top of `jws`.

Rates are reported with the ratio to the PyJWT row of the same operation.

    python -m bench.jws --alg RS256 --seconds 2 --rounds 3
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import jwt

from sso.security import jws, keys
from sso.security.keys import KeyRing
from sso.security.tokens import JwtAccessTokens

ISSUER = "https://sso.bench"
BASELINE = {"verify": "verify pyjwt.decode_complete", "sign": "sign pyjwt.encode"}


def rate(fn: Callable[[], Any], seconds: float) -> float:
    count, start = 0, time.perf_counter()
    deadline = start + seconds
    while True:
        for _ in range(50):
            fn()
        count += 50
        now = time.perf_counter()
        if now >= deadline:
            return count / (now - start)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--alg", choices=["RS256", "ES256", "EdDSA"], default="RS256")
    parser.add_argument("--seconds", type=float, default=2.0)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        keys.ensure(tmp, args.alg)
        ring = KeyRing.load(tmp)
    key = ring.active
    tokens = JwtAccessTokens(ring, ISSUER, leeway=30)  # no cache: the whole check every call
    cached = JwtAccessTokens(ring, ISSUER, leeway=30, cache_size=16)  # as `sso serve` runs
    now = datetime.now(UTC)
    claims = {"sub": "42", "aud": "7", "sid": "s", "email": "a@b.c", "amr": ["pwd"]}
    token = tokens.issue(claims, ttl=timedelta(minutes=5), now=now)
    payload = jwt.decode(token, options={"verify_signature": False})
    header = {"kid": key.kid, "typ": "at+jwt"}
    cases: dict[str, Callable[[], Any]] = {
        "verify pyjwt.decode_complete": lambda: jwt.decode_complete(
            token, key.public_key, algorithms=[key.alg], audience="7", issuer=ISSUER
        ),
        "verify jws.verify": lambda: jws.verify(token, key.public_key, key.alg),
        "verify tokens.verify (full policy)": lambda: tokens.verify(token, audience="7", now=now),
        "verify tokens.verify (cache hit)": lambda: cached.verify(token, audience="7", now=now),
        "sign pyjwt.encode": lambda: jwt.encode(
            payload, key.private_key, algorithm=key.alg, headers=header
        ),
        "sign jws.sign": lambda: jws.sign(payload, header, key.private_key, key.alg),
        "sign tokens.issue (full)": lambda: tokens.issue(claims, ttl=timedelta(minutes=5), now=now),
    }
    results: dict[str, list[float]] = {name: [] for name in cases}
    for _ in range(args.rounds):
        for name, fn in cases.items():
            results[name].append(rate(fn, args.seconds))
    print(f"alg {args.alg}, {args.rounds} rounds x {args.seconds} s, interleaved, one process")
    print("| operation | ops/s (median) | us/op | vs PyJWT |\n|---|---:|---:|---:|")
    for name, rates in results.items():
        median = statistics.median(rates)
        baseline = BASELINE["verify" if name.startswith("verify") else "sign"]
        base = statistics.median(results[baseline])
        print(f"| {name} | {median:,.0f} | {1e6 / median:.1f} | {median / base:.2f}x |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
