"""The signing-key directory in use: the reloading `KeyRing` and the writers.

Why this module exists: access tokens are signed with keys that rotate (DESIGN
§2, checklist F5). In production the key set is a Kubernetes Secret written by
the operator and mounted as a flat directory that changes by an atomic symlink
swap; in embedded mode the service makes its own (`ensure`). The format itself
lives in `sso.security.keyset` and is documented in docs/keys.md.

`KeyRing` holds the parsed key objects (each PEM parsed once: PyJWT re-parsing a
PEM string per call is ~60x slower), the JWK Set built from them, and a cheap
reload check (`maybe_reload`: a stat and a realpath when nothing changed) that
`watch` runs every few seconds. A broken new set is logged and the old one kept.

Writers (`ensure`, `add_next`, `rotate`) take a lock file, write PEMs first and
keyset.json last, each by temp file + fsync + rename, and delete PEMs no longer
listed only after that, so a reader never sees keyset.json naming a missing PEM.
"""

from __future__ import annotations

import asyncio
import fcntl
import hashlib
import json
import logging
import os
import secrets
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sso.security.keyset import (
    FORMAT_VERSION,
    KEYSET_FILE,
    KID_PATTERN,
    MAX_KID_LENGTH,
    Algorithm,
    KeyMeta,
    KeySet,
    KeySetError,
    PrivateKey,
    SigningKey,
    Stamp,
    State,
    generate_key,
    load_consistent,
    private_key_pem,
    read_keyset_json,
    stamp_of,
)

__all__ = [
    "KEYSET_FILE",
    "MAX_KID_LENGTH",
    "Algorithm",
    "KeyMeta",
    "KeyRing",
    "KeySet",
    "KeySetError",
    "SigningKey",
    "add_next",
    "ensure",
    "generate_key",
    "private_key_pem",
    "rotate",
]

log = logging.getLogger(__name__)

LOCK_FILE = ".keyset.lock"


def _now(now: datetime | None) -> datetime:
    return datetime.now(UTC) if now is None else now


class KeyRing:
    """The key set in use, swapped atomically when the directory changes."""

    def __init__(self, directory: Path, keyset: KeySet, stamp: Stamp, digest: bytes) -> None:
        self.directory = directory
        self._keyset = keyset
        self._stamp = stamp
        self._digest = digest
        self.reloads = 0

    @classmethod
    def load(cls, directory: Path | str) -> KeyRing:
        path = Path(directory)
        return cls(path, *load_consistent(path))

    @property
    def keyset(self) -> KeySet:
        return self._keyset

    @property
    def active(self) -> SigningKey:
        return self._keyset.active

    def get(self, kid: object) -> SigningKey | None:
        """The key named `kid`, an untrusted header value: a bounded dict lookup only."""
        if not isinstance(kid, str) or len(kid) > MAX_KID_LENGTH:
            return None
        return self._keyset.by_kid.get(kid)

    def jwks(self) -> dict[str, Any]:
        """The JWK Set: public halves of the active, next and retired keys."""
        return {"keys": [dict(jwk) for jwk in self._keyset.jwks["keys"]]}

    def maybe_reload(self) -> bool:
        """Swap in the directory's set if keyset.json changed; True when it did.

        Costs one stat() and one realpath() when nothing changed. A changed set
        that fails validation raises `KeySetError` and the old set stays in use.
        """
        path = self.directory / KEYSET_FILE
        stamp = stamp_of(path)
        if stamp == self._stamp:
            return False
        if hashlib.sha256(read_keyset_json(path)).digest() == self._digest:
            self._stamp = stamp  # touched or re-linked, same content
            return False
        keyset, stamp, digest = load_consistent(self.directory)
        self._keyset, self._stamp, self._digest = keyset, stamp, digest
        self.reloads += 1
        return True

    async def watch(self, interval: float) -> None:
        """Run `maybe_reload` every `interval` seconds until cancelled (never raises)."""
        last_error = ""
        while True:
            await asyncio.sleep(interval)
            try:
                if await asyncio.to_thread(self.maybe_reload):
                    log.info("signing keys reloaded", extra={"active_kid": self.active.kid})
                last_error = ""
            except Exception as exc:  # keep serving with the old set
                if str(exc) != last_error:
                    last_error = str(exc)
                    log.error("signing key set not reloaded: %s", last_error)


