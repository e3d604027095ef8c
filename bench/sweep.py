"""Concurrency sweeps: one scenario at rising concurrency until it saturates or breaks.

Why this module exists: a single load level says little about capacity. The
load-test suite (`bench.suite`) runs every scenario at 1, 2, 4, ... calls in
flight and needs one place that runs the steps, records what each step cost
(req/s, p50/p95/p99, error rate, server CPU per call, the cores other work on
the machine took) and decides where the scenario saturated. The machinery
is independent of the service: a runner is any `(concurrency, slice, window)
-> LoadResult`, so the smoke test drives it against the in-process service.

Saturation point (the definition used in every report): the last concurrency
that still paid. Stepping from concurrency c to the next level c', the
scenario is saturated at c when

* req/s grows by less than 5% while p99 grows by more than 50%, or
* errors appear at c' (error rate above 1% of calls), or
* p99 at c' exceeds the scenario's latency budget.

A knee that a later level disproves (req/s more than 5% above it, without
errors) was noise, outside load on a shared machine for instance, and does
not count. A sweep stops two levels past the saturation point (to confirm it
and show the knee) or at the first level with errors above 5%, whichever comes
first. When no step meets the rule, the sweep did not saturate within its
levels and the report says so.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from bench.loadgen import LoadResult, Window
from bench.procs import CpuWindow, Pids

RPS_GROWTH = 0.05  # below this req/s growth ...
P99_GROWTH = 0.50  # ... with p99 growing more than this: saturated
ERROR_RATE = 0.01  # errors above this share of calls: broken
STOP_ERROR_RATE = 0.05  # no further steps beyond this
CONFIRM_STEPS = 2  # levels measured past a saturation point before the sweep stops


@dataclass(frozen=True)
class StepSlice:
    """One measured step: `warmup` seconds of load, then `duration` seconds counted."""

    duration: float
    warmup: float


# (concurrency, slice, CPU window) -> result; the window marks the measured span.
StepRunner = Callable[[int, StepSlice, Window], LoadResult]


@dataclass
class Step:
    """One concurrency level of one scenario."""

    concurrency: int
    rps: float
    p50_ms: float | None
    p95_ms: float | None
    p99_ms: float | None
    calls: int
    errors: dict[str, int]
    error_rate: float
    server_cpu_ms_per_call: float | None
    server_cores: float | None
    generator_cores: float | None
    other_cores: float | None  # outside load during the window (others' work)
    methods: dict[str, Any] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)  # e.g. the health probe's figures


@dataclass
class Sweep:
    """A scenario's steps and its saturation point."""

    scenario: str
    generator: str
    latency_budget_ms: float
    steps: list[Step] = field(default_factory=list)
    saturation: int | None = None  # concurrency of the saturation point
    saturation_reason: str = ""
    notes: list[str] = field(default_factory=list)

    @property
    def peak(self) -> Step | None:
        """The step with the highest req/s."""
        return max(self.steps, key=lambda s: s.rps, default=None)

    @property
    def at_saturation(self) -> Step | None:
        return next((s for s in self.steps if s.concurrency == self.saturation), None)

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        peak = self.peak
        data["peak_rps"] = peak.rps if peak else None
        data["peak_concurrency"] = peak.concurrency if peak else None
        return data


def _broken(step: Step, budget_ms: float) -> str:
    if step.error_rate > ERROR_RATE:
        return f"errors {step.error_rate:.1%} at {step.concurrency} in flight"
    if step.p99_ms is not None and step.p99_ms > budget_ms:
        return f"p99 {step.p99_ms:.0f} ms > {budget_ms:.0f} ms budget at {step.concurrency}"
    return ""


def _knee(before: Step, after: Step, budget_ms: float) -> str:
    """Why `after` shows that `before` was saturated ("" when it does not)."""
    broken = _broken(after, budget_ms)
    if broken:
        return broken
    if before.rps > 0 and before.p99_ms and after.p99_ms:
        rps_growth = after.rps / before.rps - 1
        p99_growth = after.p99_ms / before.p99_ms - 1
        if rps_growth < RPS_GROWTH and p99_growth > P99_GROWTH:
            return (
                f"{before.concurrency} -> {after.concurrency} in flight: req/s "
                f"{rps_growth:+.0%}, p99 {p99_growth:+.0%}"
            )
    return ""


def saturation_point(steps: Sequence[Step], budget_ms: float) -> tuple[int | None, str]:
    """(concurrency, reason) of the saturation point as defined in the module doc.

    A knee that a later level disproves (more than 5% above it in req/s, without
    errors) was noise, outside load for instance, and is skipped.
    """
    for i, (before, after) in enumerate(itertools.pairwise(steps)):
        reason = _knee(before, after, budget_ms)
        if not reason:
            continue
        later = steps[i + 1 :]
        if any(s.rps > before.rps * (1 + RPS_GROWTH) and not _broken(s, budget_ms) for s in later):
            continue
        return before.concurrency, reason
    if steps and _broken(steps[0], budget_ms):
        return None, "broken at the first step: " + _broken(steps[0], budget_ms)
    return None, "not saturated within the levels measured"


