"""Argon2PasswordHasher: format, salts, verify, rehash, bounded concurrency (A2, A5, A6, B1)."""

from __future__ import annotations

import asyncio
import os
import re
import threading
import time

import pytest

from sso.config import PasswordSettings
from sso.errors import InvalidArgument, Overloaded
from sso.security.passwords import HARD_MAX_CHARS, Argon2PasswordHasher

PHC = re.compile(r"^\$argon2id\$v=19\$m=(\d+),t=(\d+),p=1\$")


async def test_default_parameters_produce_owasp_phc_string() -> None:
    hasher = Argon2PasswordHasher(PasswordSettings())
    try:
        first = await hasher.hash("correct horse battery staple")
        second = await hasher.hash("correct horse battery staple")
    finally:
        hasher.close()
    match = PHC.match(first)
    assert match is not None
    memory, time_cost = int(match[1]), int(match[2])
    assert (memory, time_cost) == (19456, 2)
    assert memory * time_cost >= 19456 * 2
    # 16-byte salt: 22 base64 characters (no padding) in the 4th field.
    assert len(first.split("$")[4]) == 22
    assert first != second  # per-credential salt


async def test_verify_ok_bad_and_malformed(fast_hasher: Argon2PasswordHasher) -> None:
    stored = await fast_hasher.hash("pass word 😀 ünïcödé")
    assert await fast_hasher.verify(stored, "pass word 😀 ünïcödé")
    assert not await fast_hasher.verify(stored, "pass word 😀 unicode")
    assert not await fast_hasher.verify(stored, "Pass word 😀 ünïcödé")  # no case folding
    for broken in ("", "not a hash", "$argon2id$garbage", stored[:-5], "$2b$12$abc"):
        assert not await fast_hasher.verify(broken, "pass word 😀 ünïcödé")
    assert not await fast_hasher.verify(stored, "\ud800lone surrogate")


async def test_no_truncation(fast_hasher: Argon2PasswordHasher) -> None:
    password = "p" * 40 + "q" * 40 + "tail-part-1"  # 91 characters
    stored = await fast_hasher.hash(password)
    variant = password[:72] + "x"
    assert await fast_hasher.verify(stored, password)
    assert not await fast_hasher.verify(stored, variant)
    assert not await fast_hasher.verify(stored, password[:72])


@pytest.mark.parametrize("length", [64, 128])
async def test_long_passwords_round_trip(fast_hasher: Argon2PasswordHasher, length: int) -> None:
    password = ("Zq9!" * 40)[:length]
    stored = await fast_hasher.hash(password)
    assert await fast_hasher.verify(stored, password)
    assert not await fast_hasher.verify(stored, password[:-1])


async def test_nfkc_normalisation_is_applied(fast_hasher: Argon2PasswordHasher) -> None:
    stored = await fast_hasher.hash("password-example")
    fullwidth = "".join(chr(ord(c) + 0xFEE0) for c in "password") + "-example"
    assert await fast_hasher.verify(stored, fullwidth)


async def test_needs_rehash_after_parameter_bump(fast_settings: PasswordSettings) -> None:
    old = Argon2PasswordHasher(fast_settings)
    bumped = Argon2PasswordHasher(fast_settings.model_copy(update={"time_cost": 2}))
    try:
        stored = await old.hash("a long enough password")
        assert not old.needs_rehash(stored)
        assert bumped.needs_rehash(stored)
        assert await bumped.verify(stored, "a long enough password")  # old hashes still verify
        assert not bumped.needs_rehash(await bumped.hash("a long enough password"))
        assert bumped.needs_rehash("garbage")
    finally:
        old.close()
        bumped.close()


