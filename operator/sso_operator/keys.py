"""Signing keys of an SSOInstance: the key-set format, key generation, and the rotation planner.

Why this module exists: the operator keeps each instance's signing keys in a
Secret that the service mounts as its key-set directory (docs/keys.md §1). The
operator must never import the service, so the small part of that contract it
needs lives here: ``keyset.json`` (version 1; ``kid``, ``alg``, ``state``,
timestamps with ``Z``) and one unencrypted PKCS#8 PEM per key named
``<kid>.pem``. A test loads what this module writes with the service's own
loader (``sso.security.keyset``), so the two cannot drift apart silently.

The rotation planner (:func:`plan`) is a pure function of (key set, now,
policy) and decides everything: when a ``next`` key is published, when it
becomes ``active``, when a ``retired`` key may disappear. Its rule (checklist
F5, N5): every key that signed a token that is still valid, and every key that
is about to sign, is published in every pod's JWKS. Publishing lead and
retention both include :attr:`RotationPolicy.propagation`, the time the
kubelet needs to refresh a mounted Secret plus the service's reload interval,
because pods see a new key set up to that much later than it is written.
Applying a plan twice is a no-op the second time, which is what makes the
kopf handlers that use it safe to re-run after a crash.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any, Literal, get_args

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

Algorithm = Literal["RS256", "ES256", "EdDSA"]
State = Literal["next", "active", "retired"]
ALGORITHMS: tuple[str, ...] = get_args(Algorithm)
KEYSET_FILE = "keyset.json"
FORMAT_VERSION = 1
RSA_BITS = 2048
_KID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}")

#: kubelet refresh of a mounted Secret (sync period ~1 min plus its cache TTL)
#: plus the service's key reload interval (5 s), with slack.
DEFAULT_PROPAGATION = timedelta(minutes=2)
#: The largest clock leeway the service accepts on ``exp`` (docs/keys.md §5).
DEFAULT_LEEWAY = timedelta(seconds=60)


class KeySetFormatError(ValueError):
    """Raised when a Secret's key set cannot be read: the message names the file and rule."""


