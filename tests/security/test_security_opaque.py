"""Opaque tokens and key derivation (D1, E7, decision 3)."""

from __future__ import annotations

import re

import pytest

from sso.security.opaque import (
    PURPOSE_REFRESH_SUCCESSOR,
    PURPOSE_SECRETBOX,
    derive_key,
    hash_token,
    new_refresh_token,
    new_session_id,
    successor,
)

URLSAFE = re.compile(r"[A-Za-z0-9_-]+")
DATA_KEY = bytes(range(32))


def test_refresh_tokens_unique_long_urlsafe() -> None:
    tokens = [new_refresh_token() for _ in range(100_000)]
    assert len(set(tokens)) == len(tokens)
    assert min(len(t) for t in tokens) >= 43
    assert all(URLSAFE.fullmatch(t) for t in tokens[:1000])


def test_session_ids() -> None:
    ids = [new_session_id() for _ in range(100_000)]
    assert len(set(ids)) == len(ids)
    assert min(len(i) for i in ids) >= 22  # 128 bits
    assert all(URLSAFE.fullmatch(i) for i in ids[:1000])


def test_hash_token() -> None:
    token = new_refresh_token()
    digest = hash_token(token)
    assert isinstance(digest, bytes) and len(digest) == 32
    assert hash_token(token) == digest
    assert hash_token(token + "x") != digest


def test_successor_is_deterministic_and_keyed() -> None:
    key_a = derive_key(DATA_KEY, PURPOSE_REFRESH_SUCCESSOR)
    key_b = derive_key(bytes(32), PURPOSE_REFRESH_SUCCESSOR)
    token = new_refresh_token()
    first = successor(token, key_a)
    assert successor(token, key_a) == first  # a retry gets the same successor
    assert successor(token, key_b) != first
    assert successor(new_refresh_token(), key_a) != first
    assert first != token
    assert len(first) == 43 and URLSAFE.fullmatch(first)
    # The chain continues with tokens of the same shape.
    assert len(successor(first, key_a)) == 43
    with pytest.raises(ValueError):
        successor(token, b"short")


def test_derive_key_separates_purposes() -> None:
    box_key = derive_key(DATA_KEY, PURPOSE_SECRETBOX)
    mac_key = derive_key(DATA_KEY, PURPOSE_REFRESH_SUCCESSOR)
    assert len(box_key) == len(mac_key) == 32
    assert box_key != mac_key
    assert DATA_KEY not in (box_key, mac_key)
    assert derive_key(DATA_KEY, PURPOSE_SECRETBOX) == box_key
    assert derive_key(bytes(32), PURPOSE_SECRETBOX) != box_key
    assert len(derive_key(DATA_KEY, "x", length=64)) == 64
    with pytest.raises(ValueError):
        derive_key(b"too short", PURPOSE_SECRETBOX)
    with pytest.raises(ValueError):
        derive_key(DATA_KEY, "")


def test_tokens_never_start_with_a_dash() -> None:
    """Pasted into `sso client verify-mfa ID`, a leading `-` reads as an option (one in 64
    before the fix). 20,000 draws would have hit it with probability 1 - (63/64)^20000."""
    tokens = [new_refresh_token() for _ in range(10_000)] + [
        new_session_id() for _ in range(10_000)
    ]
    assert not any(t.startswith("-") for t in tokens)
    assert any("-" in t for t in tokens)  # the alphabet is still all of base64url
