"""The key-set format: keyset.json plus one PKCS#8 PEM per key, parsed and validated.

Why this module exists: the key set is a contract between whoever writes keys
(the operator, the CLI, embedded mode) and every service pod (docs/keys.md).
This module holds that contract in one place: the schema of keyset.json, the
rules (exactly one active key, at most one next, each key used with exactly one
algorithm, RSA >= 2048 bits, P-256, Ed25519), the parsing of each PEM into a key
object exactly once, the public JWK of each key, and a read of the directory
that stays consistent while a writer replaces files. Every problem raises
`KeySetError` naming the file and the rule, never the key material.

`sso.security.keys` builds on it: the reloading `KeyRing` and the writers.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal, TypeAlias, get_args

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from jwt.algorithms import ECAlgorithm, OKPAlgorithm, RSAAlgorithm

from sso.errors import SSOError

__all__ = [
    "ALGORITHMS",
    "FORMAT_VERSION",
    "KEYSET_FILE",
    "MAX_KID_LENGTH",
    "Algorithm",
    "KeyMeta",
    "KeySet",
    "KeySetError",
    "PrivateKey",
    "PublicKey",
    "SigningKey",
    "Stamp",
    "State",
    "generate_key",
    "load_consistent",
    "private_key_pem",
    "read_keyset_json",
    "stamp_of",
]

Algorithm = Literal["RS256", "ES256", "EdDSA"]
State = Literal["next", "active", "retired"]
PrivateKey: TypeAlias = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey
PublicKey: TypeAlias = rsa.RSAPublicKey | ec.EllipticCurvePublicKey | ed25519.Ed25519PublicKey

KEYSET_FILE = "keyset.json"
FORMAT_VERSION = 1
MAX_KID_LENGTH = 64
MAX_KEYSET_BYTES = 1 << 20
RSA_BITS = 2048
ALGORITHMS: tuple[str, ...] = get_args(Algorithm)
STATES: tuple[str, ...] = get_args(State)
KID_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]*")
_PUBLIC_JWK_FIELDS = ("kty", "crv", "n", "e", "x", "y")


class KeySetError(SSOError):
    """Raised when a key-set directory is missing, malformed or inconsistent."""

    reason = "KEYSET_INVALID"
    default_message = "signing key set is invalid"


def format_ts(value: datetime) -> str:
    return value.astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def _parse_ts(value: object, where: str) -> datetime:
    if not isinstance(value, str):
        raise KeySetError(f"{where}: expected an ISO 8601 timestamp string")
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise KeySetError(f"{where}: {value!r} is not an ISO 8601 timestamp") from None
    if parsed.tzinfo is None:
        raise KeySetError(f"{where}: timestamp needs a time zone (use Z)")
    return parsed


@dataclass(frozen=True)
class KeyMeta:
    """One entry of keyset.json."""

    kid: str
    alg: Algorithm
    state: State
    created_at: datetime
    activated_at: datetime | None = None
    retired_at: datetime | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "kid": self.kid,
            "alg": self.alg,
            "state": self.state,
            "created_at": format_ts(self.created_at),
            "activated_at": format_ts(self.activated_at) if self.activated_at else None,
            "retired_at": format_ts(self.retired_at) if self.retired_at else None,
        }

    @classmethod
    def from_json(cls, raw: object, where: str) -> KeyMeta:
        if not isinstance(raw, dict):
            raise KeySetError(f"{where}: expected an object")
        kid = raw.get("kid")
        if not isinstance(kid, str) or len(kid) > MAX_KID_LENGTH or not KID_PATTERN.fullmatch(kid):
            raise KeySetError(
                f"{where}: kid must be 1-{MAX_KID_LENGTH} characters of [A-Za-z0-9_-]"
            )
        where = f"{where} (kid {kid})"
        alg, state = raw.get("alg"), raw.get("state")
        if alg not in ALGORITHMS:
            raise KeySetError(f"{where}: alg must be one of {', '.join(ALGORITHMS)}")
        if state not in STATES:
            raise KeySetError(f"{where}: state must be one of {', '.join(STATES)}")
        optional = {}
        for name in ("activated_at", "retired_at"):
            value = raw.get(name)
            optional[name] = None if value is None else _parse_ts(value, f"{where}.{name}")
        created_at = _parse_ts(raw.get("created_at"), f"{where}.created_at")
        meta = cls(kid, alg, state, created_at, **optional)
        if state == "active" and meta.activated_at is None:
            raise KeySetError(f"{where}: an active key needs activated_at")
        if state == "retired" and meta.retired_at is None:
            raise KeySetError(f"{where}: a retired key needs retired_at")
        return meta


def _public_jwk(meta: KeyMeta, public_key: PublicKey) -> dict[str, str]:
    if isinstance(public_key, rsa.RSAPublicKey):
        raw = RSAAlgorithm.to_jwk(public_key, as_dict=True)
    elif isinstance(public_key, ec.EllipticCurvePublicKey):
        raw = ECAlgorithm.to_jwk(public_key, as_dict=True)
    else:
        raw = OKPAlgorithm.to_jwk(public_key, as_dict=True)
    jwk = {name: str(raw[name]) for name in _PUBLIC_JWK_FIELDS if name in raw}
    jwk.update(kid=meta.kid, alg=meta.alg, use="sig")
    return jwk


@dataclass(frozen=True, eq=False)
class SigningKey:
    """A parsed key: the private key object (for signing), its public half and JWK."""

    meta: KeyMeta
    private_key: PrivateKey
    public_key: PublicKey = field(init=False)
    jwk: Mapping[str, str] = field(init=False)

    def __post_init__(self) -> None:
        public = self.private_key.public_key()
        object.__setattr__(self, "public_key", public)
        object.__setattr__(self, "jwk", _public_jwk(self.meta, public))

    @property
    def kid(self) -> str:
        return self.meta.kid

    @property
    def alg(self) -> Algorithm:
        return self.meta.alg


def generate_key(alg: Algorithm) -> PrivateKey:
    """A fresh private key: RS256 RSA-2048, ES256 P-256, EdDSA Ed25519."""
    if alg == "RS256":
        return rsa.generate_private_key(public_exponent=65537, key_size=RSA_BITS)
    if alg == "ES256":
        return ec.generate_private_key(ec.SECP256R1())
    if alg == "EdDSA":
        return ed25519.Ed25519PrivateKey.generate()
    raise ValueError(f"unsupported algorithm {alg!r}")


def private_key_pem(key: PrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _parse_pem(meta: KeyMeta, data: bytes, where: str) -> PrivateKey:
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError):
        raise KeySetError(f"{where}: not an unencrypted PEM private key") from None
    if meta.alg == "RS256" and isinstance(key, rsa.RSAPrivateKey):
        if key.key_size < RSA_BITS:
            raise KeySetError(f"{where}: RSA key has {key.key_size} bits, need {RSA_BITS}+")
        return key
    if meta.alg == "ES256" and isinstance(key, ec.EllipticCurvePrivateKey):
        if not isinstance(key.curve, ec.SECP256R1):
            raise KeySetError(f"{where}: ES256 needs a P-256 key, found {key.curve.name}")
        return key
    if meta.alg == "EdDSA" and isinstance(key, ed25519.Ed25519PrivateKey):
        return key
    raise KeySetError(f"{where}: key type {type(key).__name__} does not fit alg {meta.alg}")


def _parse_metadata(raw: bytes, where: str) -> tuple[KeyMeta, ...]:
    try:
        document = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        raise KeySetError(f"{where}: not valid JSON") from None
    if not isinstance(document, dict) or document.get("version") != FORMAT_VERSION:
        raise KeySetError(f'{where}: expected an object with "version": {FORMAT_VERSION}')
    entries = document.get("keys")
    if not isinstance(entries, list) or not entries:
        raise KeySetError(f'{where}: "keys" must be a non-empty list')
    metas = tuple(KeyMeta.from_json(e, f"{where} keys[{i}]") for i, e in enumerate(entries))
    kids = [m.kid for m in metas]
    if len(set(kids)) != len(kids):
        raise KeySetError(f"{where}: duplicate kid")
    actives = sum(m.state == "active" for m in metas)
    if actives != 1:
        raise KeySetError(f"{where}: exactly one key must be active, found {actives}")
    if sum(m.state == "next" for m in metas) > 1:
        raise KeySetError(f"{where}: at most one key may be next")
    return metas


@dataclass(frozen=True, eq=False)
class KeySet:
    """A validated key set with every key parsed."""

    keys: tuple[SigningKey, ...]
    by_kid: Mapping[str, SigningKey] = field(init=False)
    active: SigningKey = field(init=False)
    jwks: Mapping[str, Any] = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "by_kid", {k.kid: k for k in self.keys})
        (active,) = (k for k in self.keys if k.meta.state == "active")
        object.__setattr__(self, "active", active)
        order = {"active": 0, "next": 1, "retired": 2}
        published = sorted(self.keys, key=lambda k: order[k.meta.state])
        object.__setattr__(self, "jwks", {"keys": [dict(k.jwk) for k in published]})

    @property
    def next(self) -> SigningKey | None:
        return next((k for k in self.keys if k.meta.state == "next"), None)

    @property
    def metas(self) -> tuple[KeyMeta, ...]:
        return tuple(k.meta for k in self.keys)

    @classmethod
    def load(cls, directory: Path | str) -> KeySet:
        """Read and validate `directory`; `KeySetError` says what is wrong."""
        return load_consistent(Path(directory))[0]

    @classmethod
    def parse(cls, directory: Path, raw: bytes) -> KeySet:
        where = str(directory / KEYSET_FILE)
        keys = []
        for meta in _parse_metadata(raw, where):
            pem_path = directory / f"{meta.kid}.pem"
            try:
                data = pem_path.read_bytes()
            except OSError as exc:
                raise KeySetError(f"{pem_path}: cannot read ({exc.strerror})") from None
            keys.append(SigningKey(meta, _parse_pem(meta, data, str(pem_path))))
        return cls(tuple(keys))


Stamp: TypeAlias = tuple[str, int, int, int, int]


def stamp_of(path: Path) -> Stamp:
    """What changes when keyset.json is replaced, directly or by a symlink swap."""
    try:
        st = path.stat()
        target = os.path.realpath(path)
    except OSError as exc:
        raise KeySetError(f"{path}: cannot read ({exc.strerror})") from None
    return (target, st.st_dev, st.st_ino, st.st_mtime_ns, st.st_size)


def read_keyset_json(path: Path) -> bytes:
    try:
        with path.open("rb") as handle:
            raw = handle.read(MAX_KEYSET_BYTES + 1)
    except OSError as exc:
        raise KeySetError(f"{path}: cannot read ({exc.strerror})") from None
    if len(raw) > MAX_KEYSET_BYTES:
        raise KeySetError(f"{path}: larger than {MAX_KEYSET_BYTES} bytes")
    return raw


def load_consistent(directory: Path, attempts: int = 3) -> tuple[KeySet, Stamp, bytes]:
    """Load the set, retrying when keyset.json changes while the PEMs are read."""
    path = directory / KEYSET_FILE
    for _ in range(attempts):
        before = stamp_of(path)
        raw = read_keyset_json(path)
        try:
            keyset = KeySet.parse(directory, raw)
        except KeySetError:
            if stamp_of(path) != before:
                continue
            raise
        if stamp_of(path) == before:
            return keyset, before, hashlib.sha256(raw).digest()
    raise KeySetError(f"{path}: kept changing while being read")
