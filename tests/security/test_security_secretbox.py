"""SecretBox (AES-256-GCM) and the data key: round trip, tampering, wrong key, loading."""

from __future__ import annotations

import base64
import stat
from pathlib import Path

import pytest
from pydantic import SecretStr

from sso.config import DatabaseSettings, Settings
from sso.errors import SSOError
from sso.security.secretbox import (
    DataKeyError,
    SecretBox,
    SecretBoxError,
    generate_data_key,
    load_data_key,
)

KEY = bytes(range(32))


def test_round_trip_and_format() -> None:
    box = SecretBox(KEY)
    for secret in ("", "app-secret", "ünïcödé 😀", "x" * 10_000):
        sealed = box.encrypt(secret)
        version, nonce, _ = sealed.split(".")
        assert version == "v1"
        assert len(base64.urlsafe_b64decode(nonce + "=" * (-len(nonce) % 4))) == 12
        assert "=" not in sealed and "+" not in sealed and "/" not in sealed
        assert box.decrypt(sealed) == secret
        assert secret == "" or secret not in sealed
    assert box.encrypt("same") != box.encrypt("same")  # fresh nonce each time


def flip(text: str, index: int) -> str:
    replacement = "A" if text[index] != "A" else "B"
    return text[:index] + replacement + text[index + 1 :]


def test_tampering_and_wrong_key_fail_generically() -> None:
    box = SecretBox(KEY)
    sealed = box.encrypt("app-secret")
    version, nonce, body = sealed.split(".")
    tampered = [
        flip(sealed, len(sealed) - 5),  # not the last char: its low bits may be padding
        f"{version}.{flip(nonce, 0)}.{body}",
        f"{version}.{nonce}.{flip(body, 3)}",
        f"v2.{nonce}.{body}",
        f"{version}.{nonce}",
        f"{version}.{nonce}.{body}.extra",
        f"{version}.{nonce[:-2]}.{body}",
        f"{version}.{nonce}.{body[:10]}",
        "",
        "garbage",
        "v1.!!!.???",
    ]
    for text in tampered:
        with pytest.raises(SecretBoxError) as caught:
            box.decrypt(text)
        assert caught.value.message == "a stored secret could not be decrypted"
        assert isinstance(caught.value, SSOError)
    with pytest.raises(SecretBoxError):
        SecretBox(bytes(32)).decrypt(sealed)
    with pytest.raises(SecretBoxError):
        SecretBox.from_data_key(KEY).decrypt(sealed)  # derived key differs from the raw one


def test_key_size_enforced() -> None:
    for bad in (b"", bytes(16), bytes(31), bytes(33)):
        with pytest.raises(ValueError):
            SecretBox(bad)


def test_generate_data_key() -> None:
    keys = {generate_data_key() for _ in range(100)}
    assert len(keys) == 100
    for key in keys:
        assert len(key) == 43
        assert len(base64.urlsafe_b64decode(key + "=")) == 32


def embedded(home: Path, **kwargs: object) -> Settings:
    db = DatabaseSettings(url=SecretStr(f"sqlite+aiosqlite:///{home}/sso.db"))
    return Settings(home=home, database=db, **kwargs)  # type: ignore[arg-type]


def test_data_key_from_settings(tmp_path: Path) -> None:
    key = generate_data_key()
    settings = embedded(tmp_path, data_key=SecretStr(key))
    assert load_data_key(settings) == base64.urlsafe_b64decode(key + "=")
    assert not (tmp_path / "data.key").exists()
    padded = embedded(tmp_path, data_key=SecretStr(key + "="))
    assert load_data_key(padded) == load_data_key(settings)
    for bad in ("short", "!" * 43, base64.urlsafe_b64encode(bytes(16)).decode()):
        with pytest.raises(DataKeyError):
            load_data_key(embedded(tmp_path, data_key=SecretStr(bad)))


def test_embedded_mode_creates_and_reuses_data_key(tmp_path: Path) -> None:
    home = tmp_path / "home"
    settings = embedded(home)
    assert settings.embedded
    first = load_data_key(settings)
    path = home / "data.key"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert len(first) == 32
    assert load_data_key(settings) == first
    assert [p.name for p in home.iterdir()] == ["data.key"]
    box = SecretBox.from_data_key(first)
    assert SecretBox.from_data_key(load_data_key(settings)).decrypt(box.encrypt("s")) == "s"


def test_missing_data_key_outside_embedded_mode_is_a_config_error(tmp_path: Path) -> None:
    db = DatabaseSettings(url=SecretStr("postgresql+asyncpg://u:p@db/sso"))
    settings = Settings(home=tmp_path, database=db)
    assert not settings.embedded
    with pytest.raises(DataKeyError) as caught:
        load_data_key(settings)
    assert "SSO_DATA_KEY" in caught.value.message
    assert not (tmp_path / "data.key").exists()
