"""TOTP (RFC 6238) and backup codes: the cryptography behind the second factor.

Why this module exists: the domain (`sso.domain.two_factor`) decides *when* a
code is checked; this module decides *how*, with nothing but `hmac`/`hashlib`
(about 30 lines of RFC 4226/6238, so no third-party OTP library to audit):

- `hotp()` is RFC 4226 §5.3 (HMAC-SHA-1, dynamic truncation, any digit count);
  the RFC 6238 test vectors in `tests/two_factor` check it at 8 digits and our
  6-digit truncation at the same instants.
- `parse_code()` accepts exactly `[0-9]{6}` (ASCII, `re.fullmatch`): `int()`
  would take Arabic-Indic or fullwidth digits, '12_345' or ' 123456' (checklist item 10).
- `TotpAuthenticator.match()` compares every candidate step in the ±window with
  `hmac.compare_digest` and skips steps at or before the last used one, so a
  code is never accepted twice; the caller stores the step it returns with a
  compare-and-swap.
- Secrets are 160 random bits, sealed at rest with `SecretBox` (AES-256-GCM)
  under their own HKDF purpose (`totp-secret/v1`), and the plaintext is bound to
  the user id so one user's sealed secret cannot be copied onto another's row.
- Backup codes carry 120 random bits (24 base32 characters, shown in groups of
  four), which is above NIST's 112-bit line, so a plain SHA-256 digest is the
  right storage (SECURITY_CHECKLIST headline "Lookup (backup) codes storage"):
  one indexed lookup and one conditional UPDATE spend a code, no argon2 work.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import io
import re
import secrets
import struct
from collections.abc import Sequence
from datetime import datetime
from urllib.parse import quote, urlencode

import qrcode
from qrcode.image.pure import PyPNGImage

from sso.security.opaque import derive_key
from sso.security.secretbox import SecretBox, SecretBoxError

__all__ = [
    "BACKUP_CODE_CHARS",
    "PURPOSE_TOTP",
    "SECRET_BYTES",
    "TotpAuthenticator",
    "hotp",
    "otpauth_uri",
    "parse_backup_code",
    "parse_code",
    "qr_png",
]

PURPOSE_TOTP = "totp-secret/v1"
SECRET_BYTES = 20  # 160 bits (RFC 4226 R6 recommends 160)
DIGITS = 6
PERIOD = 30
BACKUP_CODE_CHARS = 24  # x 5 bits = 120 bits
_B32 = "abcdefghijklmnopqrstuvwxyz234567"
_CODE = re.compile(r"[0-9]{6}", re.ASCII)
_BACKUP = re.compile(r"[A-Za-z2-7]{4}(?:-?[A-Za-z2-7]{4}){5}", re.ASCII)


def hotp(secret: bytes, counter: int, digits: int = DIGITS) -> str:
    """RFC 4226 §5.3: HMAC-SHA-1 of the 8-byte counter, dynamically truncated."""
    mac = hmac.new(secret, struct.pack(">Q", counter), hashlib.sha1).digest()
    offset = mac[-1] & 0x0F
    binary = struct.unpack(">I", mac[offset : offset + 4])[0] & 0x7FFFFFFF
    return str(binary % 10**digits).zfill(digits)


def time_step(now: datetime, period: int = PERIOD) -> int:
    """RFC 6238 T = floor((unix time - T0) / X), T0 = 0."""
    return int(now.timestamp()) // period


def parse_code(text: str) -> str | None:
    """The code when it is exactly six ASCII digits, else None (no int(), no strip())."""
    return text if _CODE.fullmatch(text) else None


def parse_backup_code(text: str) -> str | None:
    """24 base32 characters, optionally hyphenated in groups of 4; normalised to lower case."""
    if not _BACKUP.fullmatch(text):
        return None
    return text.replace("-", "").lower()


def format_backup_code(raw: str) -> str:
    return "-".join(raw[i : i + 4] for i in range(0, len(raw), 4))


def b32_secret(secret: bytes) -> str:
    return base64.b32encode(secret).decode("ascii").rstrip("=")


def otpauth_uri(secret: bytes, account: str, issuer: str) -> str:
    """The Key Uri Format authenticator apps read (label `issuer:account`)."""
    label = quote(f"{issuer}:{account}", safe="@:")
    query = urlencode(
        {
            "secret": b32_secret(secret),
            "issuer": issuer,
            "algorithm": "SHA1",
            "digits": DIGITS,
            "period": PERIOD,
        },
        quote_via=quote,
    )
    return f"otpauth://totp/{label}?{query}"


def qr_png(data: str) -> bytes:
    """`data` as a QR code PNG (pure Python: qrcode + pypng, no Pillow)."""
    image = qrcode.make(data, image_factory=PyPNGImage, box_size=6, border=4)
    out = io.BytesIO()
    image.save(out)
    return out.getvalue()


class TotpAuthenticator:
    """The `SecondFactorCrypto` port: secrets, sealing, matching and backup codes."""

    def __init__(self, data_key: bytes, *, issuer: str) -> None:
        self._box = SecretBox(derive_key(data_key, PURPOSE_TOTP))
        self.issuer = issuer

    # -- secrets ------------------------------------------------------------------

    def new_secret(self) -> bytes:
        return secrets.token_bytes(SECRET_BYTES)

    def seal(self, user_id: int, secret: bytes) -> str:
        return self._box.encrypt(f"{user_id}:{b32_secret(secret)}")

    def open(self, user_id: int, sealed: str) -> bytes:
        owner, _, text = self._box.decrypt(sealed).partition(":")
        if owner != str(user_id):
            raise SecretBoxError()
        return base64.b32decode(text + "=" * (-len(text) % 8))

    def provisioning(self, secret: bytes, account: str) -> tuple[str, str, bytes]:
        """(base32 secret, otpauth:// URI, QR code PNG of the URI)."""
        uri = otpauth_uri(secret, account, self.issuer)
        return b32_secret(secret), uri, qr_png(uri)

    # -- codes --------------------------------------------------------------------

    def parse_code(self, text: str) -> str | None:
        return parse_code(text)

    def step(self, now: datetime) -> int:
        return time_step(now)

    def match(
        self, secret: bytes, code: str, *, step: int, window: int, after: int | None
    ) -> int | None:
        """The step in [step - window, step + window] whose code is `code`, skipping steps
        <= `after` (already used). Every candidate is computed and compared in constant
        time, so the answer time does not say which step matched."""
        found: int | None = None
        for candidate in range(step - window, step + window + 1):
            if after is not None and candidate <= after:
                continue
            if hmac.compare_digest(hotp(secret, candidate), code) and found is None:
                found = candidate
        return found

    # -- backup codes ---------------------------------------------------------------

    def new_backup_codes(self, count: int) -> list[str]:
        return [
            format_backup_code("".join(secrets.choice(_B32) for _ in range(BACKUP_CODE_CHARS)))
            for _ in range(count)
        ]

    def parse_backup_code(self, text: str) -> str | None:
        return parse_backup_code(text)

    def hash_backup_code(self, normalised: str) -> bytes:
        return hashlib.sha256(normalised.encode("ascii")).digest()

    def hash_backup_codes(self, codes: Sequence[str]) -> list[bytes]:
        hashed = []
        for code in codes:
            normalised = parse_backup_code(code)
            if normalised is None:  # pragma: no cover - our own format
                raise ValueError("malformed backup code")
            hashed.append(self.hash_backup_code(normalised))
        return hashed
