"""C2 (progressive lockout with a fake clock) and the hard stop, on PostgreSQL and SQLite.

Driven through `AuthService.authenticate` (the code both Login APIs run) with the
durable counters in the real database; the clock is the service's, faked.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from hardening_helpers import PASSWORD, WRONG, FakeClock, add_users, settings
from sso_harness import Running

from sso.domain.limits import LockState
from sso.errors import Unauthenticated

EMAIL = "lock@example.com"
# Per-email limits would stop these loops first; C2 is about the account counter.
NO_EMAIL_LIMIT = {"login_per_email": 100_000, "login_per_ip": 100_000}


async def _start(serve, tmp_path: Path, db_url: str) -> tuple[Running, FakeClock, int]:
    running: Running = await serve(settings(tmp_path, db_url, ratelimit=NO_EMAIL_LIMIT))
    clock = FakeClock()
    running.container.auth.clock = clock
    await add_users(running, [EMAIL])
    user = await running.container.auth.users.get_by_email(EMAIL)
    assert user is not None
    return running, clock, user.id


async def _fail(running: Running) -> None:
    with pytest.raises(Unauthenticated):
        await running.container.auth.authenticate(EMAIL, WRONG)


async def _state(running: Running, user_id: int) -> LockState:
    attempts = running.container.auth.guard.attempts
    assert attempts is not None
    state = await attempts.state(user_id)
    assert state is not None
    return state


def _locked_for(state: LockState, clock: FakeClock) -> float:
    assert state.locked_until is not None
    return (state.locked_until - clock.now).total_seconds()


async def test_c2_progressive_lockout_schedule(serve, tmp_path: Path, db_url: str) -> None:
    running, clock, uid = await _start(serve, tmp_path, db_url)
    hasher = running.container.auth.hasher
    figures: dict[int, float] = {}
    for failure in range(1, 36):
        calls = hasher.calls  # type: ignore[attr-defined]
        await _fail(running)
        assert hasher.calls == calls + 1  # type: ignore[attr-defined]
        state = await _state(running, uid)
        assert state.failures == failure
        if failure < 5:
            assert state.locked_until is None
            continue
        figures[failure] = _locked_for(state, clock)
        # While locked: the same error, no hash, the counter does not move.
        clock.advance(figures[failure] - 1)
        calls = hasher.calls  # type: ignore[attr-defined]
        await _fail(running)
        assert hasher.calls == calls  # type: ignore[attr-defined]
        assert (await _state(running, uid)).failures == failure
        clock.advance(2)  # the lock is over
    assert figures[5] == 30 and figures[9] == 30
    assert figures[10] == 60 and figures[15] == 120 and figures[20] == 240
    assert figures[25] == 480 and figures[30] == 900 and figures[35] == 900  # capped at 15 min
    print(
        f"\nC2 lock after failure n (s): { {n: figures[n] for n in (5, 10, 15, 20, 25, 30, 35)} }"
    )

    # A success resets the count.
    user = await running.container.auth.authenticate(EMAIL, PASSWORD)
    assert user.email == EMAIL
    state = await _state(running, uid)
    assert (state.failures, state.locked_until, state.hard_locked) == (0, None, False)

    # A failure more than 12 h after the previous one starts at 1.
    for _ in range(3):
        await _fail(running)
    assert (await _state(running, uid)).failures == 3
    clock.advance(12 * 3600 + 1)
    await _fail(running)
    assert (await _state(running, uid)).failures == 1


async def test_hard_stop_at_100_until_unlocked(serve, tmp_path: Path, db_url: str) -> None:
    running, clock, uid = await _start(serve, tmp_path, db_url)
    for _ in range(100):
        await _fail(running)
        clock.advance(901)
    state = await _state(running, uid)
    assert state.failures == 100 and state.hard_locked
    clock.advance(30 * 86400)  # a month later: still locked, even for the right password
    calls = running.container.auth.hasher.calls  # type: ignore[attr-defined]
    with pytest.raises(Unauthenticated):
        await running.container.auth.authenticate(EMAIL, PASSWORD)
    assert running.container.auth.hasher.calls == calls  # type: ignore[attr-defined]
    assert await running.container.auth.unlock(uid, actor_id=None)
    assert (await running.container.auth.authenticate(EMAIL, PASSWORD)).id == uid