def to_step(concurrency: int, result: LoadResult, window: CpuWindow) -> Step:
    usage = window.usage(result.generator_cpu_s, server_cpu=result.server_cpu_s)
    server_cpu = window.server_cpu if result.server_cpu_s is None else result.server_cpu_s
    failed = result.error_count
    total = result.count + failed
    return Step(
        concurrency=concurrency,
        rps=result.rps,
        p50_ms=result.p50_ms,
        p95_ms=result.p95_ms,
        p99_ms=result.p99_ms,
        calls=result.count,
        errors=dict(result.errors),
        error_rate=failed / total if total else 0.0,
        server_cpu_ms_per_call=server_cpu * 1000 / result.count if result.count and usage else None,
        server_cores=round(usage.server, 3) if usage else None,
        generator_cores=round(usage.generator, 3) if usage else None,
        other_cores=round(usage.other, 3) if usage else None,
        methods=result.methods,
    )


def run_sweep(
    scenario: str,
    runner: StepRunner,
    levels: Sequence[int],
    slice_: StepSlice,
    *,
    server: Pids,
    datastores: Pids,
    latency_budget_ms: float = 1000.0,
    before_step: Callable[[int], None] | None = None,
    beside: Callable[[], tuple[Callable[[], None], Callable[[], dict[str, Any]]]] | None = None,
    progress: Callable[[str], None] | None = None,
) -> Sweep:
    """Run `scenario` at each of `levels`; stop one step past saturation or on errors.

    `before_step(c)` prepares state for a step (fresh sessions, ...); `beside()`
    returns (start, stop) of a probe that runs during each step and whose
    figures are stored in the step's `extra` (the health probe beside Login).
    """
    sweep = Sweep(scenario, "", latency_budget_ms)
    for concurrency in levels:
        if before_step is not None:
            before_step(concurrency)
        probe = beside() if beside is not None else None
        if probe is not None:
            probe[0]()
        window = CpuWindow(server, datastores)
        try:
            result = runner(concurrency, slice_, window)
        finally:
            extra = probe[1]() if probe is not None else {}
        step = to_step(concurrency, result, window)
        step.extra = extra
        sweep.generator = result.generator
        sweep.notes = list(dict.fromkeys([*sweep.notes, *result.notes]))
        sweep.steps.append(step)
        if progress is None:
            print(describe(scenario, step), flush=True)
        else:
            progress(describe(scenario, step))
        sweep.saturation, sweep.saturation_reason = saturation_point(sweep.steps, latency_budget_ms)
        past = [s for s in sweep.steps if sweep.saturation and s.concurrency > sweep.saturation]
        if len(past) >= CONFIRM_STEPS or step.error_rate > STOP_ERROR_RATE:
            break
    return sweep


def _fmt(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def describe(scenario: str, step: Step) -> str:
    line = (
        f"  {scenario:<14} c={step.concurrency:<4} {step.rps:9.1f}/s  p50 {_fmt(step.p50_ms)} "
        f"p95 {_fmt(step.p95_ms)} p99 {_fmt(step.p99_ms)} ms  err {step.error_rate:.1%}  "
        f"server {_fmt(step.server_cpu_ms_per_call, 3)} ms/call  others {_fmt(step.other_cores, 2)}"
    )
    if step.extra:
        line += "  " + " ".join(f"{k}={v}" for k, v in step.extra.items())
    return line


def render_sweep(sweep: Sweep) -> list[str]:
    """Markdown: one table row per step, the saturation point marked."""
    lines = [
        f"**{sweep.scenario}** ({sweep.generator}; saturation: "
        f"{sweep.saturation if sweep.saturation is not None else 'none'}, "
        f"{sweep.saturation_reason})",
        "",
        "| in flight | req/s | p50 ms | p95 ms | p99 ms | error rate | server CPU ms/call "
        "| cores server / gen / others | notes |",
        "|---:|---:|---:|---:|---:|---:|---:|---|---|",
    ]
    for s in sweep.steps:
        mark = " **(saturation)**" if s.concurrency == sweep.saturation else ""
        notes = ", ".join(f"{k} {v}" for k, v in s.extra.items())
        if s.methods:
            notes += "; ".join(
                f"{name.rsplit('/', 1)[-1]} {m['rps']:.0f}/s p99 {m['latency_ms']['p99']:.1f} ms"
                for name, m in s.methods.items()
            )
        lines.append(
            f"| {s.concurrency}{mark} | {s.rps:.1f} | {_fmt(s.p50_ms, 2)} | {_fmt(s.p95_ms, 2)} "
            f"| {_fmt(s.p99_ms, 2)} | {s.error_rate:.1%} | {_fmt(s.server_cpu_ms_per_call, 3)} "
            f"| {_fmt(s.server_cores, 2)} / {_fmt(s.generator_cores, 2)} / "
            f"{_fmt(s.other_cores, 2)} | {notes} |"
        )
    return lines
