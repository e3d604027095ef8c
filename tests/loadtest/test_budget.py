"""bench.budget: what a target leaves for the service, on the figures of the 28 November run.

The inputs are the `make bench` rows of that run (bench.run at 7674e43): req/s,
server CPU per call and the cores the generator and PostgreSQL + Redis used.
"""

from __future__ import annotations

import pytest

from bench import budget
from bench.loadgen import LoadResult
from bench.procs import CpuUsage
from bench.run import Row


def _row(
    name: str, rps: float, ms: float, gen: float, ds: float, ceiling: str | None = None
) -> Row:
    result = LoadResult("generator", rps, int(rps * 12), None, None)
    return Row(name, result, CpuUsage(1.0, gen, ds, 0.0, 2.0, 12.0), ms, ceiling)


ROWS = [
    _row("argon2", 102.8, 19.060, 0.0, 0.0),
    _row("echo", 8156.2, 0.166, 0.58, 0.0),
    _row("chain echo", 8517.9, 0.166, 0.48, 0.0),
    _row("Login", 70.2, 25.511, 0.05, 0.13, "argon2"),
    _row("ValidateToken", 5827.4, 0.257, 0.47, 0.0, "echo"),
    _row("Refresh", 1594.7, 0.921, 0.15, 0.34, "chain echo"),
]
ISSUE_2 = {"Login": 0.90, "ValidateToken": 0.60, "Refresh": 0.30}
ISSUE_8 = {"Login": 0.95, "ValidateToken": 0.70, "Refresh": 0.40}


def test_the_arithmetic() -> None:
    (login,) = budget.budgets(ROWS, [ISSUE_2], cores=2)[:1]
    assert login.scenario == "Login" and login.ceiling == "argon2"
    assert login.allowed_ms == pytest.approx(2000 / (0.9 * 102.8))  # 21.62 ms
    assert login.outside_ms == pytest.approx((0.05 + 0.13) * 1000 / 70.2)  # 2.56 ms
    assert login.ceiling_ms == 19.060
    assert login.used_ms == pytest.approx(25.511 - 19.060)
    assert login.left_ms == pytest.approx(login.allowed_ms - login.outside_ms - 19.060)


def test_verdicts_of_that_run() -> None:
    found = {(b.scenario, b.target): b for b in budget.budgets(ROWS, [ISSUE_2, ISSUE_8], 2)}
    assert len(found) == 6
    # Login: the hash, the datastores and the generator already take all of 90% and 95%.
    assert found["Login", 0.90].left_ms < 0 and found["Login", 0.95].left_ms < -1.0
    # Refresh at 40%: 0.11 ms left, less than the RS256 signature alone (0.21 ms).
    assert 0.1 < found["Refresh", 0.40].left_ms < 0.2 and not found["Refresh", 0.40].fits
    # ValidateToken fits 60% with room, and 70% narrowly.
    assert found["ValidateToken", 0.60].fits and found["ValidateToken", 0.70].fits
    lines = budget.render(list(found.values()), 2)
    assert sum(line.endswith("| out of reach on this machine |") for line in lines) == 2
    assert sum(line.endswith("| over |") for line in lines) == 2  # Refresh, both targets
    assert sum(line.endswith("| fits |") for line in lines) == 2


def test_missing_figures_give_no_budget() -> None:
    no_cpu = Row("Login", LoadResult("ghz", 70.0, 840, None, None), None, 25.0, "argon2")
    assert budget.budgets([ROWS[0], no_cpu], [ISSUE_2], 2) == []
    assert budget.render([], 2) == []
