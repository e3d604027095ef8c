"""Ceilings for the load-test suite that no earlier module measured.

Why this module exists: issue 8 judges every scenario against a figure
measured in the same run on the same machine. `bench.argon2_ceiling` and
`bench.echo` cover hashing and bare gRPC; this adds

* `pk_lookups`: asyncpg primary-key lookups per second (`SELECT ... FROM users
  WHERE id = $1`) over N connections against the PostgreSQL the service uses,
  from as many processes as the service has workers (one Python process
  cannot drive more than one core);
* `pyjwt`: raw PyJWT sign and verify per second with the service's own active
  signing key, in one process (`bench.jws.rate`);
* `relying_app`: what an application that trusts our tokens does offline: a
  `jwt.PyJWKClient` fetching the service's real JWKS over HTTP once, then
  cached, verifying access tokens the way `e2e/relying_app.py` does (its
  `JwksKeys`: PyJWKClient behind a kid dict); measured interleaved with raw
  PyJWT decode of the same token with the key already in hand, so the ratio
  shows only the lookup overhead (target >= 90%). Calling PyJWKClient's
  `get_signing_key_from_jwt` on every token is measured too, for comparison.

    python -m bench.ceilings pk-worker --dsn ... --connections 4 --seconds 3
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import jwt

from bench.jws import rate
from e2e.relying_app import JwksKeys
from sso.security.keys import KeyRing

PK_QUERY = "SELECT id, email, password_hash FROM users WHERE id = $1"


async def _pk_worker(dsn: str, connections: int, seconds: float, warmup: float) -> dict[str, Any]:
    import asyncpg  # the benchmark's client only; the service reaches it through sso.storage

    conns = [await asyncpg.connect(dsn) for _ in range(connections)]
    try:
        ids = [r["id"] for r in await conns[0].fetch("SELECT id FROM users LIMIT 1000")]
        if not ids:
            raise RuntimeError("no users to look up")
        counted = [0]
        state = {"measuring": False, "stop": False}

        async def loop(conn: Any, offset: int) -> None:
            stmt = await conn.prepare(PK_QUERY)
            i = offset
            while not state["stop"]:
                row = await stmt.fetchrow(ids[i % len(ids)])
                assert row is not None
                i += 1
                if state["measuring"]:
                    counted[0] += 1

        tasks = [asyncio.create_task(loop(c, n * 97)) for n, c in enumerate(conns)]
        await asyncio.sleep(warmup)
        state["measuring"] = True
        started = time.perf_counter()
        await asyncio.sleep(seconds)
        state["measuring"] = False
        elapsed = time.perf_counter() - started
        state["stop"] = True
        await asyncio.gather(*tasks)
        return {"count": counted[0], "seconds": elapsed}
    finally:
        for conn in conns:
            await conn.close()


def pk_lookups(
    dsn: str, *, processes: int, connections: int, seconds: float, warmup: float = 1.0
) -> dict[str, Any]:
    """asyncpg pk lookups/s: `processes` x (`connections` / `processes`) connections."""
    per = max(1, connections // processes)
    argv = [
        sys.executable,
        "-m",
        "bench.ceilings",
        "pk-worker",
        f"--dsn={dsn}",
        f"--connections={per}",
        f"--seconds={seconds}",
        f"--warmup={warmup}",
    ]
    children = [subprocess.Popen(argv, stdout=subprocess.PIPE, text=True) for _ in range(processes)]
    count, span = 0, 0.0
    for child in children:
        out, _ = child.communicate(timeout=warmup + seconds + 60)
        if child.returncode != 0:
            raise RuntimeError(f"pk lookup worker failed with {child.returncode}")
        report = json.loads(out.strip().splitlines()[-1])
        count += int(report["count"])
        span = max(span, float(report["seconds"]))
    return {
        "rps": count / span if span else 0.0,
        "count": count,
        "processes": processes,
        "connections": per * processes,
        "query": PK_QUERY,
    }


def pyjwt(keys_dir: Path, token: str, *, seconds: float, rounds: int = 3) -> dict[str, Any]:
    """Raw PyJWT sign and verify per second with the service's active key (one process)."""
    key = KeyRing.load(keys_dir).active
    claims = jwt.decode(token, options={"verify_signature": False})
    header = {"kid": key.kid, "typ": "at+jwt"}
    verify: list[float] = []
    sign: list[float] = []
    for _ in range(rounds):
        verify.append(
            rate(
                lambda: jwt.decode(
                    token,
                    key.public_key,
                    algorithms=[key.alg],
                    audience=claims["aud"],
                    issuer=claims["iss"],
                ),
                seconds,
            )
        )
        sign.append(
            rate(
                lambda: jwt.encode(claims, key.private_key, algorithm=key.alg, headers=header),
                seconds,
            )
        )
    return {
        "alg": key.alg,
        "verify_per_s": statistics.median(verify),
        "sign_per_s": statistics.median(sign),
        "processes": 1,
    }


