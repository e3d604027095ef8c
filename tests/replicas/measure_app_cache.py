"""A/B of the app cache: CPU per Login and per Refresh with and without it (not a test).

Why this exists: the shared machine makes requests/second meaningless, so this
measures CPU time per call — of this process (in-process server + gRPC client),
of PostgreSQL (postmaster and all backends) and of Redis — for three variants,
interleaved round by round so load drift hits them alike:

- `none`:  every Login reads its app from PostgreSQL (Redis layer bypassed,
  in-process TTL 0);
- `redis`: the Redis layer only (`RedisAppCache`, in-process TTL 0);
- `both`:  the default: Redis layer + 30 s in-process cache.

`lookup` is `AuthService.app_for_login` alone, in-process (what Login adds);
`login` and `refresh` are full gRPC calls (client in this process too).

Run: .venv/bin/python tests/replicas/measure_app_cache.py [calls per round] [rounds]
Medians over rounds are printed in ms of CPU per call, with the load average.
"""

from __future__ import annotations

import asyncio
import os
import statistics
import sys
import tempfile
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(ROOT), str(ROOT / "tests" / "api")]

from sso_harness import Running, make_settings, start, stop  # noqa: E402

from bench.servers import PostgresServer, RedisServer  # noqa: E402
from sso.config import RateLimitSettings  # noqa: E402
from sso.storage import migrate  # noqa: E402
from sso.storage.appcache import RedisAppCache  # noqa: E402
from sso_proto.sso.v1 import auth_pb2, auth_pb2_grpc  # noqa: E402

PASSWORD = "correct horse battery staple"


def cpu(procs: list[psutil.Process]) -> float:
    total = 0.0
    for p in procs:
        try:
            t = p.cpu_times()
            total += t.user + t.system
        except psutil.NoSuchProcess:
            pass
    return total


def everything() -> list[psutil.Process]:
    """This process and all its descendants: hashing workers, PostgreSQL, Redis (once each)."""
    root = psutil.Process(os.getpid())
    return [root, *root.children(recursive=True)]


async def main(calls: int, rounds: int) -> None:
    with PostgresServer() as pg, RedisServer() as rs:
        pg.create_database("sso")
        migrate.upgrade(pg.url("sso"))
        services: dict[str, Running] = {}
        for name in ("none", "redis", "both"):
            tmp = Path(tempfile.mkdtemp(prefix=f"appcache-{name}-"))
            settings = make_settings(tmp, pg.url("sso"), rs.url)
            settings = settings.model_copy(
                update={"ratelimit": RateLimitSettings(login_per_ip=10**6, login_per_email=10**6)}
            )
            running = await start(settings)
            auth = running.container.auth
            if name != "both":
                auth.app_cache_ttl = 0.0
            if name == "none":
                assert isinstance(auth.apps, RedisAppCache)
                auth.apps = auth.apps.repo  # bench-only: bypass the Redis layer
            services[name] = running
        samples: dict[tuple[str, str], list[float]] = {}
        for name, running in services.items():
            stub = auth_pb2_grpc.AuthStub(running.channel)
            await stub.Register(auth_pb2.RegisterRequest(email=f"{name}@ex.com", password=PASSWORD))
        for _ in range(rounds):
            for name, running in services.items():
                stub = auth_pb2_grpc.AuthStub(running.channel)
                login = auth_pb2.LoginRequest(
                    email=f"{name}@ex.com", password=PASSWORD, app_id=running.app.id
                )
                pair = (await stub.Login(login)).tokens
                for op in ("lookup", "login", "refresh"):
                    procs = everything()
                    before = cpu(procs)
                    for _ in range(calls):
                        if op == "lookup":  # the app lookup alone, as Login makes it
                            await running.container.auth.app_for_login(running.app.id)
                        elif op == "login":
                            await stub.Login(login)
                        else:
                            resp = await stub.Refresh(
                                auth_pb2.RefreshRequest(refresh_token=pair.refresh_token)
                            )
                            pair = resp.tokens
                    procs = everything()
                    samples.setdefault((name, op), []).append((cpu(procs) - before) / calls * 1000)
        for running in services.values():
            await stop(running)
    load = os.getloadavg()
    print(f"cores={os.cpu_count()} loadavg={load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
    print(f"calls/round={calls} rounds={rounds}; CPU ms per call (this process + PG + Redis)")
    for (name, op), values in sorted(samples.items(), key=lambda kv: (kv[0][1], kv[0][0])):
        print(
            f"{op:8s} {name:6s} median {statistics.median(values):6.3f}  "
            f"min {min(values):6.3f}  max {max(values):6.3f}"
        )


if __name__ == "__main__":
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 200
    r = int(sys.argv[2]) if len(sys.argv) > 2 else 5
    asyncio.run(main(n, r))
