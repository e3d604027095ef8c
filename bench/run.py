"""`make bench`: Login, Refresh and ValidateToken next to their ceilings, in one run.

Why this module exists: throughput figures mean little on their own and drift
from run to run on a shared machine, so this measures the service and the two
ceilings it is judged against in the same run, on the same cores, with the same
generators, and reports the ratios against the targets:

    Login         >= 90% of raw argon2 verifications/s (same parameters, threads, processes)
    ValidateToken >= 60% of a bare grpc.aio echo server (same workers, generator, load)
    Refresh       >= 30% of the same echo server, through the same generator

Sequence: build the generators once (bench.loadgen) → throwaway PostgreSQL and
Redis (bench.servers) → `sso migrate`, `sso keys ensure`, `sso apps create` →
`sso serve --workers N` and the bare echo server (bench.echo) side by side →
register a pool of users → rounds. Each round opens fresh sessions, then
measures every scenario back to back with its ceiling, alternating the order:
Login (ghz, users round-robin) with raw argon2 (bench.argon2_ceiling),
ValidateToken (ghz, many users' tokens) with echo through ghz, Refresh
(chainload, one token chain per in-flight call) with echo through chainload.
A ratio is the median of the per-round ratios, so outside load that changes
between rounds moves both sides of each ratio together. Every window also
records which processes used the CPU (bench.procs), so interference from other
work on the machine is visible, and the CPU-per-call ratio gives a second,
steadier reading.

Results go to stdout and to bench/results/latest.{md,json}. A missed target is
reported (BELOW), never a failure: the exit status is non-zero only when the
benchmark itself could not run.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import platform
import secrets
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from contextlib import ExitStack
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import grpc
from grpc_health.v1 import health_pb2

from bench import budget, loadgen
from bench.argon2_ceiling import Argon2Params
from bench.argon2_ceiling import measure as measure_argon2
from bench.loadgen import LoadResult, Tools, Window
from bench.procs import CpuUsage, CpuWindow, Pids, ServerTree, tree
from bench.servers import PostgresServer, RedisServer, free_port
from bench.sweep import StepSlice as Slice  # one measured window: warm-up, then counted
from sso.config import PasswordSettings, Settings
from sso_proto.sso.v1 import auth_pb2, auth_pb2_grpc

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "bench" / "results"
TARGETS = {"Login": 0.90, "ValidateToken": 0.60, "Refresh": 0.30}
# The load-test suite's (issue 8) targets; bench.suite judges by them, this report
# shows what they would leave for the service (bench.budget).
SUITE_TARGETS = {"Login": 0.95, "ValidateToken": 0.70, "Refresh": 0.40, "relying app": 0.90}
METHOD_HEALTH = "/grpc.health.v1.Health/Check"
METHOD_REFRESH = "/sso.v1.Auth/Refresh"
# Rate limits raised out of reach (see service_env); the checks still run.
RATE_LIMITS = ("LOGIN_PER_IP", "LOGIN_PER_EMAIL", "REGISTER_PER_IP")
UNREACHABLE_LIMIT = 1_000_000_000
# Cores used by processes outside the benchmark above which a req/s ratio is flagged.
NOISY_OTHER_CORES = 0.2


@dataclass
class Plan:
    """What one run measures, and how hard it pushes."""

    workers: int
    rounds: int  # each scenario and its ceiling are measured back to back, once a round
    duration: float  # measured seconds per scenario per round
    warmup: float  # warm-up seconds before the first round's windows
    slice_warmup: float  # warm-up seconds before later rounds' windows
    users: int
    login_concurrency: int
    cheap_concurrency: int
    cheap_connections: int
    loadgen: str
    service_env: dict[str, str] = field(default_factory=dict)  # --set KEY=VALUE (what-ifs)
    keys_args: list[str] = field(default_factory=list)  # e.g. --alg ES256


@dataclass
class Row:
    """One line of the report: a scenario or a ceiling, and how it compares."""

    scenario: str
    result: LoadResult
    cpu: CpuUsage | None = None
    server_cpu_ms_per_call: float | None = None
    ceiling: str | None = None
    ratio: float | None = None
    target: float | None = None
    cpu_ratio: float | None = None  # ceiling's server CPU per call / this row's
    slices: list[float] | None = None  # req/s of each round
    round_ratios: list[float] | None = None  # req/s ratio to the ceiling, each round
    noisy: bool = False  # other processes took a real share of the cores during the ratio

    @property
    def verdict(self) -> str:
        if self.ratio is None or self.target is None:
            return ""
        verdict = "PASS" if self.ratio >= self.target else "BELOW"
        return f"{verdict} (noisy)" if self.noisy else verdict


@dataclass
class Report:
    """Everything one run measured, as rendered to markdown and JSON."""

    started: str
    machine: dict[str, Any]
    plan: Plan
    argon2_params: Argon2Params | None = None
    argon2_threads: int = 0
    rows: list[Row] = field(default_factory=list)
    tools: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    seconds: float = 0.0


# -- environment ------------------------------------------------------------------------


def machine_info() -> dict[str, Any]:
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    os_name = "unknown"
    try:
        for line in Path("/etc/os-release").read_text().splitlines():
            if line.startswith("PRETTY_NAME="):
                os_name = line.split("=", 1)[1].strip('"')
    except OSError:
        pass
    return {
        "commit": git_commit(),
        "cores": os.cpu_count(),
        "cpu": cpu,
        "os": os_name,
        "python": platform.python_version(),
        "grpcio": grpc.__version__,
        "loadavg_at_start": [round(x, 2) for x in os.getloadavg()],
    }


def git_commit() -> str:
    """The commit measured, with "+dirty" when service/ has uncommitted changes."""

    def git(*args: str) -> str:
        result = subprocess.run(
            ["git", "-C", str(REPO), *args], capture_output=True, text=True, check=False
        )
        return result.stdout.strip() if result.returncode == 0 else ""

    commit = git("rev-parse", "--short", "HEAD") or "unknown"
    return commit + ("+dirty" if git("status", "--porcelain", "--", "service") else "")


def service_env(
    *, pg: PostgresServer, redis: RedisServer, home: Path, port: int, http_port: int
) -> dict[str, str]:
    """The service's configuration: production defaults, except where noted.

    Only SSO_PASSWORDS__* is inherited from the caller (so the argon2 ceiling and
    the service agree on the parameters); `--set` adds what-if changes.
    """
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("SSO_") or k.startswith("SSO_PASSWORDS__")
    }
    data_key = base64.urlsafe_b64encode(secrets.token_bytes(32)).decode().rstrip("=")
    env.update(
        {
            "SSO_HOME": str(home),
            "SSO_DATABASE__URL": pg.url(),
            "SSO_REDIS__URL": redis.url,
            "SSO_DATA_KEY": data_key,
            "SSO_KEYS__DIR": str(home / "keys"),
            "SSO_KEYS__GENERATE_IF_MISSING": "false",
            "SSO_SERVER__HOST": "127.0.0.1",
            "SSO_SERVER__PORT": str(port),
            "SSO_SERVER__HTTP_HOST": "127.0.0.1",
            "SSO_SERVER__HTTP_PORT": str(http_port),
            "SSO_SERVER__SHUTDOWN_GRACE": "2",
            "SSO_LOG_LEVEL": "WARNING",
            "SSO_CLEANUP_INTERVAL": "0",
            # All load comes from one address and a few hundred accounts; production
            # traffic from many. The limits stay on (every check still runs, at its
            # real cost) but are set where this traffic cannot trip them.
            **{f"SSO_RATELIMIT__{name}": str(UNREACHABLE_LIMIT) for name in RATE_LIMITS},
        }
    )
    return env


def sso(env: dict[str, str], *args: str) -> str:
    result = subprocess.run(
        [sys.executable, "-m", "sso", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    if result.returncode != 0:
        raise RuntimeError(f"sso {' '.join(args)} failed:\n{result.stdout}\n{result.stderr}")
    return result.stdout


def setup_env(env: dict[str, str]) -> dict[str, str]:
    """`env` for one-off set-up commands (`sso apps create`): the database only.

    The app is written to PostgreSQL, where the service reads it; without Redis the
    CLI gets the plain SQL app repository whatever cache the service puts in front.
    """
    return {k: v for k, v in env.items() if k != "SSO_REDIS__URL"}


@dataclass
class Rig:
    """What `bench.run` and `bench.suite` both measure against, set up by `rig()`.

    A throwaway PostgreSQL and Redis, the service's environment (migrated, with
    a signing key and one app created), the ports the service, its HTTP side and
    the echo ceiling listen on, and the argon2 parameters the service will use.
    """

    tmp: Path
    pg: PostgresServer
    redis: RedisServer
    env: dict[str, str]
    port: int
    http_port: int
    echo_port: int
    params: Argon2Params
    threads: int  # the service's hasher threads per worker
    app_id: int

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def echo_target(self) -> str:
        return f"127.0.0.1:{self.echo_port}"

    def datastores(self) -> list[int]:
        roots = [self.pg.pid, self.redis.pid]
        return [pid for root in roots if root is not None for pid in tree(root)]

    def service(self, workers: int) -> ServerTree:
        """`sso serve --workers N` (not started: enter it, or `.start()`)."""
        return ServerTree(
            [sys.executable, "-m", "sso", "serve", "--workers", str(workers)],
            port=self.port,
            workers=workers,
            env=self.env,
            log=self.tmp / "service.log",
        )

    def echo(self, workers: int) -> ServerTree:
        """The bare grpc.aio echo ceiling, `workers` processes (not started)."""
        return ServerTree(
            [
                sys.executable,
                "-m",
                "bench.echo",
                f"--port={self.echo_port}",
                f"--workers={workers}",
            ],
            port=self.echo_port,
            workers=workers,
            env=dict(os.environ),
            log=self.tmp / "echo.log",
        )


def rig(
    stack: ExitStack,
    *,
    prefix: str,
    extra_env: dict[str, str] | None = None,
    keys_args: Sequence[str] = (),
) -> Rig:
    """Datastores, configuration, `sso migrate`, `sso keys ensure`, `sso apps create`.

    Everything started is closed by `stack`; `extra_env` are what-if settings.
    """
    tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix=prefix)))
    print("starting PostgreSQL and Redis ...", flush=True)
    pg = stack.enter_context(PostgresServer())
    redis = stack.enter_context(RedisServer())
    port, http_port, echo_port = free_port(), free_port(), free_port()
    env = service_env(pg=pg, redis=redis, home=tmp / "home", port=port, http_port=http_port)
    env.update(extra_env or {})
    params, threads = password_params(env)
    sso(env, "migrate")
    sso(env, "keys", "ensure", "--dir", env["SSO_KEYS__DIR"], *keys_args)
    app = json.loads(sso(setup_env(env), "apps", "create", "bench").strip().splitlines()[-1])
    return Rig(tmp, pg, redis, env, port, http_port, echo_port, params, threads, int(app["app_id"]))


def write_logins(path: Path, fixture: Fixture, device: str) -> Path:
    """ghz's `--data-file` for Login: the fixture's users as LoginRequest messages."""
    path.write_text(
        json.dumps(
            [
                {"email": e, "password": p, "app_id": fixture.app_id, "device_name": device}
                for e, p in fixture.users
            ]
        )
    )
    return path


def password_params(env: dict[str, str]) -> tuple[Argon2Params, int]:
    """The argon2 parameters and hasher threads the service will use under `env`."""
    saved = dict(os.environ)
    try:
        os.environ.clear()
        os.environ.update(env)
        p: PasswordSettings = Settings().passwords
    finally:
        os.environ.clear()
        os.environ.update(saved)
    return Argon2Params(p.memory_kib, p.time_cost, p.parallelism), p.workers


# -- service set-up through its public API ------------------------------------------------


@dataclass
class Fixture:
    """Accounts registered through the public API, and the app they log in to."""

    app_id: int
    users: list[tuple[str, str]]


@dataclass
class Sessions:
    access_tokens: list[str]
    refresh_tokens: list[str]


async def _bounded(calls: Sequence[Callable[[], Any]], limit: int) -> list[Any]:
    gate = asyncio.Semaphore(limit)

    async def one(call: Callable[[], Any]) -> Any:
        async with gate:
            return await call()

    return await asyncio.gather(*(one(c) for c in calls))


async def register_users(target: str, app_id: int, users: int) -> Fixture:
    tag = secrets.token_hex(3)
    pool = [(f"bench-{tag}-{i}@example.com", secrets.token_urlsafe(18)) for i in range(users)]
    async with grpc.aio.insecure_channel(target) as channel:
        stub = auth_pb2_grpc.AuthStub(channel)

        def register(email: str, password: str) -> Callable[[], Any]:
            request = auth_pb2.RegisterRequest(email=email, password=password)
            return lambda: stub.Register(request, timeout=60)

        await _bounded([register(e, p) for e, p in pool], limit=8)
    return Fixture(app_id=app_id, users=pool)


async def open_sessions(target: str, fixture: Fixture, count: int) -> Sessions:
    """Log `count` users in: fresh access tokens and refresh-token chains."""
    async with grpc.aio.insecure_channel(target) as channel:
        stub = auth_pb2_grpc.AuthStub(channel)

        def login(email: str, password: str) -> Callable[[], Any]:
            request = auth_pb2.LoginRequest(
                email=email, password=password, app_id=fixture.app_id, device_name="bench"
            )
            return lambda: stub.Login(request, timeout=60)

        users = fixture.users
        replies = await _bounded([login(*users[i % len(users)]) for i in range(count)], limit=8)
    return Sessions(
        access_tokens=[r.tokens.access_token for r in replies],
        refresh_tokens=[r.tokens.refresh_token for r in replies],
    )


# -- measuring ----------------------------------------------------------------------------


Runner = Callable[[Slice, Window], LoadResult]


def measured(name: str, run: Runner, slice_: Slice, *, server: Pids, datastores: Pids) -> Row:
    """Run a scenario for one slice; attribute the CPU used during its measured window."""
    window = CpuWindow(server, datastores)
    result = run(slice_, window)
    usage = window.usage(result.generator_cpu_s, server_cpu=result.server_cpu_s)
    server_cpu = window.server_cpu if result.server_cpu_s is None else result.server_cpu_s
    per_call = server_cpu * 1000 / result.count if result.count and usage else None
    return Row(name, result, usage, per_call)


def _progress(name: str, result: LoadResult, usage: CpuUsage | None) -> None:
    cores = (
        f"cores: server {usage.server:.2f}, generator {usage.generator:.2f}, "
        f"others {usage.other:.2f}"
        if usage
        else "CPU not sampled"
    )
    print(
        f"    {name:<26} {result.rps:9.1f}/s  p50 {_fmt(result.p50_ms)} ms  "
        f"p99 {_fmt(result.p99_ms)} ms  errors {result.error_count}  ({cores})",
        flush=True,
    )


def _fmt(value: float | None, digits: int = 2) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def run_fixed(
    tools: Tools,
    *,
    target: str,
    call: str,
    protoset: Path,
    concurrency: int,
    connections: int,
    data: Any = None,
    data_file: Path | None = None,
    payload: bytes = b"",
) -> Runner:
    """A fixed-payload scenario through ghz, or h2load when ghz could not be built.

    `call` is `package.Service.Method`; `payload` is the encoded request h2load sends
    (ghz uses `data` or the messages in `data_file`).
    """
    if tools.ghz is not None:
        ghz = tools.ghz
        return lambda slice_, window: loadgen.run_ghz(
            ghz,
            target=target,
            call=call,
            protoset=protoset,
            data=data,
            data_file=data_file,
            concurrency=concurrency,
            connections=connections,
            duration=slice_.duration,
            warmup=slice_.warmup,
            window=window,
        )
    if tools.h2load is None:
        raise RuntimeError("no load generator: " + "; ".join(tools.notes))
    h2load = tools.h2load
    return lambda slice_, window: loadgen.run_h2load(
        h2load,
        target=target,
        call=call,
        payload=payload,
        concurrency=concurrency,
        connections=connections,
        duration=slice_.duration,
        warmup=slice_.warmup,
        window=window,
    )


def run_chain(
    tools: Tools,
    plan: Plan,
    *,
    target: str,
    method: str,
    tokens_file: Callable[[], Path] | None = None,
) -> Runner:
    """A chainload scenario (bench.pychain when Go is unavailable).

    `tokens_file` is called at the start of every slice: each slice needs refresh
    tokens nobody has spent yet.
    """

    def run(slice_: Slice, window: Window) -> LoadResult:
        kwargs: dict[str, Any] = {
            "target": target,
            "method": method,
            "concurrency": plan.cheap_concurrency,
            "connections": plan.cheap_connections,
            "duration": slice_.duration,
            "warmup": slice_.warmup,
            "tokens_file": tokens_file() if tokens_file else None,
            "window": window,
        }
        if tools.chainload is not None:
            return loadgen.run_chainload(tools.chainload, **kwargs)
        return loadgen.run_pychain(**kwargs)

    return run


def argon2_runner(plan: Plan, params: Argon2Params, threads: int) -> Runner:
    """The Login ceiling: raw argon2id verifications, shaped like the service's hasher."""

    def run(slice_: Slice, window: Window) -> LoadResult:
        ceiling = measure_argon2(
            params,
            processes=plan.workers,
            threads=threads,
            seconds=slice_.duration,
            warmup=slice_.warmup,
            window=window,
        )
        return LoadResult(
            generator="bench.argon2_ceiling",
            rps=ceiling.rps,
            count=ceiling.count,
            p50_ms=ceiling.p50_ms,
            p99_ms=ceiling.p99_ms,
            concurrency=plan.workers * threads,
            duration_s=slice_.duration,
            server_cpu_s=ceiling.cpu_s,
            single_ms=ceiling.single_ms,
        )

    return run


