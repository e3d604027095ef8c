"""Legacy bcrypt hashes at login: verified exactly, never truncated, off the event loop.

Hashes are made like the Go service made them (cost 10, `$2a$`), see legacy_db.py.
"""

from __future__ import annotations

import asyncio
import statistics
import time

from legacy_db import hash_go

from sso.config import PasswordSettings
from sso.errors import Overloaded
from sso.security.passwords import Argon2PasswordHasher

PASSWORD = "correct horse battery staple"


def hasher(**kw: int) -> Argon2PasswordHasher:
    params = {"memory_kib": 8192, "time_cost": 1, "workers": 2, "max_queue": 64} | kw
    return Argon2PasswordHasher(PasswordSettings(**params))


async def test_go_and_python_prefixes_verify_and_need_rehash() -> None:
    h = hasher()
    try:
        for prefix in ("$2a$", "$2b$", "$2y$"):
            stored = hash_go(PASSWORD, prefix=prefix).decode()
            assert stored.startswith(prefix + "10$")
            assert await h.verify(stored, PASSWORD)
            assert not await h.verify(stored, PASSWORD + " ")
            assert not await h.verify(stored, PASSWORD.upper())
            assert h.needs_rehash(stored)
        # A fresh argon2id hash of the same password does not need a rehash.
        assert not h.needs_rehash(await h.hash(PASSWORD))
        # Malformed bcrypt strings are a mismatch, not an error.
        assert not await h.verify("$2a$10$tooshort", PASSWORD)
    finally:
        h.close()


async def test_72_byte_limit_never_truncates() -> None:
    """A2: P and P[:72]+"x" must never both verify (bcrypt ignores bytes past 72)."""
    h = hasher()
    try:
        p72 = "p" * 60 + "twelve bytes"  # exactly 72 bytes
        assert len(p72.encode()) == 72
        stored = hash_go(p72).decode()
        assert await h.verify(stored, p72)
        assert not await h.verify(stored, p72 + "x")  # bcrypt itself would say yes
        assert not await h.verify(stored, p72[:71])
        # Multi-byte: 24 x "é€" style characters pass 72 bytes while < 72 code points.
        long_utf8 = "ü" * 37  # 74 bytes, 37 code points
        assert not await h.verify(hash_go(long_utf8[:36]).decode(), long_utf8)
        # The refusal still costs a (dummy argon2) check: its timing says nothing.
        before = h.calls
        assert not await h.verify(stored, "y" * 100)
        assert h.calls == before + 1
    finally:
        h.close()


async def test_password_is_checked_as_received_not_nfkc() -> None:
    """The Go service hashed raw UTF-8; a fullwidth password is not its ASCII twin there."""
    h = hasher()
    try:
        fullwidth = "".join(
            chr(0xFF00 + ord(c) - 0x20) if c != " " else c for c in "password password"
        )
        stored = hash_go(fullwidth).decode()
        assert await h.verify(stored, fullwidth)
        assert not await h.verify(stored, "password password")
        # After the rehash (argon2id, NFKC) both spellings are one secret, as for every user.
        rehashed = await h.hash(fullwidth)
        assert await h.verify(rehashed, "password password")
    finally:
        h.close()


async def test_bcrypt_runs_in_the_bounded_pool_off_the_loop() -> None:
    h = hasher(workers=2, max_queue=4)
    stored = hash_go(PASSWORD).decode()
    try:
        # The bound counts bcrypt like argon2: 2 running + 4 queued, the rest refused.
        results = await asyncio.gather(
            *(h.verify(stored, PASSWORD) for _ in range(10)), return_exceptions=True
        )
        assert sum(r is True for r in results) == 6
        assert sum(isinstance(r, Overloaded) for r in results) == 4
        # One check alone, median of 3 (~50 ms at cost 10).
        singles = []
        for _ in range(3):
            t0 = time.perf_counter()
            assert await h.verify(stored, PASSWORD)
            singles.append(time.perf_counter() - t0)
        single = statistics.median(singles)
        # While 6 checks run on 2 threads, the loop keeps ticking.
        gaps: list[float] = []

        async def ticker(stop: asyncio.Event) -> None:
            last = time.perf_counter()
            while not stop.is_set():
                await asyncio.sleep(0.005)
                now = time.perf_counter()
                gaps.append(now - last)
                last = now

        stop = asyncio.Event()
        tick = asyncio.create_task(ticker(stop))
        assert all(await asyncio.gather(*(h.verify(stored, PASSWORD) for _ in range(6))))
        stop.set()
        await tick
        # Checks run on the loop would make every gap at least one check long; in the
        # pool the median gap stays near the 5 ms sleep.
        assert len(gaps) >= 3
        assert statistics.median(gaps) < single / 2, (statistics.median(gaps), single)
    finally:
        h.close()
