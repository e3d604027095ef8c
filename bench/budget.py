"""What a throughput target leaves for the service's own work, from one run's own figures.

Why this module exists: the targets are req/s ratios (Login >= 90% of raw
argon2, ValidateToken >= 60% of a bare gRPC echo, ...) measured on one machine
whose cores also run PostgreSQL, Redis and the load generator. At the target
rate those cores must pay, for every call, the datastores' and the generator's
CPU (measured in the scenario's own windows) and the work the ceiling itself
does (the hash for Login, a bare gRPC call for ValidateToken and Refresh).
What remains is the CPU the target allows for everything the service adds:

    allowed = cores / (target x ceiling req/s)       machine CPU per call at the target
    left    = allowed - outside - ceiling's CPU/call  for the service's own work
    used    = scenario's server CPU/call - ceiling's  what the service adds today

A negative `left` means no change to the service can meet that target on this
machine: only a different machine layout (datastores or generator on other
cores) or a different target can. The figures are estimates with the run's
noise (5-15% from run to run), and they assume the datastores' and
generator's CPU per call stay as measured when the rate changes.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # bench.run imports this module to render its report
    from bench.run import Row


@dataclass(frozen=True)
class Budget:
    scenario: str
    ceiling: str
    target: float
    allowed_ms: float
    outside_ms: float
    ceiling_ms: float
    used_ms: float

    @property
    def left_ms(self) -> float:
        return self.allowed_ms - self.outside_ms - self.ceiling_ms

    @property
    def fits(self) -> bool:
        return self.used_ms <= self.left_ms


def budget(row: Row, ceiling: Row, target: float, cores: int) -> Budget | None:
    """The budget of `row` at `target` x `ceiling`; None when a figure is missing."""
    rps, ceiling_rps = row.result.rps, ceiling.result.rps
    usage = row.cpu
    if not (rps and ceiling_rps and usage and target and cores):
        return None
    if row.server_cpu_ms_per_call is None or ceiling.server_cpu_ms_per_call is None:
        return None
    return Budget(
        scenario=row.scenario,
        ceiling=ceiling.scenario,
        target=target,
        allowed_ms=cores * 1000 / (target * ceiling_rps),
        outside_ms=(usage.generator + usage.datastores) * 1000 / rps,
        ceiling_ms=ceiling.server_cpu_ms_per_call,
        used_ms=row.server_cpu_ms_per_call - ceiling.server_cpu_ms_per_call,
    )


def budgets(
    rows: Iterable[Row], targets: Sequence[Mapping[str, float]], cores: int
) -> list[Budget]:
    """Every judged row's budget at each set of targets that names it."""
    by_name = {r.scenario: r for r in rows}
    found: list[Budget] = []
    for row in by_name.values():
        ceiling = by_name.get(row.ceiling or "")
        if ceiling is None:
            continue
        for table in targets:
            if row.scenario in table:
                b = budget(row, ceiling, table[row.scenario], cores)
                if b is not None:
                    found.append(b)
    return found


def render(found: Sequence[Budget], cores: int) -> list[str]:
    """Markdown lines: one table row per (scenario, target)."""
    if not found:
        return []
    lines = [
        "",
        f"What each target leaves for the service's own work on these {cores} cores "
        "(`bench/budget.py`): CPU per call the target allows, minus what the generator "
        "and PostgreSQL + Redis spend per call and the ceiling's own work per call.",
        "",
        "| scenario | target | allowed ms/call | generator + PG/Redis | ceiling's work "
        "| left for the service | the service adds now | |",
        "|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    for b in found:
        verdict = "fits" if b.fits else "over"
        if b.left_ms <= 0:
            verdict = "out of reach on this machine"
        lines.append(
            f"| {b.scenario} | {b.target:.0%} | {b.allowed_ms:.3f} | {b.outside_ms:.3f} "
            f"| {b.ceiling_ms:.3f} | {b.left_ms:.3f} | {b.used_ms:.3f} | {verdict} |"
        )
    return lines
