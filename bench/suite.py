"""The load-test suite (issue 8): every scenario swept to saturation, next to its ceilings.

Why this module exists: `bench.run` compares three hot paths with their
ceilings at one load level. Capacity planning needs more: where each call
saturates, what latency it has on the way, and whether the service scales
with workers. This runs, against a throwaway PostgreSQL + Redis and
`sso serve --workers N`:

* sweeps (bench.sweep) of Register, Login (with a health probe beside it:
  the event loop must answer in < 50 ms p99 while hashes saturate the CPU),
  ValidateToken, Refresh, ListSessions, a mixed workload (chainload's mixed
  mode: 1 login : 20 refreshes : 200 validations per session) and the bare
  echo server, each at rising concurrency;
* ceilings in the same run: raw argon2 (bench.argon2_ceiling), echo
  (bench.echo, swept like a scenario, and through chainload at Refresh's
  peak), raw PyJWT sign/verify, asyncpg pk lookups and a relying app's
  offline verification through PyJWKClient (bench.ceilings);
* ValidateToken again with one worker: the 2/1 worker throughput ratio.

Outputs `bench/results/sweep.{json,md,png}`. Targets are reported, never
enforced. `--quick` is a ~1-minute smoke run.

    .venv/bin/python -m bench.suite            # make bench-suite
    .venv/bin/python -m bench.suite --quick    # make bench-quick
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import time
from collections.abc import Callable
from contextlib import ExitStack
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from grpc_health.v1 import health_pb2

from bench import ceilings, loadgen
from bench.argon2_ceiling import measure as measure_argon2
from bench.loadgen import LoadResult, Tools, Window
from bench.plot import plot
from bench.probe import HealthProbe
from bench.procs import CpuWindow
from bench.report import render
from bench.run import (
    RESULTS,
    SUITE_TARGETS,
    machine_info,
    open_sessions,
    register_users,
    rig,
    write_logins,
)
from bench.sweep import StepRunner, StepSlice, Sweep, run_sweep
from sso_proto.sso.v1 import auth_pb2, sessions_pb2

TARGETS = SUITE_TARGETS
SCALING_TARGET = 1.7
PROBE_P99_MS = 50.0
CHEAP = [1, 2, 4, 8, 16, 32, 64, 128]
COSTLY = [1, 2, 4, 8, 16, 32]


def ghz_runner(tools: Tools, target: str, call: str, protoset: Path, **kwargs: Any) -> StepRunner:
    if tools.ghz is None:
        raise RuntimeError("the suite needs ghz: " + "; ".join(tools.notes))
    ghz = tools.ghz

    def run(c: int, slice_: StepSlice, window: Window) -> LoadResult:
        return loadgen.run_ghz(
            ghz,
            target=target,
            call=call,
            protoset=protoset,
            concurrency=c,
            connections=min(c, 16),
            duration=slice_.duration,
            warmup=slice_.warmup,
            window=window,
            **kwargs,
        )

    return run


def chain_runner(tools: Tools, target: str, **kwargs: Any) -> StepRunner:
    if tools.chainload is None:
        raise RuntimeError("the suite needs chainload: " + "; ".join(tools.notes))
    chainload = tools.chainload

    def run(c: int, slice_: StepSlice, window: Window) -> LoadResult:
        mixed = kwargs.get("accounts_file") is not None
        fn: Callable[..., LoadResult] = loadgen.run_mixed if mixed else loadgen.run_chainload
        return fn(
            chainload,
            target=target,
            concurrency=c,
            connections=min(c, 16),
            duration=slice_.duration,
            warmup=slice_.warmup,
            window=window,
            **kwargs,
        )

    return run


def outside_load(sweeps: list[Sweep]) -> dict[str, Any]:
    values = [s.other_cores for sw in sweeps for s in sw.steps if s.other_cores is not None]
    return {
        "median_cores": statistics.median(values) if values else 0.0,
        "max_cores": max(values, default=0.0),
        "windows": len(values),
        "quiet": bool(values) and statistics.median(values) <= 0.2,
    }


def suite(args: argparse.Namespace) -> dict[str, Any]:
    started = time.monotonic()
    quick = args.quick
    cheap = [1, 4] if quick else CHEAP
    costly = [1, 4] if quick else COSTLY
    slice_ = StepSlice(args.duration, args.warmup)
    report: dict[str, Any] = {
        "started": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": machine_info(),
        "workers": args.workers,
        "quick": quick,
        "step": {"duration_s": slice_.duration, "warmup_s": slice_.warmup},
        "command": "python -m bench.suite " + " ".join(sys.argv[1:]),
    }
    tools = loadgen.prepare_tools()
    sweeps: list[Sweep] = []
    with ExitStack() as stack:
        r = rig(stack, prefix="sso-suite-")
        env, params, threads, datastores = r.env, r.params, r.threads, r.datastores
        tmp, http_port, target, echo_target = r.tmp, r.http_port, r.target, r.echo_target
        protoset = loadgen.write_protoset(
            [auth_pb2.DESCRIPTOR, sessions_pb2.DESCRIPTOR, health_pb2.DESCRIPTOR],
            tmp / "suite.protoset",
        )
        service = r.service(args.workers).start()
        stack.callback(lambda: service.stop())
        echo = stack.enter_context(r.echo(args.workers))
        fixture = asyncio.run(register_users(target, r.app_id, 20 if quick else 200))
        users_file = write_logins(tmp / "logins.json", fixture, "suite")
        accounts_file = tmp / "accounts.tsv"
        accounts_file.write_text("".join(f"{e}\t{p}\t{fixture.app_id}\n" for e, p in fixture.users))
        sessions = asyncio.run(open_sessions(target, fixture, 32))
        validate_file, tokens_file = tmp / "validate.json", tmp / "refresh.txt"
        validate_file.write_text(json.dumps([{"token": t} for t in sessions.access_tokens]))

        def fresh_refresh_tokens(c: int) -> None:
            fresh = asyncio.run(open_sessions(target, fixture, c))
            tokens_file.write_text("\n".join(fresh.refresh_tokens) + "\n")

        def server() -> list[int]:
            return service.pids

        def sweep(
            name: str,
            runner: StepRunner,
            levels: list[int],
            budget: float,
            pids: Callable[[], list[int]] = server,
            **kw: Any,
        ) -> Sweep:
            print(f"sweep {name}", flush=True)
            result = run_sweep(
                name,
                runner,
                levels,
                slice_,
                server=pids,
                datastores=datastores,
                latency_budget_ms=budget,
                **kw,
            )
            sweeps.append(result)
            return result

        register_data = {
            "email": "sweep-{{.RequestNumber}}-{{.UUID}}@example.com",
            "password": "correct horse battery staple 8",
        }
        sweep(
            "Register",
            ghz_runner(tools, target, "sso.v1.Auth.Register", protoset, data=register_data),
            costly,
            2000,
        )
        probe_runs: list[dict[str, Any]] = []

        def beside() -> tuple[Callable[[], None], Callable[[], dict[str, Any]]]:
            probe = HealthProbe(target)

            def stop() -> dict[str, Any]:
                figures = probe.stop()
                probe_runs.append(figures)
                return figures

            return probe.start, stop

        login = sweep(
            "Login",
            ghz_runner(tools, target, "sso.v1.Auth.Login", protoset, data_file=users_file),
            costly,
            2000,
            beside=beside,
        )
        # Ceilings right after the scenario they judge: outside load drifts less.
        argon2 = measure_argon2(
            params,
            processes=args.workers,
            threads=threads,
            seconds=slice_.duration,
            warmup=slice_.warmup,
        )
        argon2_ms = argon2.cpu_s * 1000 / argon2.count if argon2.count else None
        print(f"  argon2 ceiling {argon2.rps:.1f}/s, {argon2_ms} ms CPU/verify", flush=True)
        echo_sweep = sweep(
            "echo (ceiling)",
            ghz_runner(tools, echo_target, "grpc.health.v1.Health.Check", protoset, data={}),
            cheap,
            250,
            pids=lambda: echo.pids,
        )
        validate = sweep(
            "ValidateToken",
            ghz_runner(
                tools, target, "sso.v1.Auth.ValidateToken", protoset, data_file=validate_file
            ),
            cheap,
            250,
        )
        refresh = sweep(
            "Refresh",
            chain_runner(tools, target, method="/sso.v1.Auth/Refresh", tokens_file=tokens_file),
            cheap,
            500,
            before_step=fresh_refresh_tokens,
        )
        refresh_peak = refresh.peak.concurrency if refresh.peak else 16
        echo_window = CpuWindow(lambda: echo.pids, datastores)
        echo_chain = chain_runner(tools, echo_target, method="/grpc.health.v1.Health/Check")(
            refresh_peak, slice_, echo_window
        )
        echo_chain_ms = (
            echo_window.server_cpu * 1000 / echo_chain.count if echo_chain.count else None
        )
        print(f"  echo via chainload at {refresh_peak}: {echo_chain.rps:.0f}/s", flush=True)
        sweep(
            "ListSessions",
            ghz_runner(
                tools,
                target,
                "sso.v1.Sessions.ListSessions",
                protoset,
                data={},
                metadata={"authorization": f"Bearer {sessions.access_tokens[0]}"},
            ),
            cheap,
            250,
        )
        sweep(
            "Mixed 1:20:200",
            chain_runner(tools, target, accounts_file=accounts_file),
            [1, 4] if quick else [1, 2, 4, 8, 16, 32, 64],
            500,
        )

        print("ceilings", flush=True)
        pk = ceilings.pk_lookups(
            r.pg.dsn(),
            processes=args.workers,
            connections=8,
            seconds=slice_.duration,
            warmup=slice_.warmup,
        )
        keys_dir = Path(env["SSO_KEYS__DIR"])
        token = sessions.access_tokens[0]
        jwt_rates = ceilings.pyjwt(keys_dir, token, seconds=min(1.0, slice_.duration), rounds=3)
        relying = ceilings.relying_app(
            f"http://127.0.0.1:{http_port}/.well-known/jwks.json",
            token,
            seconds=min(1.0, slice_.duration),
            rounds=3,
        )
        report["ceilings"] = {
            "argon2": {
                "rps": argon2.rps,
                "p50_ms": argon2.p50_ms,
                "p99_ms": argon2.p99_ms,
                "single_ms": argon2.single_ms,
                "cpu_ms_per_verify": argon2_ms,
                "processes": args.workers,
                "threads": threads,
                "memory_kib": params.memory_kib,
                "time_cost": params.time_cost,
                "parallelism": params.parallelism,
            },
            "echo_peak_rps": echo_sweep.peak.rps if echo_sweep.peak else None,
            "echo_peak_cpu_ms_per_call": (
                echo_sweep.peak.server_cpu_ms_per_call if echo_sweep.peak else None
            ),
            "echo_chainload": {
                "rps": echo_chain.rps,
                "concurrency": refresh_peak,
                "p99_ms": echo_chain.p99_ms,
                "server_cpu_ms_per_call": echo_chain_ms,
            },
            "asyncpg_pk_lookups": pk,
            "pyjwt": jwt_rates,
            "relying_app": relying,
        }
        for line in (
            f"  argon2 {argon2.rps:.1f}/s; echo via chainload at {refresh_peak}: "
            f"{echo_chain.rps:.0f}/s; pk lookups {pk['rps']:.0f}/s; PyJWT verify "
            f"{jwt_rates['verify_per_s']:.0f}/s sign {jwt_rates['sign_per_s']:.0f}/s; "
            f"relying app {relying['pyjwkclient_per_s']:.0f}/s vs raw "
            f"{relying['raw_decode_per_s']:.0f}/s",
        ):
            print(line, flush=True)

        if args.scaling and args.workers > 1:
            print("scaling: ValidateToken with 1 worker", flush=True)
            service.stop()
            service = r.service(1).start()
            one = run_sweep(
                "ValidateToken, 1 worker",
                ghz_runner(
                    tools, target, "sso.v1.Auth.ValidateToken", protoset, data_file=validate_file
                ),
                cheap,
                slice_,
                server=server,
                datastores=datastores,
                latency_budget_ms=250,
            )
            sweeps.append(one)
            report["scaling"] = _scaling(validate, one, args.workers)

    report["sweeps"] = [s.as_dict() for s in sweeps]
    report["probe_beside_login"] = {
        "worst_p99_ms": max((p["probe_p99_ms"] or 0 for p in probe_runs), default=None),
        "target_p99_ms": PROBE_P99_MS,
        "failures": sum(p["probe_failures"] for p in probe_runs),
    }
    report["verdicts"] = _verdicts(report, {s.scenario: s for s in sweeps}, login)
    report["outside_load"] = outside_load(sweeps)
    report["tools"] = {"ghz": str(tools.ghz), "chainload": str(tools.chainload)}
    report["seconds"] = round(time.monotonic() - started, 1)
    return report


def _scaling(two: Sweep, one: Sweep, workers: int) -> dict[str, Any]:
    p2, p1 = two.peak, one.peak
    ratio = p2.rps / p1.rps if p1 and p2 and p1.rps else None
    return {
        "workers": workers,
        "peak_rps": {"n_workers": p2.rps if p2 else None, "one_worker": p1.rps if p1 else None},
        "server_cpu_ms_per_call": {
            "n_workers": p2.server_cpu_ms_per_call if p2 else None,
            "one_worker": p1.server_cpu_ms_per_call if p1 else None,
        },
        "generator_cores_at_peak": {
            "n_workers": p2.generator_cores if p2 else None,
            "one_worker": p1.generator_cores if p1 else None,
        },
        "ratio": ratio,
        "target": SCALING_TARGET,
    }


def _verdicts(report: dict[str, Any], by: dict[str, Sweep], login: Sweep) -> list[dict[str, Any]]:
    c = report["ceilings"]

    def peak(name: str) -> float | None:
        step = by[name].peak if name in by else None
        return step.rps if step else None

    def cpu_ratio(name: str, ceiling_ms: float | None) -> float | None:
        """Ceiling's server CPU per call / the scenario's at its peak (steadier under load)."""
        step = by[name].peak if name in by else None
        ms = step.server_cpu_ms_per_call if step else None
        return ceiling_ms / ms if ceiling_ms and ms else None

    cpu = {
        "Login": cpu_ratio("Login", c["argon2"]["cpu_ms_per_verify"]),
        "ValidateToken": cpu_ratio("ValidateToken", c["echo_peak_cpu_ms_per_call"]),
        "Refresh": cpu_ratio("Refresh", c["echo_chainload"]["server_cpu_ms_per_call"]),
    }

    rows = [
        ("Login", peak("Login"), c["argon2"]["rps"], "argon2 verifications/s"),
        ("ValidateToken", peak("ValidateToken"), c["echo_peak_rps"], "echo peak (ghz)"),
        ("Refresh", peak("Refresh"), c["echo_chainload"]["rps"], "echo via chainload"),
        (
            "relying app",
            c["relying_app"]["pyjwkclient_per_s"],
            c["relying_app"]["raw_decode_per_s"],
            "raw PyJWT decode",
        ),
    ]
    out = []
    for name, value, ceiling, of in rows:
        ratio = value / ceiling if value and ceiling else None
        target = TARGETS[name]
        out.append(
            {
                "scenario": name,
                "value": value,
                "ceiling": ceiling,
                "ceiling_name": of,
                "ratio": ratio,
                "cpu_ratio": cpu.get(name),
                "target": target,
                "verdict": "PASS" if ratio is not None and ratio >= target else "BELOW",
            }
        )
    scaling = report.get("scaling")
    if scaling:
        ratio = scaling["ratio"]
        out.append(
            {
                "scenario": f"ValidateToken {scaling['workers']} vs 1 worker",
                "value": scaling["peak_rps"]["n_workers"],
                "ceiling": scaling["peak_rps"]["one_worker"],
                "ceiling_name": "1 worker",
                "ratio": ratio,
                "target": SCALING_TARGET,
                "verdict": "PASS" if ratio is not None and ratio >= SCALING_TARGET else "BELOW",
            }
        )
    probe = report["probe_beside_login"]
    worst = probe["worst_p99_ms"]
    out.append(
        {
            "scenario": "health p99 beside Login",
            "value": worst,
            "ceiling": PROBE_P99_MS,
            "ceiling_name": "ms (upper bound)",
            "ratio": None,
            "target": PROBE_P99_MS,
            "verdict": "PASS" if worst is not None and worst < PROBE_P99_MS else "BELOW",
        }
    )
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.suite", description=__doc__)
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--quick", action="store_true", help="2 levels, 1 s steps: a smoke run")
    parser.add_argument("--duration", type=float, default=None, help="measured s per step (3)")
    parser.add_argument("--warmup", type=float, default=None, help="warm-up s per step (1)")
    parser.add_argument("--no-scaling", dest="scaling", action="store_false")
    parser.add_argument("--output-dir", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    args.duration = args.duration or (1.0 if args.quick else 3.0)
    args.warmup = args.warmup or (0.5 if args.quick else 1.0)
    report = suite(args)
    markdown = render(report)
    print("\n" + markdown)
    out = args.output_dir
    out.mkdir(parents=True, exist_ok=True)
    name = "sweep-quick" if args.quick else "sweep"
    (out / f"{name}.json").write_text(json.dumps(report, indent=2, default=str))
    (out / f"{name}.md").write_text(markdown)
    print("written:", out / f"{name}.md", out / f"{name}.json", plot(report, out / f"{name}.png"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