# ---------------------------------------------------------------- writers


def _write_atomic(path: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o600)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextmanager
def _locked(directory: Path) -> Iterator[None]:
    fd = os.open(directory / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _new_meta(alg: Algorithm, state: State, now: datetime) -> KeyMeta:
    kid = f"{now:%Y%m%d}-{alg.lower()}-{secrets.token_hex(4)}"
    return KeyMeta(kid, alg, state, now, activated_at=now if state == "active" else None)


def _write_set(directory: Path, metas: list[KeyMeta], new_keys: dict[str, PrivateKey]) -> None:
    """PEMs first, keyset.json last (the commit point), then drop unreferenced PEMs."""
    for kid, key in new_keys.items():
        _write_atomic(directory / f"{kid}.pem", private_key_pem(key))
    document = {"version": FORMAT_VERSION, "keys": [m.to_json() for m in metas]}
    _write_atomic(directory / KEYSET_FILE, (json.dumps(document, indent=2) + "\n").encode())
    keep = {m.kid for m in metas}
    for pem in directory.glob("*.pem"):
        if pem.stem not in keep and KID_PATTERN.fullmatch(pem.stem):
            pem.unlink(missing_ok=True)
    _fsync_dir(directory)


def ensure(directory: Path | str, alg: Algorithm, *, now: datetime | None = None) -> bool:
    """Create a set with one active key unless one exists; True when created."""
    path = Path(directory)
    if (path / KEYSET_FILE).exists():
        KeySet.load(path)  # validate: a broken set must not be papered over
        return False
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    with _locked(path):
        if (path / KEYSET_FILE).exists():  # another process won the race
            KeySet.load(path)
            return False
        meta = _new_meta(alg, "active", _now(now))
        _write_set(path, [meta], {meta.kid: generate_key(alg)})
    return True


def add_next(directory: Path | str, alg: Algorithm, *, now: datetime | None = None) -> KeyMeta:
    """Publish a `next` key (idempotent: an existing next key is returned as is)."""
    path = Path(directory)
    with _locked(path):
        current = KeySet.load(path)
        if current.next is not None:
            return current.next.meta
        meta = _new_meta(alg, "next", _now(now))
        _write_set(path, [*current.metas, meta], {meta.kid: generate_key(alg)})
    return meta


def rotate(
    directory: Path | str,
    alg: Algorithm,
    *,
    retire_after: timedelta,
    now: datetime | None = None,
) -> KeySet:
    """Promote next (or a new key) to active, retire the old one, publish a new next.

    Retired keys whose `retired_at + retire_after` has passed are removed; the
    key retired by this call never is. `alg` is used for keys created here; an
    existing next key is promoted whatever its algorithm.
    """
    path = Path(directory)
    when = _now(now)
    with _locked(path):
        current = KeySet.load(path)
        new_keys: dict[str, PrivateKey] = {}
        promoted = current.next.meta if current.next is not None else None
        if promoted is None:
            promoted = _new_meta(alg, "active", when)
            new_keys[promoted.kid] = generate_key(alg)
        metas: list[KeyMeta] = []
        for meta in current.metas:
            if meta.kid == promoted.kid:
                continue
            if meta.state == "active":
                meta = replace(meta, state="retired", retired_at=when)
            elif meta.retired_at is not None and meta.retired_at + retire_after <= when:
                continue
            metas.append(meta)
        upcoming = _new_meta(alg, "next", when)
        new_keys[upcoming.kid] = generate_key(alg)
        metas = [replace(promoted, state="active", activated_at=when), upcoming, *metas]
        _write_set(path, metas, new_keys)
        return KeySet.load(path)
