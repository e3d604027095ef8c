"""Authenticated encryption of secrets kept at rest (app secrets), and the data key.

Why this module exists: app secrets sign the legacy HS256 tokens, so the
service must be able to read them back (they cannot be hashed), yet a database
dump alone must not reveal them. They are sealed with AES-256-GCM under a key
derived from the data key (`SSO_DATA_KEY`, 32 bytes base64url), which lives
outside the database (a Kubernetes Secret; `home/data.key` in embedded mode).

Format: `v1.<base64url nonce (12 bytes)>.<base64url ciphertext+tag>`, the
version string bound in as associated data. Any failure to open a box (wrong
key, tampering, garbage) raises `SecretBoxError` with one generic message.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import os
import secrets
import tempfile
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from sso.config import Settings
from sso.errors import SSOError
from sso.security.opaque import PURPOSE_SECRETBOX, derive_key

__all__ = [
    "DATA_KEY_FILE",
    "DataKeyError",
    "SecretBox",
    "SecretBoxError",
    "generate_data_key",
    "load_data_key",
]

VERSION = "v1"
NONCE_BYTES = 12
KEY_BYTES = 32
DATA_KEY_FILE = "data.key"
_AAD = b"sso-secretbox-" + VERSION.encode()


class SecretBoxError(SSOError):
    """Raised when a stored secret cannot be decrypted (wrong data key or tampered)."""

    reason = "SECRET_UNREADABLE"
    default_message = "a stored secret could not be decrypted"


class DataKeyError(SSOError):
    """Raised when the data key is missing or malformed (a configuration error)."""

    reason = "CONFIGURATION"
    default_message = "the data key is missing or invalid"


def _b64encode(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode("ascii").rstrip("=")


def _b64decode(text: str) -> bytes:
    if not text or text.strip() != text:
        raise ValueError("empty or padded with whitespace")
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class SecretBox:
    """The `SecretCipher` port: AES-256-GCM with a random 96-bit nonce per message."""

    def __init__(self, key: bytes) -> None:
        if len(key) != KEY_BYTES:
            raise ValueError("SecretBox needs a 32-byte key")
        self._aead = AESGCM(key)

    @classmethod
    def from_data_key(cls, data_key: bytes) -> SecretBox:
        """The box keyed with the data key's `secretbox` sub-key (HKDF)."""
        return cls(derive_key(data_key, PURPOSE_SECRETBOX))

    def encrypt(self, plaintext: str) -> str:
        nonce = secrets.token_bytes(NONCE_BYTES)
        sealed = self._aead.encrypt(nonce, plaintext.encode("utf-8"), _AAD)
        return f"{VERSION}.{_b64encode(nonce)}.{_b64encode(sealed)}"

    def decrypt(self, ciphertext: str) -> str:
        try:
            version, nonce_text, sealed_text = ciphertext.split(".")
            if version != VERSION:
                raise ValueError("unknown version")
            nonce = _b64decode(nonce_text)
            if len(nonce) != NONCE_BYTES:
                raise ValueError("bad nonce")
            return self._aead.decrypt(nonce, _b64decode(sealed_text), _AAD).decode("utf-8")
        except (InvalidTag, ValueError, TypeError, AttributeError, binascii.Error):
            raise SecretBoxError() from None


def generate_data_key() -> str:
    """A new data key: 32 random bytes, base64url without padding."""
    return _b64encode(secrets.token_bytes(KEY_BYTES))


def _decode_data_key(text: str, where: str) -> bytes:
    try:
        raw = _b64decode(text.strip())
    except (ValueError, binascii.Error):
        raise DataKeyError(f"{where} is not base64url") from None
    if len(raw) != KEY_BYTES:
        raise DataKeyError(f"{where} must decode to {KEY_BYTES} bytes, not {len(raw)}")
    return raw


def _create_key_file(path: Path) -> None:
    """Write a new key to `path` unless it exists (atomic: temp file + link)."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="ascii") as handle:
            handle.write(generate_data_key() + "\n")
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o600)
        with contextlib.suppress(FileExistsError):  # another process created it first
            os.link(tmp, path)
    finally:
        Path(tmp).unlink(missing_ok=True)


def load_data_key(settings: Settings) -> bytes:
    """The 32-byte data key from `SSO_DATA_KEY`, or `home/data.key` in embedded mode."""
    if settings.data_key is not None:
        return _decode_data_key(settings.data_key.get_secret_value(), "SSO_DATA_KEY")
    if not settings.embedded:
        raise DataKeyError(
            "SSO_DATA_KEY is not set: it is required with PostgreSQL/Redis (generate one "
            "with `sso keys data-key` and keep it in a Secret; losing it loses the app secrets)"
        )
    path = settings.home / DATA_KEY_FILE
    if not path.exists():
        _create_key_file(path)
    try:
        text = path.read_text(encoding="ascii")
    except (OSError, UnicodeDecodeError) as exc:
        raise DataKeyError(f"cannot read {path}: {exc}") from None
    return _decode_data_key(text, str(path))
