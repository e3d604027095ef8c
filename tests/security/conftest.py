"""Shared fixtures for the sso.security tests: real keys on disk, real hashers."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from security_test_helpers import NOW

from sso.config import PasswordSettings
from sso.security import keys
from sso.security.keys import KeyRing
from sso.security.passwords import Argon2PasswordHasher


@pytest.fixture(scope="session")
def multi_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """active ES256, next EdDSA, retired RS256: every algorithm in one set."""
    directory = tmp_path_factory.mktemp("multi-keys")
    keys.ensure(directory, "RS256", now=NOW - timedelta(days=2))
    keys.add_next(directory, "ES256", now=NOW - timedelta(days=1))
    keys.rotate(directory, "EdDSA", retire_after=timedelta(days=30), now=NOW - timedelta(hours=1))
    return directory


@pytest.fixture(scope="session")
def multi_ring(multi_dir: Path) -> KeyRing:
    return KeyRing.load(multi_dir)


@pytest.fixture
def fast_settings() -> PasswordSettings:
    return PasswordSettings(memory_kib=8192, time_cost=1, parallelism=1, workers=2, max_queue=16)


@pytest.fixture
def fast_hasher(fast_settings: PasswordSettings) -> Iterator[Argon2PasswordHasher]:
    hasher = Argon2PasswordHasher(fast_settings)
    yield hasher
    hasher.close()
