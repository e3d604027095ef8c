"""Building a database of the Go SSO service (its exact schema) for the import tests.

The hashes are what Go's `bcrypt.GenerateFromPassword(p, bcrypt.DefaultCost)`
stores: cost 10 with the `$2a$` prefix. Python's bcrypt writes `$2b$` (the same
algorithm, the prefix of the fixed OpenBSD version), so the prefix is rewritten
as Go writes it; `hash_go(..., prefix="$2b$")` keeps the other one.
"""

from __future__ import annotations

import functools
import sqlite3
from collections.abc import Iterable
from pathlib import Path

import bcrypt

# The Go service's schema, verbatim.
SCHEMA = """
CREATE TABLE IF NOT EXISTS users (
    id INTEGER PRIMARY KEY,
    email TEXT NOT NULL UNIQUE,
    pass_hash BLOB NOT NULL,
    is_admin BOOLEAN NOT NULL DEFAULT FALSE
);
CREATE INDEX IF NOT EXISTS idx_email ON users (email);
CREATE TABLE IF NOT EXISTS apps (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    secret TEXT NOT NULL UNIQUE
);
"""

GO_COST = 10


@functools.cache
def hash_go(password: str, *, prefix: str = "$2a$", cost: int = GO_COST) -> bytes:
    """A bcrypt hash as the Go service stored it (cached: cost 10 takes ~50 ms)."""
    hashed = bcrypt.hashpw(password.encode("utf-8"), bcrypt.gensalt(cost))
    assert hashed.startswith(b"$2b$")
    return prefix.encode() + hashed[4:]


def create(path: Path) -> Path:
    with sqlite3.connect(path) as conn:
        conn.executescript(SCHEMA)
    return path


def add_users(path: Path, rows: Iterable[tuple[int, str, bytes | str, bool]]) -> None:
    with sqlite3.connect(path) as conn:
        conn.executemany(
            "INSERT INTO users (id, email, pass_hash, is_admin) VALUES (?, ?, ?, ?)", rows
        )


def add_apps(path: Path, rows: Iterable[tuple[int, str, str]]) -> None:
    with sqlite3.connect(path) as conn:
        conn.executemany("INSERT INTO apps (id, name, secret) VALUES (?, ?, ?)", rows)


def execute(path: Path, sql: str, params: tuple[object, ...] = ()) -> None:
    with sqlite3.connect(path) as conn:
        conn.execute(sql, params)
