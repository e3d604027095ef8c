"""Smoke test of the load-test suite's machinery (bench.sweep, bench.suite, bench.plot).

Runs a real two-step sweep (1 and 2 calls in flight, ~1 s each) of ValidateToken
through the suite's ghz runner against the embedded service, then checks the
report's structure and that every figure is positive. No timing is asserted:
the machine is shared. The saturation rule is checked on synthetic steps.
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
from pathlib import Path

import pytest
from grpc_health.v1 import health_pb2
from sso_harness import Running

from bench import loadgen
from bench.plot import plot
from bench.report import render
from bench.suite import ghz_runner
from bench.sweep import Step, StepSlice, render_sweep, run_sweep, saturation_point
from sso_proto.sso.v1 import auth_pb2, auth_pb2_grpc


def _step(concurrency: int, rps: float, p99: float, error_rate: float = 0.0) -> Step:
    return Step(
        concurrency, rps, p99 / 3, p99 / 2, p99, int(rps), {}, error_rate, 0.5, 1.0, 0.2, 0.0
    )


def test_saturation_rule() -> None:
    budget = 1000.0
    growing = [_step(1, 100, 2), _step(2, 190, 2.5), _step(4, 350, 3)]
    assert saturation_point(growing, budget) == (None, "not saturated within the levels measured")
    knee = [*growing, _step(8, 360, 6)]  # +3% req/s, +100% p99
    assert saturation_point(knee, budget)[0] == 4
    errors = [*growing, _step(8, 500, 4, error_rate=0.02)]
    concurrency, reason = saturation_point(errors, budget)
    assert concurrency == 4 and "errors" in reason
    slow = [*growing, _step(8, 500, 1500)]
    assert saturation_point(slow, budget)[0] == 4
    # A dip (outside load) that the next level disproves is not the saturation point.
    dip = [*growing, _step(8, 300, 9), _step(16, 700, 10), _step(32, 710, 25)]
    assert saturation_point(dip, budget)[0] == 16


async def test_sweep_against_embedded_service(embedded: Running, tmp_path: Path) -> None:
    tools = loadgen.prepare_tools()  # ghz is built once into ~/.cache/sso-bench (cached)
    if tools.ghz is None:
        pytest.skip("ghz could not be built here: " + "; ".join(tools.notes))
    stub = auth_pb2_grpc.AuthStub(embedded.channel)
    password = secrets.token_urlsafe(18)
    await stub.Register(auth_pb2.RegisterRequest(email="smoke@example.com", password=password))
    login = await stub.Login(
        auth_pb2.LoginRequest(email="smoke@example.com", password=password, app_id=embedded.app.id)
    )
    tokens = tmp_path / "validate.json"
    tokens.write_text(json.dumps([{"token": login.tokens.access_token}]))
    protoset = loadgen.write_protoset(
        [auth_pb2.DESCRIPTOR, health_pb2.DESCRIPTOR], tmp_path / "smoke.protoset"
    )
    runner = ghz_runner(
        tools, embedded.target, "sso.v1.Auth.ValidateToken", protoset, data_file=tokens
    )
    lines: list[str] = []
    # The service runs on this event loop: the blocking sweep runs in a thread.
    sweep = await asyncio.to_thread(
        run_sweep,
        "ValidateToken",
        runner,
        [1, 2],
        StepSlice(duration=1.0, warmup=0.3),
        server=lambda: [os.getpid()],
        datastores=list,
        latency_budget_ms=10_000,
        progress=lines.append,
    )

    assert [s.concurrency for s in sweep.steps] == [1, 2]
    assert len(lines) == 2 and sweep.generator.startswith("ghz")
    for step in sweep.steps:
        assert step.calls > 0 and step.rps > 0 and step.error_rate == 0.0
        assert step.p50_ms and step.p95_ms and step.p99_ms
        assert 0 < step.p50_ms <= step.p95_ms <= step.p99_ms
        assert step.server_cpu_ms_per_call and step.server_cpu_ms_per_call > 0
    assert sweep.peak is not None and sweep.saturation_reason

    data = json.loads(json.dumps(sweep.as_dict()))
    assert data["peak_rps"] > 0 and {"steps", "saturation", "saturation_reason"} <= data.keys()
    table = render_sweep(sweep)
    assert len(table) == 4 + len(sweep.steps) and table[0].startswith("**ValidateToken**")

    report = {
        "started": "smoke",
        "machine": {
            "cores": os.cpu_count(),
            "commit": "x",
            "cpu": "x",
            "os": "x",
            "python": "3",
            "grpcio": "1",
            "loadavg_at_start": [0.0],
        },
        "workers": 1,
        "step": {"duration_s": 1.0, "warmup_s": 0.3},
        "command": "pytest",
        "outside_load": {"median_cores": 0.0, "max_cores": 0.0, "windows": 2, "quiet": True},
        "sweeps": [data],
        "verdicts": [],
        "ceilings": None,
        "seconds": 1.0,
    }
    png = plot(report, tmp_path / "sweep.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    markdown = render(report)
    assert "**ValidateToken**" in markdown and "quiet machine" in markdown


async def test_mixed_workload_carries_session_state(embedded: Running, tmp_path: Path) -> None:
    """chainload's mixed mode: Login, then ValidateToken and Refresh with the carried tokens.

    Every Refresh spends the token of the previous reply, so zero errors with
    Refresh calls counted proves the chain carries state; the per-method counts
    follow the configured ratio (1 login : 20 refreshes : 200 validations). Eight
    accounts keep each under the harness's per-email login limit (10 a minute).
    """
    tools = loadgen.prepare_tools()
    if tools.chainload is None:
        pytest.skip("chainload could not be built here: " + "; ".join(tools.notes))
    stub = auth_pb2_grpc.AuthStub(embedded.channel)
    lines = []
    for n in range(8):
        email, password = f"mixed-{n}@example.com", secrets.token_urlsafe(18)
        await stub.Register(auth_pb2.RegisterRequest(email=email, password=password))
        lines.append(f"{email}\t{password}\t{embedded.app.id}\n")
    accounts = tmp_path / "accounts.tsv"
    accounts.write_text("".join(lines))

    result = await asyncio.to_thread(
        loadgen.run_mixed,
        tools.chainload,
        target=embedded.target,
        accounts_file=accounts,
        concurrency=2,
        connections=2,
        duration=1.5,
        warmup=0.2,
    )

    assert result.error_count == 0 and result.count > 0 and result.rps > 0
    counts = {name.rsplit("/", 1)[-1]: m["count"] for name, m in result.methods.items()}
    assert counts["Login"] > 0 and counts["Refresh"] > 0 and counts["ValidateToken"] > 0
    assert counts["Login"] + counts["Refresh"] + counts["ValidateToken"] == result.count
    # Per session: 1 Login, 20 Refresh, 200 ValidateToken (cut by the window's edges).
    assert counts["ValidateToken"] >= counts["Refresh"] >= counts["Login"]
    assert result.p50_ms and result.p99_ms and 0 < result.p50_ms <= result.p99_ms