async def test_overloaded_when_workers_and_queue_are_full() -> None:
    # Slots free the instant a hash ends (from the worker thread), so each hash must outlast
    # the admission of all ten calls, even on a loaded machine: ~100 ms, not ~5 ms.
    settings = PasswordSettings(memory_kib=65536, time_cost=3, workers=1, max_queue=2)
    hasher = Argon2PasswordHasher(settings)
    try:
        results = await asyncio.gather(
            *(hasher.hash(f"password number {i}") for i in range(10)), return_exceptions=True
        )
        overloaded = [r for r in results if isinstance(r, Overloaded)]
        hashed = [r for r in results if isinstance(r, str)]
        assert len(hashed) == 3  # 1 running + 2 queued
        assert len(overloaded) == 7
        assert overloaded[0].reason == "OVERLOADED"
        assert overloaded[0].metadata["retry-after"] == "1"
        assert hasher.pending == 0
        assert hasher.calls == 3
        # Capacity comes back once the work is done.
        assert await hasher.verify(hashed[0], "password number 0")
    finally:
        hasher.close()


async def test_cancelled_waiters_keep_their_slot_until_the_thread_finishes() -> None:
    settings = PasswordSettings(memory_kib=65536, time_cost=2, workers=1, max_queue=0)
    hasher = Argon2PasswordHasher(settings)
    try:
        task = asyncio.create_task(hasher.hash("slow enough password"))
        await asyncio.sleep(0.005)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        if hasher.pending:  # the thread is still hashing: no new slot yet
            with pytest.raises(Overloaded):
                await hasher.hash("another password!")
        for _ in range(200):
            if hasher.pending == 0:
                break
            await asyncio.sleep(0.01)
        assert hasher.pending == 0
        assert isinstance(await hasher.hash("another password!"), str)
    finally:
        hasher.close()


async def test_hasher_refuses_absurd_input_without_argon2(
    fast_hasher: Argon2PasswordHasher,
) -> None:
    stored = await fast_hasher.hash("some password here")
    calls = fast_hasher.calls
    huge = "a" * (1 << 20)
    with pytest.raises(InvalidArgument):
        await fast_hasher.hash(huge)
    assert not await fast_hasher.verify(stored, huge)
    assert not await fast_hasher.verify(stored, "a" * (HARD_MAX_CHARS + 1))
    assert fast_hasher.calls == calls


async def test_dummy_verify_costs_a_real_verify() -> None:
    hasher = Argon2PasswordHasher(PasswordSettings(workers=1))
    try:
        stored = await hasher.hash("the real password")
        calls = hasher.calls

        async def timed(coro_factory: object) -> float:
            samples = []
            for _ in range(5):
                start = time.perf_counter()
                await coro_factory()  # type: ignore[operator]
                samples.append(time.perf_counter() - start)
            return sorted(samples)[2]

        real = await timed(lambda: hasher.verify(stored, "a wrong password"))
        dummy = await timed(lambda: hasher.dummy_verify("a wrong password"))
        assert hasher.calls == calls + 10
        assert 0.5 < dummy / real < 2.0, (real, dummy)
    finally:
        hasher.close()


async def test_observer_hook_sees_every_computation(fast_settings: PasswordSettings) -> None:
    seen: list[str] = []
    hasher = Argon2PasswordHasher(fast_settings, observer=lambda op, secs: seen.append(op))
    try:
        stored = await hasher.hash("observed password")
        await hasher.verify(stored, "observed password")
        await hasher.dummy_verify("x")
    finally:
        hasher.close()
    assert seen == ["hash", "verify", "dummy_verify"]


@pytest.mark.skipif(not hasattr(os, "getpriority"), reason="per-thread nice is a Linux feature")
@pytest.mark.parametrize("nice", [10, 0])
async def test_hashing_threads_yield_to_the_event_loop(nice: int) -> None:
    """The argon2 threads run at `hasher_nice`; the event loop's thread keeps its own."""
    before = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
    older = set(threading.enumerate())  # other hashers' threads may still be winding down
    settings = PasswordSettings(memory_kib=8192, time_cost=1, workers=2, hasher_nice=nice)
    hasher = Argon2PasswordHasher(settings)
    try:
        await asyncio.gather(*(hasher.hash("correct horse battery staple") for _ in range(4)))
        workers = [
            t for t in threading.enumerate() if t.name.startswith("argon2") and t not in older
        ]
        assert workers
        for thread in workers:
            assert thread.native_id is not None
            assert os.getpriority(os.PRIO_PROCESS, thread.native_id) == max(nice, before)
        assert os.getpriority(os.PRIO_PROCESS, threading.get_native_id()) == before
    finally:
        hasher.close()
