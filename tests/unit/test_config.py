"""Configuration comes from SSO_* variables (nested with __) and from a secrets directory."""

from __future__ import annotations

import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pytest
from pydantic import ValidationError

from sso.config import Settings


def test_nested_environment_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SSO_DATABASE__POOL_SIZE", "7")
    monkeypatch.setenv("SSO_TOKENS__ACCESS_TTL", "PT10M")
    monkeypatch.setenv("SSO_REDIS__URL", "redis://:hunter2hunter2@127.0.0.1:6379/0")
    monkeypatch.setenv("SSO_DATABASE__URL", "postgresql+asyncpg://sso:pw@127.0.0.1/sso")
    settings = Settings()
    assert settings.database.pool_size == 7
    assert settings.tokens.access_ttl == timedelta(minutes=10)
    assert settings.embedded is False
    # Secrets never print.
    assert "hunter2" not in repr(settings) and "pw@" not in repr(settings)


def test_defaults_are_embedded(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("SSO_DATABASE__URL", "SSO_REDIS__URL"):
        monkeypatch.delenv(name, raising=False)
    settings = Settings()
    assert settings.embedded and settings.database.is_sqlite
    assert settings.passwords.memory_kib == 19456 and settings.passwords.time_cost == 2
    assert settings.tokens.access_ttl == timedelta(minutes=5)


def test_home_moves_all_embedded_state(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """SSO_HOME moves the SQLite file and the key set along with the data key (and outbox)."""
    for name in ("SSO_DATABASE__URL", "SSO_REDIS__URL", "SSO_KEYS__DIR"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("SSO_HOME", str(tmp_path / "state"))
    settings = Settings()
    assert settings.database.url.get_secret_value() == (
        f"sqlite+aiosqlite:///{tmp_path}/state/sso.db"
    )
    assert settings.keys.dir == tmp_path / "state" / "keys"
    # What is configured itself stays where it was put.
    monkeypatch.setenv("SSO_KEYS__DIR", str(tmp_path / "elsewhere"))
    monkeypatch.setenv("SSO_DATABASE__URL", "postgresql+asyncpg://sso@127.0.0.1/sso")
    settings = Settings()
    assert settings.keys.dir == tmp_path / "elsewhere"
    assert settings.database.url.get_secret_value() == "postgresql+asyncpg://sso@127.0.0.1/sso"
    monkeypatch.delenv("SSO_HOME")
    monkeypatch.delenv("SSO_KEYS__DIR")
    monkeypatch.delenv("SSO_DATABASE__URL")
    assert Settings().keys.dir == Path(".sso/keys")


def test_bounds_are_enforced(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SSO_TOKENS__REFRESH_GRACE", "PT30S")
    with pytest.raises(ValidationError):
        Settings()


def test_secrets_directory(tmp_path: Path) -> None:
    """As Kubernetes mounts a Secret: one file per setting, read at import time."""
    (tmp_path / "sso_data_key").write_text("A" * 43)
    (tmp_path / "sso_database").write_text('{"url": "postgresql+asyncpg://u:filepw@db/sso"}')
    code = (
        "from sso.config import Settings; s = Settings(); "
        "print(s.data_key.get_secret_value()[:3], s.database.url.get_secret_value().split(':')[2])"
    )
    env = {"SSO_SECRETS_DIR": str(tmp_path), "PATH": "/usr/bin:/bin"}
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    ).stdout
    assert out.split() == ["AAA", "filepw@db/sso"]
