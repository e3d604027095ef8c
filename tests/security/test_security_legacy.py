"""The seed-compatible HS256 token: shape, round trip, and what a Go client sees."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime, timedelta

import jwt
import pytest
from security_test_helpers import NOW, b64json

from sso.errors import TokenError, TokenExpired
from sso.security.legacy import LegacyClaims, issue_legacy, verify_legacy

SECRET = "app-secret-" + "0123456789abcdef" * 4  # 75 bytes: no PyJWT key warnings


def segment(token: str, index: int) -> bytes:
    part = token.split(".")[index]
    return base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))


def test_shape_matches_the_seed_service() -> None:
    token = issue_legacy(7, "jane@example.com", 3, SECRET, timedelta(hours=1), NOW)
    assert segment(token, 0) == b'{"alg":"HS256","typ":"JWT"}'
    payload = json.loads(segment(token, 1))
    assert list(payload) == ["app_id", "email", "exp", "uid"]  # Go's sorted map keys
    assert payload == {
        "app_id": 3,
        "email": "jane@example.com",
        "exp": int(NOW.timestamp()) + 3600,
        "uid": 7,
    }
    assert all(type(payload[k]) is int for k in ("uid", "exp", "app_id"))


def test_plain_pyjwt_decode_like_a_go_client() -> None:
    now = datetime.now(UTC)
    token = issue_legacy(7, "jane@example.com", 3, SECRET, timedelta(hours=1), now)
    decoded = jwt.decode(token, SECRET, algorithms=["HS256"])
    assert decoded == {
        "uid": 7,
        "email": "jane@example.com",
        "exp": int(now.timestamp()) + 3600,
        "app_id": 3,
    }


def test_round_trip_and_failures() -> None:
    token = issue_legacy(2**40, "a@b.c", 9, SECRET, timedelta(hours=1), NOW)
    claims = verify_legacy(token, SECRET, now=NOW + timedelta(minutes=59))
    assert claims == LegacyClaims(
        uid=2**40, email="a@b.c", exp=int(NOW.timestamp()) + 3600, app_id=9
    )
    with pytest.raises(TokenExpired):
        verify_legacy(token, SECRET, now=NOW + timedelta(hours=1))
    with pytest.raises(TokenError):
        verify_legacy(token, SECRET + "x", now=NOW)
    with pytest.raises(TokenError):
        verify_legacy(token[:-2], SECRET, now=NOW)


def test_verification_is_pinned_to_hs256() -> None:
    claims = {"uid": 1, "email": "a@b.c", "exp": int(NOW.timestamp()) + 60, "app_id": 1}
    none_token = f"{b64json({'alg': 'none', 'typ': 'JWT'})}.{b64json(claims)}."
    hs512 = jwt.encode(claims, SECRET, algorithm="HS512")
    for token in (none_token, hs512):
        with pytest.raises(TokenError):
            verify_legacy(token, SECRET, now=NOW)


@pytest.mark.parametrize(
    "claims",
    [
        {"uid": 1, "email": "a@b.c", "app_id": 1},  # no exp
        {"uid": 1, "email": "a@b.c", "exp": "soon", "app_id": 1},
        {"uid": "1", "email": "a@b.c", "exp": 2**40, "app_id": 1},
        {"uid": True, "email": "a@b.c", "exp": 2**40, "app_id": 1},
        {"uid": 1.5, "email": "a@b.c", "exp": 2**40, "app_id": 1},
        {"uid": 1, "email": 5, "exp": 2**40, "app_id": 1},
        {"uid": 1, "email": "a@b.c", "exp": 2**40},
    ],
)
def test_malformed_claims_rejected(claims: dict[str, object]) -> None:
    token = jwt.encode(claims, SECRET, algorithm="HS256")
    with pytest.raises(TokenError):
        verify_legacy(token, SECRET, now=NOW)


def test_go_style_float_numbers_accepted() -> None:
    claims = {"uid": 7.0, "email": "a@b.c", "exp": float(int(NOW.timestamp()) + 60), "app_id": 3.0}
    token = jwt.encode(claims, SECRET, algorithm="HS256")
    assert verify_legacy(token, SECRET, now=NOW).uid == 7


def test_deeply_nested_payload_is_just_invalid() -> None:
    header = b64json({"alg": "HS256", "typ": "JWT"})
    body = base64.urlsafe_b64encode(b"[" * 5000).decode().rstrip("=")
    with pytest.raises(TokenError):
        verify_legacy(f"{header}.{body}.c2ln", SECRET, now=NOW)


def test_empty_secret_refused() -> None:
    with pytest.raises(ValueError, match="empty"):
        issue_legacy(1, "a@b.c", 1, "", timedelta(hours=1), NOW)
