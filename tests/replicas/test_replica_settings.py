"""`SSO_DATABASE__REPLICA_URLS` parsing and the lag classification (no server needed)."""

from __future__ import annotations

import math

import pytest

from sso.config import Settings
from sso.storage.replicas import classify

URL = "postgresql+asyncpg://sso:s3cret@db-ro.ns.svc:5432/sso"


def test_replica_urls_json_list_bare_url_or_empty(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SSO_DATABASE__REPLICA_URLS", f'["{URL}", "{URL}2"]')
    assert [u.get_secret_value() for u in Settings().database.replica_urls] == [URL, URL + "2"]
    # What the operator's Secret holds under `replica-dsn`: one bare URL.
    monkeypatch.setenv("SSO_DATABASE__REPLICA_URLS", URL)
    settings = Settings()
    assert [u.get_secret_value() for u in settings.database.replica_urls] == [URL]
    assert "s3cret" not in repr(settings)  # SecretStr: never printed
    monkeypatch.setenv("SSO_DATABASE__REPLICA_URLS", "")
    assert Settings().database.replica_urls == []


def test_classify() -> None:
    assert classify(True, 0.0, 5.0) == (True, 0.0)
    assert classify(True, 4.9, 5.0) == (True, 4.9)
    assert classify(True, 5.1, 5.0) == (False, 5.1)
    assert classify(True, -0.2, 5.0) == (True, 0.0)  # clock skew between the two servers
    usable, lag = classify(True, None, 5.0)  # WAL to replay, nothing replayed yet
    assert not usable and math.isinf(lag)
    assert classify(False, 0.0, 5.0)[0] is False  # promoted: not a replica any more