def format_ts(value: datetime) -> str:
    """RFC 3339 in UTC with ``Z``, second precision (what keyset.json and status use)."""
    return value.astimezone(UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z")


def _parse_ts(value: object, where: str) -> datetime:
    if not isinstance(value, str):
        raise KeySetFormatError(f"{where}: expected an ISO 8601 timestamp string")
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise KeySetFormatError(f"{where}: {value!r} is not an ISO 8601 timestamp") from None
    if parsed.tzinfo is None:
        raise KeySetFormatError(f"{where}: timestamp needs a time zone")
    return parsed.astimezone(UTC)


@dataclass(frozen=True)
class KeyEntry:
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


# ------------------------------------------------------------ serialisation


def generate_private_key_pem(alg: Algorithm) -> bytes:
    """A fresh key as unencrypted PKCS#8 PEM: RS256 RSA-2048, ES256 P-256, EdDSA Ed25519."""
    key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey
    if alg == "RS256":
        key = rsa.generate_private_key(public_exponent=65537, key_size=RSA_BITS)
    elif alg == "ES256":
        key = ec.generate_private_key(ec.SECP256R1())
    elif alg == "EdDSA":
        key = ed25519.Ed25519PrivateKey.generate()
    else:
        raise ValueError(f"unsupported algorithm {alg!r}")
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def check_pem(entry: KeyEntry, pem: bytes) -> None:
    """Raise :class:`KeySetFormatError` unless ``pem`` is a private key fitting ``entry.alg``."""
    where = f"{entry.kid}.pem"
    try:
        key = serialization.load_pem_private_key(pem, password=None)
    except (ValueError, TypeError):
        raise KeySetFormatError(f"{where}: not an unencrypted PEM private key") from None
    fits = (
        (entry.alg == "RS256" and isinstance(key, rsa.RSAPrivateKey) and key.key_size >= RSA_BITS)
        or (
            entry.alg == "ES256"
            and isinstance(key, ec.EllipticCurvePrivateKey)
            and isinstance(key.curve, ec.SECP256R1)
        )
        or (entry.alg == "EdDSA" and isinstance(key, ed25519.Ed25519PrivateKey))
    )
    if not fits:
        raise KeySetFormatError(f"{where}: key type {type(key).__name__} does not fit {entry.alg}")


def keyset_json(entries: Sequence[KeyEntry]) -> str:
    """The text of keyset.json (active first, then next, then retired, as the service orders)."""
    order = {"active": 0, "next": 1, "retired": 2}
    ordered = sorted(entries, key=lambda e: (order[e.state], e.created_at, e.kid))
    document = {"version": FORMAT_VERSION, "keys": [e.to_json() for e in ordered]}
    return json.dumps(document, indent=2) + "\n"


def parse_keyset_json(text: str | bytes) -> tuple[KeyEntry, ...]:
    """Read keyset.json; structure problems raise :class:`KeySetFormatError`.

    The planner repairs set-level problems (two active keys, none at all), so
    only what makes an entry unreadable is an error here.
    """
    try:
        document = json.loads(text)
    except (ValueError, UnicodeDecodeError):
        raise KeySetFormatError(f"{KEYSET_FILE}: not valid JSON") from None
    if not isinstance(document, dict) or document.get("version") != FORMAT_VERSION:
        raise KeySetFormatError(f'{KEYSET_FILE}: expected an object with "version": 1')
    raw_keys = document.get("keys")
    if not isinstance(raw_keys, list):
        raise KeySetFormatError(f'{KEYSET_FILE}: "keys" must be a list')
    entries: list[KeyEntry] = []
    for index, raw in enumerate(raw_keys):
        where = f"{KEYSET_FILE} keys[{index}]"
        if not isinstance(raw, dict) or not _KID.fullmatch(str(raw.get("kid"))):
            raise KeySetFormatError(f"{where}: kid must be 1-64 characters of [A-Za-z0-9_-]")
        if raw.get("alg") not in ALGORITHMS or raw.get("state") not in get_args(State):
            raise KeySetFormatError(f"{where}: bad alg or state")
        optional = {
            name: None if raw.get(name) is None else _parse_ts(raw[name], f"{where}.{name}")
            for name in ("activated_at", "retired_at")
        }
        created = _parse_ts(raw.get("created_at"), f"{where}.created_at")
        entries.append(KeyEntry(raw["kid"], raw["alg"], raw["state"], created, **optional))
    if len({e.kid for e in entries}) != len(entries):
        raise KeySetFormatError(f"{KEYSET_FILE}: duplicate kid")
    return tuple(entries)


def secret_data(entries: Sequence[KeyEntry], pems: Mapping[str, bytes]) -> dict[str, str]:
    """The Secret's ``data`` (base64): keyset.json plus ``<kid>.pem`` for every entry."""
    files = {KEYSET_FILE: keyset_json(entries).encode()}
    for entry in entries:
        files[f"{entry.kid}.pem"] = pems[entry.kid]
    return {name: base64.b64encode(content).decode() for name, content in files.items()}


def read_secret_data(
    data: Mapping[str, str] | None,
) -> tuple[tuple[KeyEntry, ...], dict[str, bytes]]:
    """Decode a Secret's ``data`` into entries and PEMs; a missing or bad PEM is an error."""
    files = {name: base64.b64decode(value) for name, value in (data or {}).items()}
    if KEYSET_FILE not in files:
        raise KeySetFormatError(f"{KEYSET_FILE}: missing from the Secret")
    entries = parse_keyset_json(files[KEYSET_FILE])
    pems: dict[str, bytes] = {}
    for entry in entries:
        pem = files.get(f"{entry.kid}.pem")
        if pem is None:
            raise KeySetFormatError(f"{entry.kid}.pem: missing from the Secret")
        check_pem(entry, pem)
        pems[entry.kid] = pem
    return entries, pems


# ------------------------------------------------------------------ planner


@dataclass(frozen=True)
class RotationPolicy:
    """What the spec says about rotation, plus the platform's propagation delays."""

    algorithm: Algorithm
    rotation_interval: timedelta
    overlap: timedelta
    access_token_ttl: timedelta
    leeway: timedelta = DEFAULT_LEEWAY
    propagation: timedelta = DEFAULT_PROPAGATION

    @property
    def publish_lead(self) -> timedelta:
        """How long a ``next`` key is published before it may sign.

        Every pod must have it (propagation) and relying apps' JWKS caches,
        refreshed from those pods, must have had time to pick it up (overlap).
        """
        return self.overlap + self.propagation

    @property
    def retain(self) -> timedelta:
        """How long a ``retired`` key stays published after it was retired.

        Pods still sign with it until they see the new set (propagation); such a
        token is valid for its TTL plus leeway; and relying apps get the overlap.
        """
        return max(self.overlap, self.access_token_ttl + self.leeway) + self.propagation


@dataclass(frozen=True)
class Plan:
    """The key set to write and what changed; ``changed`` False means: write nothing."""

    keys: tuple[KeyEntry, ...]
    created: tuple[str, ...] = ()
    activated: str | None = None
    retired: tuple[str, ...] = ()
    removed: tuple[str, ...] = ()
    repairs: tuple[str, ...] = ()
    next_rotation: datetime | None = None
    wake_at: datetime | None = None

    @property
    def changed(self) -> bool:
        return bool(self.created or self.activated or self.retired or self.removed or self.repairs)

    @property
    def active(self) -> KeyEntry:
        (active,) = (k for k in self.keys if k.state == "active")
        return active

    @property
    def next(self) -> KeyEntry | None:
        return next((k for k in self.keys if k.state == "next"), None)


def new_kid(alg: Algorithm, now: datetime, role: str, taken: Sequence[str]) -> str:
    """``YYYYMMDD-<alg>-<8 hex>``, derived from its inputs so that :func:`plan` stays pure."""
    counter = 0
    while True:
        seed = f"{format_ts(now)}|{role}|{','.join(sorted(taken))}|{counter}"
        kid = f"{now:%Y%m%d}-{alg.lower()}-{hashlib.sha256(seed.encode()).hexdigest()[:8]}"
        if kid not in taken:
            return kid
        counter += 1


@dataclass
class _Work:
    keys: list[KeyEntry]
    now: datetime
    created: list[str] = field(default_factory=list)
    retired: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    repairs: list[str] = field(default_factory=list)
    activated: str | None = None

    def add(self, alg: Algorithm, state: State, role: str) -> KeyEntry:
        kid = new_kid(alg, self.now, role, [k.kid for k in self.keys])
        entry = KeyEntry(kid, alg, state, self.now, self.now if state == "active" else None)
        self.keys.append(entry)
        self.created.append(kid)
        return entry

    def set(self, kid: str, **changes: Any) -> None:
        self.keys = [replace(k, **changes) if k.kid == kid else k for k in self.keys]

    def retire(self, kid: str) -> None:
        self.set(kid, state="retired", retired_at=self.now)
        self.retired.append(kid)


def _repair(work: _Work) -> None:
    """Make the set valid without unpublishing anything that may have signed."""
    actives = sorted(
        (k for k in work.keys if k.state == "active"),
        key=lambda k: (k.activated_at or k.created_at, k.kid),
    )
    for extra in actives[:-1]:
        work.repairs.append(f"{extra.kid} was one of {len(actives)} active keys; retired")
        work.retire(extra.kid)
    nexts = sorted((k for k in work.keys if k.state == "next"), key=lambda k: (k.created_at, k.kid))
    for extra in nexts[:-1]:
        work.repairs.append(f"{extra.kid} was one of {len(nexts)} next keys; retired")
        work.retire(extra.kid)
    for key in work.keys:
        if key.state == "retired" and key.retired_at is None:
            work.repairs.append(f"{key.kid} had no retired_at; counted from now")
            work.set(key.kid, retired_at=work.now)
    if not actives and work.keys:
        work.repairs.append("no active key; a new one was created")


def plan(
    keys: Sequence[KeyEntry],
    now: datetime,
    policy: RotationPolicy,
    *,
    rotate_now: bool = False,
) -> Plan:
    """Decide the next key set. Pure: the same inputs always give the same plan.

    * empty set: one ``active`` key and one ``next`` key;
    * a ``next`` key is always published (created right after each rotation);
      one of another algorithm than the policy's, never active, is replaced;
    * rotation when the active key is ``rotation_interval`` old **and** the
      ``next`` key has been published for ``publish_lead`` (``rotate_now``, a
      person's request, skips both waits: promote ``next`` or create a key);
    * a ``retired`` key is removed ``retain`` after ``retired_at``.
    """
    work = _Work(list(keys), now)
    _repair(work)
    active = next((k for k in work.keys if k.state == "active"), None)
    if active is None:
        active = work.add(policy.algorithm, "active", "active")
        work.activated = active.kid
    upcoming = next((k for k in work.keys if k.state == "next"), None)
    if upcoming is not None and upcoming.alg != policy.algorithm:
        work.keys = [k for k in work.keys if k.kid != upcoming.kid]  # never signed: safe
        work.removed.append(upcoming.kid)
        upcoming = None
    if upcoming is None:
        upcoming = work.add(policy.algorithm, "next", "next")

    activated_at = active.activated_at or active.created_at
    due = max(activated_at + policy.rotation_interval, upcoming.created_at + policy.publish_lead)
    if (rotate_now or now >= due) and upcoming.kid not in work.created:
        work.retire(active.kid)
        work.set(upcoming.kid, state="active", activated_at=now)
        work.activated = upcoming.kid
        upcoming = work.add(policy.algorithm, "next", "next")
        due = max(now + policy.rotation_interval, now + policy.publish_lead)
    elif rotate_now:  # the next key was created by this very call: activate a fresh one at once
        work.retire(active.kid)
        fresh = work.add(policy.algorithm, "active", "forced")
        work.activated = fresh.kid
        due = now + policy.rotation_interval

    removals: list[datetime] = []
    for key in list(work.keys):
        if key.state != "retired" or key.retired_at is None:
            continue
        expires = key.retired_at + policy.retain
        if now >= expires:
            work.keys = [k for k in work.keys if k.kid != key.kid]
            work.removed.append(key.kid)
        else:
            removals.append(expires)
    return Plan(
        keys=tuple(work.keys),
        created=tuple(work.created),
        activated=work.activated,
        retired=tuple(work.retired),
        removed=tuple(work.removed),
        repairs=tuple(work.repairs),
        next_rotation=due,
        wake_at=min([due, *removals]),
    )
