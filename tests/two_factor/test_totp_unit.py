"""`sso.security.totp`: RFC 6238 vectors, strict parsing, matching, sealing, backup codes."""

from __future__ import annotations

import base64
import math
import struct
from datetime import UTC, datetime
from urllib.parse import parse_qs, unquote, urlsplit

import pytest

from sso.security import totp
from sso.security.secretbox import SecretBoxError, generate_data_key

# RFC 6238 Appendix B, SHA-1 rows: the seed is the ASCII string "12345678901234567890".
RFC_SEED = b"12345678901234567890"
RFC_VECTORS = [
    (59, "94287082"),
    (1111111109, "07081804"),
    (1111111111, "14050471"),
    (1234567890, "89005924"),
    (2000000000, "69279037"),
    (20000000000, "65353130"),
]


def data_key() -> bytes:
    text = generate_data_key()
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


@pytest.mark.parametrize(("unix", "expected"), RFC_VECTORS)
def test_rfc6238_sha1_vectors(unix: int, expected: str) -> None:
    step = totp.time_step(datetime.fromtimestamp(unix, UTC))
    assert totp.hotp(RFC_SEED, step, digits=8) == expected
    # Our 6-digit truncation is the same dynamic truncation mod 10^6: the last 6 digits.
    assert totp.hotp(RFC_SEED, step) == expected[-6:]


def test_rfc4226_hotp_vectors() -> None:
    expected = ["755224", "287082", "359152", "969429", "338314"]
    assert [totp.hotp(RFC_SEED, i) for i in range(5)] == expected


@pytest.mark.parametrize(
    "text",
    [
        "\u0661\u0662\u0663\u0664\u0665\u0666",  # Arabic-Indic digits: int() takes them
        "\uff11\uff12\uff13\uff14\uff15\uff16",  # fullwidth digits: int() takes them
        "12_345",
        "123_456",
        " 123456",
        "123456 ",
        "123456\n",
        "+12345",
        "0x1E240",
        "12345",
        "1234567",
        "",
        "12345a",
        "\uff1123456",
    ],
)
def test_parse_code_is_strict(text: str) -> None:
    assert totp.parse_code(text) is None


def test_parse_code_accepts_six_ascii_digits() -> None:
    assert totp.parse_code("000000") == "000000"
    assert totp.parse_code("123456") == "123456"


def test_match_window_and_replay() -> None:
    auth = totp.TotpAuthenticator(data_key(), issuer="Test")
    secret = auth.new_secret()
    assert len(secret) == 20
    t = 1_000_000
    for offset in (-1, 0, 1):
        assert auth.match(secret, totp.hotp(secret, t + offset), step=t, window=1, after=None) == (
            t + offset
        )
    for offset in (-2, 2):
        assert (
            auth.match(secret, totp.hotp(secret, t + offset), step=t, window=1, after=None) is None
        )
    # Steps at or before the last used one are never accepted again.
    assert auth.match(secret, totp.hotp(secret, t), step=t, window=1, after=t) is None
    assert auth.match(secret, totp.hotp(secret, t - 1), step=t, window=1, after=t) is None
    assert auth.match(secret, totp.hotp(secret, t + 1), step=t, window=1, after=t) == t + 1


def test_sealed_secret_is_bound_to_its_user_and_key() -> None:
    key = data_key()
    auth = totp.TotpAuthenticator(key, issuer="Test")
    secret = auth.new_secret()
    sealed = auth.seal(7, secret)
    assert totp.b32_secret(secret) not in sealed
    assert auth.open(7, sealed) == secret
    with pytest.raises(SecretBoxError):
        auth.open(8, sealed)  # copied onto another user's row
    with pytest.raises(SecretBoxError):
        totp.TotpAuthenticator(data_key(), issuer="Test").open(7, sealed)


def test_otpauth_uri_and_qr_png() -> None:
    secret = bytes(range(20))
    uri = totp.otpauth_uri(secret, "alice+x@example.com", "My SSO")
    parts = urlsplit(uri)
    assert parts.scheme == "otpauth" and parts.netloc == "totp"
    assert unquote(parts.path) == "/My SSO:alice+x@example.com"
    query = parse_qs(parts.query)
    assert query["secret"] == [totp.b32_secret(secret)] and query["issuer"] == ["My SSO"]
    assert query["digits"] == ["6"] and query["period"] == ["30"] and query["algorithm"] == ["SHA1"]
    png = totp.qr_png(uri)
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", png[16:24])
    assert width == height > 0


def test_backup_codes_have_120_bits_and_parse_strictly() -> None:
    auth = totp.TotpAuthenticator(data_key(), issuer="Test")
    codes = auth.new_backup_codes(10)
    assert len(set(codes)) == 10
    for code in codes:
        raw = code.replace("-", "")
        assert len(raw) == 24 and set(raw) <= set("abcdefghijklmnopqrstuvwxyz234567")
        assert totp.parse_backup_code(code) == raw
        assert totp.parse_backup_code(raw.upper()) == raw  # hyphens optional, any case
    assert math.log2(32) * totp.BACKUP_CODE_CHARS >= 112  # NIST: a plain hash is enough
    for bad in (codes[0] + "a", " " + codes[0], "\uff41" + codes[0][1:], "", "0" * 24):
        assert totp.parse_backup_code(bad) is None
    assert [len(h) for h in auth.hash_backup_codes(codes)] == [32] * 10
