"""argon2id password hashing off the event loop, with a bounded queue.

Why this module exists: every password check costs ~20-25 ms of CPU and ~19 MiB
of RAM (OWASP parameters m=19456 KiB, t=2, p=1). Run on the event loop it would
stall every other RPC; run without a bound, a login flood would queue without
limit and exhaust memory (checklist A5, A6). argon2-cffi releases the GIL, so a
thread pool of `workers` threads uses the cores like a process pool would
(PERFORMANCE_NOTES.md), and at most `workers` hashes run while at most
`max_queue` wait; anything beyond is refused at once with `Overloaded`
(RESOURCE_EXHAUSTED), rather than letting latency grow.

Passwords are normalised to NFKC before hashing and verifying (NIST 800-63B
§5.1.1.2, checklist A3), so a fullwidth "pass" (U+FF50 ...) and the ASCII
"pass" are the same secret; nothing else is changed (no truncation, no case
change). Length limits belong to `sso.security.policy`; this class only
refuses absurd inputs (more than `HARD_MAX_CHARS` code points) as a second
line of defence, without hashing.

Legacy bcrypt hashes (issue 9: users imported from the Go SSO service, whose
`bcrypt.GenerateFromPassword` wrote `$2a$` cost-10 hashes) are verified with the
`bcrypt` package in the same bounded pool (it releases the GIL too), against the
password exactly as received: the Go service hashed the raw UTF-8 bytes, without
NFKC. bcrypt only reads the first 72 bytes, so a longer password is refused
without a bcrypt call (checklist A2: P and P[:72]+"x" must never both verify);
Go's bcrypt refuses such passwords at hash time, so no legacy user has one. The
refusal still spends one dummy argon2 verify, so its timing says nothing. A
bcrypt hash always `needs_rehash`: the login that verifies it stores argon2id.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import os
import secrets
import threading
import time
import unicodedata
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TypeVar

import argon2
import bcrypt
from argon2.exceptions import InvalidHashError, VerificationError

from sso.config import PasswordSettings
from sso.errors import InvalidArgument, Overloaded

__all__ = [
    "BCRYPT_MAX_BYTES",
    "BCRYPT_PREFIXES",
    "HARD_MAX_CHARS",
    "SALT_BYTES",
    "Argon2PasswordHasher",
    "is_bcrypt_hash",
]

T = TypeVar("T")

# The largest `PasswordSettings.max_length` allows; longer inputs never reach argon2.
HARD_MAX_CHARS = 1024
SALT_BYTES = 16
HASH_BYTES = 32
# bcrypt reads at most 72 bytes of the password; the prefixes every implementation writes.
BCRYPT_MAX_BYTES = 72
BCRYPT_PREFIXES = ("$2a$", "$2b$", "$2y$")

# Called after every computation with the operation ("hash", "verify",
# "dummy_verify", "bcrypt_verify") and the wall time in seconds: a hook for metrics.
Observer = Callable[[str, float], None]


def _lower_priority(nice: int) -> None:
    """Make the calling hashing thread yield the CPU to the event loop.

    On Linux a nice value belongs to a thread, not the process, so this leaves
    the event loop's thread at its priority: when hashes saturate the cores, the
    loop still answers health checks and cheap RPCs promptly, and the hashes get
    whatever the loop leaves (as much as before when it is idle).
    """
    if nice <= 0 or not hasattr(os, "setpriority"):
        return
    with contextlib.suppress(OSError):  # never fatal: only a scheduling preference
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), nice)


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode("ascii").rstrip("=")


def is_bcrypt_hash(password_hash: str) -> bool:
    """True for a `$2a$`/`$2b$`/`$2y$` string (the Go service's legacy hashes)."""
    return password_hash.startswith(BCRYPT_PREFIXES)


class Argon2PasswordHasher:
    """The `PasswordHasher` port: argon2id PHC strings, computed in worker threads.

    `calls` counts hash computations (hash, verify, dummy verify, bcrypt verify) so tests
    and metrics can prove that a rejected input cost nothing.
    """

    def __init__(
        self,
        settings: PasswordSettings,
        *,
        observer: Observer | None = None,
        normalize: bool = True,
        on_legacy_verified: Callable[[], None] | None = None,
    ) -> None:
        self._settings = settings
        self._hasher = argon2.PasswordHasher(
            time_cost=settings.time_cost,
            memory_cost=settings.memory_kib,
            parallelism=settings.parallelism,
            hash_len=HASH_BYTES,
            salt_len=SALT_BYTES,
            type=argon2.Type.ID,
        )
        self._normalize = normalize
        self._observer = observer
        # Called (on the event loop) after a bcrypt hash verified: the caller rehashes it.
        self._on_legacy_verified = on_legacy_verified
        self._capacity = settings.workers + settings.max_queue
        self._pending = 0
        self._lock = threading.Lock()
        self._executor = ThreadPoolExecutor(
            max_workers=settings.workers,
            thread_name_prefix="argon2",
            initializer=_lower_priority,
            initargs=(settings.hasher_nice,),
        )
        # A well-formed hash at the current parameters whose password nobody knows:
        # verifying against it costs exactly what a real verify costs.
        self._dummy_hash = (
            f"$argon2id$v={argon2.low_level.ARGON2_VERSION}"
            f"$m={settings.memory_kib},t={settings.time_cost},p={settings.parallelism}"
            f"${_b64(secrets.token_bytes(SALT_BYTES))}${_b64(secrets.token_bytes(HASH_BYTES))}"
        )
        self.calls = 0

    @property
    def pending(self) -> int:
        """Hash computations running or waiting right now."""
        return self._pending

    def close(self) -> None:
        """Stop the worker threads (waiting jobs are cancelled)."""
        self._executor.shutdown(wait=False, cancel_futures=True)

    async def hash(self, password: str) -> str:
        if len(password) > HARD_MAX_CHARS:
            raise InvalidArgument("password is too long", reason="PASSWORD_TOO_LONG")
        secret = self._prepare(password)
        try:
            secret.encode("utf-8")
        except UnicodeEncodeError:
            raise InvalidArgument(
                "password contains invalid characters", reason="PASSWORD_INVALID"
            ) from None
        return await self._submit("hash", self._hasher.hash, secret)

    async def verify(self, password_hash: str, password: str) -> bool:
        """True only when `password` matches; False for a mismatch or any bad input."""
        if not isinstance(password_hash, str) or not isinstance(password, str):
            return False
        if len(password) > HARD_MAX_CHARS:
            return False
        if is_bcrypt_hash(password_hash):
            return await self._verify_bcrypt(password_hash, password)
        if not password_hash.startswith("$argon2"):
            return False
        return await self._submit("verify", self._verify_sync, password_hash, password)

    async def _verify_bcrypt(self, password_hash: str, password: str) -> bool:
        try:
            secret = password.encode("utf-8")  # as received: the Go service did not normalise
        except UnicodeEncodeError:
            secret = b""
        if not secret or len(secret) > BCRYPT_MAX_BYTES:
            # bcrypt would ignore the bytes past 72 (or refuse); spend a check's time anyway.
            await self.dummy_verify(password)
            return False
        ok = await self._submit("bcrypt_verify", _bcrypt_check, password_hash, secret)
        if ok and self._on_legacy_verified is not None:
            self._on_legacy_verified()
        return ok

    async def dummy_verify(self, password: str) -> None:
        """Spend the time of one real verify (for unknown users: timing parity, B1)."""
        candidate = password if len(password) <= HARD_MAX_CHARS else ""
        await self._submit("dummy_verify", self._verify_sync, self._dummy_hash, candidate)

    def needs_rehash(self, password_hash: str) -> bool:
        """True when the hash was made with other parameters (or cannot be parsed).

        Always True for a legacy bcrypt hash: it is replaced by argon2id at login.
        """
        if is_bcrypt_hash(password_hash):
            return True
        try:
            return self._hasher.check_needs_rehash(password_hash)
        except (InvalidHashError, ValueError, TypeError):
            return True

    def _prepare(self, password: str) -> str:
        return unicodedata.normalize("NFKC", password) if self._normalize else password

    def _verify_sync(self, password_hash: str, password: str) -> bool:
        try:
            return self._hasher.verify(password_hash, self._prepare(password))
        except (VerificationError, InvalidHashError, ValueError, TypeError):
            # VerifyMismatchError is a VerificationError; UnicodeEncodeError a ValueError.
            return False

    async def _submit(self, op: str, fn: Callable[..., T], *args: str | bytes) -> T:
        with self._lock:
            if self._pending >= self._capacity:
                raise Overloaded(retry_after=1.0)
            self._pending += 1
            self.calls += 1
        try:
            future: Future[T] = self._executor.submit(self._timed, op, fn, *args)
        except BaseException:
            self._release(None)
            raise
        # Released when the job really ends (or is cancelled while queued), not when
        # the awaiting coroutine is cancelled: the bound counts threads' real work.
        future.add_done_callback(self._release)
        return await asyncio.wrap_future(future)

    def _release(self, _future: object) -> None:
        with self._lock:
            self._pending -= 1

    def _timed(self, op: str, fn: Callable[..., T], *args: str | bytes) -> T:
        started = time.perf_counter()
        try:
            return fn(*args)
        finally:
            if self._observer is not None:
                self._observer(op, time.perf_counter() - started)


def _bcrypt_check(password_hash: str, secret: bytes) -> bool:
    """bcrypt's own constant-time comparison; False for a malformed hash."""
    try:
        return bcrypt.checkpw(secret, password_hash.encode("ascii"))
    except (ValueError, TypeError, UnicodeEncodeError):
        return False