def _median(values: Sequence[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return statistics.median(present) if present else None


def combine(rows: Sequence[Row]) -> Row:
    """One row from the same scenario's slices: req/s summed over time, the rest medians."""
    results = [r.result for r in rows]
    errors: dict[str, int] = {}
    for result in results:
        for code, n in result.errors.items():
            errors[code] = errors.get(code, 0) + n
    seconds = sum(r.duration_s for r in results)
    count = sum(r.count for r in results)
    first = results[0]
    result = LoadResult(
        generator=first.generator,
        rps=count / seconds if seconds else 0.0,
        count=count,
        p50_ms=_median([r.p50_ms for r in results]),
        p99_ms=_median([r.p99_ms for r in results]),
        errors=errors,
        concurrency=first.concurrency,
        connections=first.connections,
        duration_s=seconds,
        generator_cpu_s=sum(r.generator_cpu_s for r in results),
        notes=list(dict.fromkeys(n for r in results for n in r.notes)),
        single_ms=_median([r.single_ms for r in results]),
    )
    usages = [r.cpu for r in rows if r.cpu is not None]
    cpu = None
    if usages:
        total = sum(u.seconds for u in usages)

        def avg(attr: str) -> float:
            return float(sum(getattr(u, attr) * u.seconds for u in usages)) / total

        cpu = CpuUsage(
            avg("server"), avg("generator"), avg("datastores"), avg("other"), avg("machine"), total
        )
    server_cpu = sum((r.server_cpu_ms_per_call or 0.0) * r.result.count for r in rows)
    return Row(
        rows[0].scenario,
        result,
        cpu,
        server_cpu / count if count and cpu else None,
        slices=[r.result.rps for r in rows],
    )


def judge(row: Row, ceiling: Row, target: float, pairs: Sequence[tuple[Row, Row]]) -> None:
    """Ratios of a scenario to its ceiling: the median of the per-round ratios.

    Each round measures the two back to back, so a change in outside load between
    rounds moves both sides of that round's ratio together.
    """
    row.ceiling, row.target = ceiling.scenario, target
    row.ratio = _median([s.result.rps / c.result.rps if c.result.rps else None for s, c in pairs])
    row.cpu_ratio = _median(
        [
            c.server_cpu_ms_per_call / s.server_cpu_ms_per_call
            if s.server_cpu_ms_per_call and c.server_cpu_ms_per_call
            else None
            for s, c in pairs
        ]
    )
    row.round_ratios = [s.result.rps / c.result.rps if c.result.rps else 0.0 for s, c in pairs]
    others = [r.cpu.other for r in (row, ceiling) if r.cpu is not None]
    row.noisy = max(others, default=0.0) > NOISY_OTHER_CORES


def bench(plan: Plan) -> Report:
    started = time.monotonic()
    report = Report(
        started=datetime.now(UTC).isoformat(timespec="seconds"),
        machine=machine_info(),
        plan=plan,
    )
    if report.machine["loadavg_at_start"][0] > 1.0:
        report.notes.append(
            f"load average {report.machine['loadavg_at_start'][0]} when the run started: "
            "other work shared the cores (see the 'others' CPU figures)"
        )
    tools = loadgen.prepare_tools(plan.loadgen)
    report.tools = {
        "ghz": str(tools.ghz) if tools.ghz else None,
        "chainload": str(tools.chainload) if tools.chainload else None,
        "h2load": str(tools.h2load) if tools.h2load else None,
        "build_seconds": tools.build_seconds,
    }
    report.notes.extend(tools.notes)
    for tool, seconds in tools.build_seconds.items():
        print(f"built {tool} in {seconds:.0f} s (cached for later runs)", flush=True)
    with ExitStack() as stack:
        r = rig(stack, prefix="sso-bench-", extra_env=plan.service_env, keys_args=plan.keys_args)
        params, threads, datastores = r.params, r.threads, r.datastores
        protoset = loadgen.write_protoset(
            [auth_pb2.DESCRIPTOR, health_pb2.DESCRIPTOR], r.tmp / "bench.protoset"
        )
        target, echo_target = r.target, r.echo_target
        print(
            f"servers: sso serve --workers {plan.workers} (PostgreSQL + Redis) and the bare "
            f"grpc.aio echo, {plan.workers} processes; argon2id m={params.memory_kib} KiB "
            f"t={params.time_cost} p={params.parallelism} in {plan.workers} processes x "
            f"{threads} threads",
            flush=True,
        )
        service = stack.enter_context(r.service(plan.workers))
        echo = stack.enter_context(r.echo(plan.workers))
        t0 = time.monotonic()
        fixture = asyncio.run(register_users(target, r.app_id, plan.users))
        print(f"  registered {plan.users} users in {time.monotonic() - t0:.1f} s", flush=True)

        login_file = write_logins(r.tmp / "logins.json", fixture, "bench")
        email, password = fixture.users[0]  # the h2load fallback logs in one user only
        one_login = auth_pb2.LoginRequest(
            email=email, password=password, app_id=fixture.app_id, device_name="bench"
        )
        validate_file, tokens_path = r.tmp / "validate.json", r.tmp / "refresh-tokens.txt"
        one_token = auth_pb2.ValidateTokenRequest()

        def fresh_sessions() -> None:
            """New sessions for each round: unspent refresh tokens, unexpired access tokens."""
            sessions = asyncio.run(open_sessions(target, fixture, plan.cheap_concurrency))
            # One access token per session, round-robin: many users' tokens, as in
            # production, so a per-token cache could not turn the scenario into one lookup.
            validate_file.write_text(json.dumps([{"token": t} for t in sessions.access_tokens]))
            one_token.token = sessions.access_tokens[0]
            tokens_path.write_text("\n".join(sessions.refresh_tokens) + "\n")

        cheap_c, cheap_n = plan.cheap_concurrency, plan.cheap_connections
        pairs_spec: list[tuple[str, Runner, Pids, str, Runner, Pids]] = [
            (
                "Login",
                run_fixed(
                    tools,
                    target=target,
                    call="sso.v1.Auth.Login",
                    protoset=protoset,
                    concurrency=plan.login_concurrency,
                    connections=plan.login_concurrency,
                    data_file=login_file,
                    payload=one_login.SerializeToString(),
                ),
                lambda: service.pids,
                "argon2 verify (ceiling)",
                argon2_runner(plan, params, threads),
                list,
            ),
            (
                "ValidateToken",
                lambda slice_, window: run_fixed(
                    tools,
                    target=target,
                    call="sso.v1.Auth.ValidateToken",
                    protoset=protoset,
                    data_file=validate_file,
                    payload=one_token.SerializeToString(),
                    concurrency=cheap_c,
                    connections=cheap_n,
                )(slice_, window),
                lambda: service.pids,
                "echo (ceiling)",
                run_fixed(
                    tools,
                    target=echo_target,
                    call="grpc.health.v1.Health.Check",
                    protoset=protoset,
                    data={},
                    concurrency=cheap_c,
                    connections=cheap_n,
                ),
                lambda: echo.pids,
            ),
            (
                "Refresh",
                run_chain(
                    tools,
                    plan,
                    target=target,
                    method=METHOD_REFRESH,
                    tokens_file=lambda: tokens_path,
                ),
                lambda: service.pids,
                "echo via chain generator",
                run_chain(tools, plan, target=echo_target, method=METHOD_HEALTH),
                lambda: echo.pids,
            ),
        ]
        slices: dict[str, list[Row]] = {}
        pairs: dict[str, list[tuple[Row, Row]]] = {}
        for round_no in range(plan.rounds):
            first = round_no == 0
            slice_ = Slice(plan.duration, plan.warmup if first else plan.slice_warmup)
            print(f"round {round_no + 1}/{plan.rounds}", flush=True)
            fresh_sessions()
            for name, run, server, ceiling_name, ceiling_run, ceiling_server in pairs_spec:
                # Alternate which side goes first, so neither always gets the warmer machine.
                order = [(name, run, server), (ceiling_name, ceiling_run, ceiling_server)]
                if round_no % 2:
                    order.reverse()
                done: dict[str, Row] = {}
                for label, runner, pids in order:
                    row = measured(label, runner, slice_, server=pids, datastores=datastores)
                    _progress(label, row.result, row.cpu)
                    done[label] = row
                    slices.setdefault(label, []).append(row)
                pairs.setdefault(name, []).append((done[name], done[ceiling_name]))

    combined = {name: combine(rows) for name, rows in slices.items()}
    for name, _run, _server, ceiling_name, _c_run, _c_server in pairs_spec:
        judge(combined[name], combined[ceiling_name], TARGETS[name], pairs[name])
    row_order = [
        "argon2 verify (ceiling)",
        "echo (ceiling)",
        "echo via chain generator",
        "Login",
        "ValidateToken",
        "Refresh",
    ]
    report.rows = [combined[name] for name in row_order]
    report.argon2_params = params
    report.argon2_threads = threads
    report.seconds = time.monotonic() - started
    return report


# -- reporting ----------------------------------------------------------------------------


def render_markdown(report: Report) -> str:
    m, plan = report.machine, report.plan
    lines = [
        f"Run {report.started} at commit {m['commit']}: {m['cores']} cores ({m['cpu']}), "
        f"{m['os']}, Python {m['python']}, grpcio {m['grpcio']}; {plan.workers} workers; "
        f"{plan.rounds} rounds, each measuring every scenario and its ceiling back to back "
        f"for {plan.duration:g} s (after {plan.warmup:g} s of warm-up in round 1, "
        f"{plan.slice_warmup:g} s later).",
        "",
        "| scenario | generator | in flight / conns | req/s (per round) | p50 ms | p99 ms "
        "| errors | vs ceiling: median of rounds (target) | verdict | server CPU ms/call "
        "| CPU ratio | cores: server / generator / PG+Redis / others |",
        "|---|---|---|---|---:|---:|---:|---|---|---:|---:|---|",
    ]
    for row in report.rows:
        r, cpu = row.result, row.cpu
        rps = f"{r.rps:.1f}"
        if row.slices and len(row.slices) > 1:
            rps += " (" + " / ".join(f"{x:.0f}" for x in row.slices) + ")"
        errors = ", ".join(f"{k} {v}" for k, v in sorted(r.errors.items())) or "0"
        versus = ""
        if row.ratio is not None and row.target is not None:
            versus = f"{row.ratio:.0%} of {row.ceiling} (>= {row.target:.0%})"
            if row.round_ratios and len(row.round_ratios) > 1:
                versus += "; rounds " + " / ".join(f"{x:.0%}" for x in row.round_ratios)
        cores = (
            f"{cpu.server:.2f} / {cpu.generator:.2f} / {cpu.datastores:.2f} / {cpu.other:.2f}"
            if cpu
            else ""
        )
        cpu_ratio = "" if row.cpu_ratio is None else f"{row.cpu_ratio:.0%}"
        lines.append(
            f"| {row.scenario} | {r.generator} | {r.concurrency} / {r.connections or '-'} "
            f"| {rps} | {_fmt(r.p50_ms)} | {_fmt(r.p99_ms)} | {errors} | {versus} "
            f"| {row.verdict} | {_fmt(row.server_cpu_ms_per_call, 3)} | {cpu_ratio} | {cores} |"
        )
    if report.argon2_params is not None:
        a = report.argon2_params
        single = report.rows[0].result.single_ms if report.rows else None
        lines += [
            "",
            f"argon2id m={a.memory_kib} KiB, t={a.time_cost}, p={a.parallelism}; ceiling = "
            f"{plan.workers} processes x {report.argon2_threads} threads (the service's "
            f"hasher threads per worker); one verify alone {_fmt(single, 1)} ms.",
        ]
    lines += [
        "",
        "Ratios are medians of the per-round ratios (each round measures a scenario and "
        "its ceiling back to back). CPU ratio: the ceiling's server CPU per call divided "
        "by the scenario's, the throughput ratio the two would have with equal CPU, which "
        "outside load skews far less than req/s. 'others': cores used by processes "
        "outside the benchmark during the windows; '(noisy)': more than "
        f"{NOISY_OTHER_CORES} on average on either side of a ratio.",
    ]
    if plan.service_env or plan.keys_args:
        changed = [f"{k}={v}" for k, v in plan.service_env.items()] + plan.keys_args
        lines += ["", f"What-if run, service configured with: {' '.join(changed)}"]
    lines += budget.render(_budgets(report), m["cores"])
    notes = list(report.notes)
    for row in report.rows:
        notes += [f"{row.scenario}: {n}" for n in dict.fromkeys(row.result.notes)]
    if notes:
        lines += ["", *[f"- {n}" for n in notes]]
    lines += ["", f"Total benchmark time {report.seconds:.0f} s."]
    return "\n".join(lines) + "\n"


def _budgets(report: Report) -> list[budget.Budget]:
    return budget.budgets(report.rows, [TARGETS, SUITE_TARGETS], report.machine["cores"] or 1)


def to_json(report: Report) -> dict[str, Any]:
    data: dict[str, Any] = {
        "started": report.started,
        "machine": report.machine,
        "plan": asdict(report.plan),
        "tools": report.tools,
        "argon2_params": asdict(report.argon2_params) if report.argon2_params else None,
        "argon2_threads": report.argon2_threads,
        "notes": report.notes,
        "seconds": round(report.seconds, 1),
        "rows": [],
        "budgets": [{**asdict(b), "left_ms": b.left_ms} for b in _budgets(report)],
    }
    for row in report.rows:
        data["rows"].append(
            {
                "scenario": row.scenario,
                **asdict(row.result),
                "cpu": row.cpu.as_dict() if row.cpu else None,
                "server_cpu_ms_per_call": row.server_cpu_ms_per_call,
                "ceiling": row.ceiling,
                "ratio": row.ratio,
                "round_ratios": row.round_ratios,
                "cpu_ratio": row.cpu_ratio,
                "target": row.target,
                "verdict": row.verdict or None,
                "rps_per_round": row.slices,
            }
        )
    return data


def _parse_set(values: list[str]) -> dict[str, str]:
    env: dict[str, str] = {}
    for item in values:
        key, sep, value = item.partition("=")
        if not sep or not key.startswith("SSO_"):
            raise SystemExit(f"--set wants SSO_KEY=VALUE, got {item!r}")
        env[key] = value
    return env


def main(argv: list[str] | None = None) -> int:
    cores = os.cpu_count() or 1
    parser = argparse.ArgumentParser(
        prog="python -m bench.run",
        description="Benchmark Login/Refresh/ValidateToken next to argon2 and echo ceilings.",
    )
    parser.add_argument("--workers", type=int, default=cores, help="service and echo processes")
    parser.add_argument("--rounds", type=int, default=3, help="scenario/ceiling pairs per run")
    parser.add_argument("--duration", type=float, default=4.0, help="measured s per round")
    parser.add_argument("--warmup", type=float, default=3.0, help="warm-up s, first round")
    parser.add_argument("--slice-warmup", type=float, default=1.0, help="warm-up s, later")
    parser.add_argument("--users", type=int, default=200, help="accounts Login cycles through")
    parser.add_argument("--login-concurrency", type=int, default=0, help="default 4 x workers")
    parser.add_argument("--concurrency", type=int, default=32, help="in flight, cheap calls")
    parser.add_argument("--connections", type=int, default=16, help="connections, cheap calls")
    parser.add_argument("--loadgen", choices=["auto", "h2load"], default="auto")
    parser.add_argument("--quick", action="store_true", help="1 round of 3 s (a smoke test)")
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="SSO_KEY=VALUE",
        help="extra service setting for a what-if run (repeatable)",
    )
    parser.add_argument("--alg", choices=["RS256", "ES256", "EdDSA"], default=None)
    parser.add_argument("--output-dir", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    plan = Plan(
        workers=args.workers,
        rounds=1 if args.quick else max(1, args.rounds),
        duration=3.0 if args.quick else args.duration,
        warmup=1.0 if args.quick else args.warmup,
        slice_warmup=args.slice_warmup,
        users=min(args.users, 50) if args.quick else args.users,
        login_concurrency=args.login_concurrency or 4 * args.workers,
        cheap_concurrency=args.concurrency,
        cheap_connections=min(args.connections, args.concurrency),
        loadgen=args.loadgen,
        service_env=_parse_set(args.set),
        keys_args=["--alg", args.alg] if args.alg else [],
    )
    report = bench(plan)
    markdown = render_markdown(report)
    print("\n" + markdown)
    args.output_dir.mkdir(parents=True, exist_ok=True)
    (args.output_dir / "latest.md").write_text(markdown)
    payload = json.dumps(to_json(report), indent=2, default=str)
    (args.output_dir / "latest.json").write_text(payload)
    stamp = report.started.replace(":", "").replace("-", "")
    (args.output_dir / f"run-{stamp}.json").write_text(payload)
    print(f"written: {args.output_dir / 'latest.md'} and latest.json")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
