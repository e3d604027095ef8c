"""B1: unknown user, wrong password and locked account are indistinguishable to the caller.

Same status, message bytes and trailing metadata; median latencies within 5 ms,
at the real argon2id cost (m=19456 KiB, t=2), where a dummy hash that cost less
than a real one would show. A locked account runs no hash at all: it waits as
long as recent checks took.
"""

from __future__ import annotations

import secrets
from pathlib import Path

from hardening_helpers import (
    REAL_ARGON2,
    WRONG,
    add_users,
    hash_calls,
    login,
    median_ms,
    settings,
    trailers,
)

ROUNDS = 200


def ks_statistic(a: list[float], b: list[float]) -> float:
    """Two-sample Kolmogorov-Smirnov D (reported, not asserted)."""
    points = sorted(set(a) | set(b))
    sa, sb = sorted(a), sorted(b)
    import bisect

    return max(
        abs(bisect.bisect_right(sa, x) / len(sa) - bisect.bisect_right(sb, x) / len(sb))
        for x in points
    )


async def test_b1_same_answer_and_timing_for_unknown_wrong_and_locked(
    serve, tmp_path: Path, pg_url: str, redis_server: str
) -> None:
    running = await serve(
        settings(
            tmp_path,
            pg_url,
            redis_server,
            ratelimit={"login_per_email": 100_000},
            lockout={"base_delay": "PT1H", "max_delay": "PT1H"},
            passwords={**REAL_ARGON2, "workers": 2},
        )
    )
    wrong_accounts = [f"w{i}@example.com" for i in range(ROUNDS // 4 + 10)]
    await add_users(running, [*wrong_accounts, "locked@example.com"])
    for _ in range(5):
        await login(running, "locked@example.com", WRONG)
    attempts = running.container.auth.guard.attempts
    assert attempts is not None

    uses = dict.fromkeys(wrong_accounts, 0)

    def wrong_email() -> str:  # at most 4 failures per account: none of them locks
        email = next(e for e, n in uses.items() if n < 4)
        uses[email] += 1
        return email

    cases = {
        "unknown": lambda i: login(running, f"nobody{i}@example.com", WRONG),
        "wrong": lambda i: login(running, wrong_email(), WRONG),
        "locked": lambda i: login(running, "locked@example.com", WRONG),
    }
    for i in range(10):  # warm-up, not measured
        for run in cases.values():
            await run(-i - 1)
    times: dict[str, list[float]] = {name: [] for name in cases}
    answers: set[tuple[str, str | None, tuple[object, ...]]] = set()
    locked_hashes = 0
    rng = secrets.SystemRandom()
    for i in range(ROUNDS):
        order = list(cases)
        rng.shuffle(order)
        for name in order:
            before = hash_calls(running)
            code, seconds, error = await cases[name](i)
            if name == "locked":
                locked_hashes += hash_calls(running) - before
            assert error is not None
            answers.add((code, error.details(), trailers(error)))
            times[name].append(seconds)
    medians = {name: round(median_ms(values), 2) for name, values in times.items()}
    ks = {
        "unknown-wrong": ks_statistic(times["unknown"], times["wrong"]),
        "locked-wrong": ks_statistic(times["locked"], times["wrong"]),
    }
    print(f"\nB1 medians (ms, {ROUNDS} each, argon2 m=19456 t=2): {medians}; KS D: {ks}")
    assert len(answers) == 1, answers  # identical code, message bytes and trailers
    assert next(iter(answers))[0] == "UNAUTHENTICATED"
    assert locked_hashes == 0
    assert max(medians.values()) - min(medians.values()) <= 5.0, medians