class _CountingJWKClient(jwt.PyJWKClient):
    """PyJWKClient that counts its HTTP fetches (to show the JWKS is fetched once)."""

    fetches = 0

    def fetch_data(self) -> Any:
        type(self).fetches += 1
        return super().fetch_data()


def relying_app(jwks_url: str, token: str, *, seconds: float, rounds: int = 3) -> dict[str, Any]:
    """Offline verification in a relying app via PyJWKClient vs raw PyJWT decode.

    Both sides check signature, audience, issuer and expiry of the same token;
    the raw side holds the key already, the client side looks it up by `kid` in
    its cached JWK Set (fetched over HTTP from the service on first use).
    """
    _CountingJWKClient.fetches = 0
    client = _CountingJWKClient(jwks_url, cache_jwk_set=True, lifespan=3600)
    claims = jwt.decode(token, options={"verify_signature": False})
    alg = jwt.get_unverified_header(token)["alg"]
    key = client.get_signing_key_from_jwt(token).key  # first use: the one HTTP fetch
    options = {"audience": claims["aud"], "issuer": claims["iss"], "algorithms": [alg]}

    def raw() -> Any:
        return jwt.decode(token, key, **options)

    keys = JwksKeys(client)  # what e2e/relying_app.py does: PyJWKClient plus a kid dict

    def through_client() -> Any:
        return jwt.decode(token, keys.key_for(token).key, **options)

    def pyjwkclient_alone() -> Any:
        return jwt.decode(token, client.get_signing_key_from_jwt(token).key, **options)

    raw_rates: list[float] = []
    client_rates: list[float] = []
    alone_rates: list[float] = []
    for n in range(rounds):  # interleaved, order alternating: load hits all alike
        trio = [(raw_rates, raw), (client_rates, through_client), (alone_rates, pyjwkclient_alone)]
        for rates, fn in trio if n % 2 == 0 else reversed(trio):
            rates.append(rate(fn, seconds))
    raw_rate, client_rate = statistics.median(raw_rates), statistics.median(client_rates)
    return {
        "alg": alg,
        "jwks_url": jwks_url,
        "raw_decode_per_s": raw_rate,
        "pyjwkclient_per_s": client_rate,
        # get_signing_key_from_jwt on every call, without the kid dict: for comparison.
        "pyjwkclient_uncached_per_s": statistics.median(alone_rates),
        "ratio": client_rate / raw_rate if raw_rate else None,
        "jwks_http_fetches": _CountingJWKClient.fetches,
        "processes": 1,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.ceilings")
    sub = parser.add_subparsers(dest="command", required=True)
    worker = sub.add_parser("pk-worker", help="internal: one process of the pk-lookup ceiling")
    worker.add_argument("--dsn", required=True)
    worker.add_argument("--connections", type=int, default=4)
    worker.add_argument("--seconds", type=float, default=3.0)
    worker.add_argument("--warmup", type=float, default=1.0)
    args = parser.parse_args(argv)
    report = asyncio.run(_pk_worker(args.dsn, args.connections, args.seconds, args.warmup))
    print(json.dumps(report), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
