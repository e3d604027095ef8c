"""Key-set directory: ensure, add_next, rotate, load, reload, JWKS (F5, F7)."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import stat
from datetime import timedelta
from pathlib import Path

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from security_test_helpers import AUDIENCE, ISSUER, NOW

from sso.security import keys
from sso.security.keys import KEYSET_FILE, KeyRing, KeySet, KeySetError
from sso.security.tokens import JwtAccessTokens


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def document(directory: Path) -> dict:  # type: ignore[type-arg]
    return json.loads((directory / KEYSET_FILE).read_text())


def test_ensure_creates_one_active_key_with_private_files(tmp_path: Path) -> None:
    directory = tmp_path / "keys"
    assert keys.ensure(directory, "RS256", now=NOW)
    doc = document(directory)
    assert doc["version"] == 1
    (entry,) = doc["keys"]
    assert entry["state"] == "active"
    assert entry["alg"] == "RS256"
    assert entry["created_at"] == entry["activated_at"] == "2025-06-01T12:00:00Z"
    assert entry["retired_at"] is None
    pem = directory / f"{entry['kid']}.pem"
    assert pem.read_bytes().startswith(b"-----BEGIN PRIVATE KEY-----")  # PKCS#8
    assert mode(pem) == 0o600
    assert mode(directory / KEYSET_FILE) == 0o600
    assert sorted(p.name for p in directory.iterdir() if not p.name.startswith(".")) == sorted(
        [KEYSET_FILE, pem.name]
    )
    assert not list(directory.glob("*.tmp")) and not list(directory.glob(".*.tmp"))
    key = KeySet.load(directory).active
    assert isinstance(key.private_key, rsa.RSAPrivateKey)
    assert key.private_key.key_size == 2048


def test_ensure_is_idempotent(tmp_path: Path) -> None:
    assert keys.ensure(tmp_path, "ES256", now=NOW)
    before = (tmp_path / KEYSET_FILE).read_bytes()
    assert not keys.ensure(tmp_path, "RS256", now=NOW)
    assert (tmp_path / KEYSET_FILE).read_bytes() == before


@pytest.mark.parametrize(
    ("alg", "kind"),
    [("RS256", rsa.RSAPrivateKey), ("ES256", ec.EllipticCurvePrivateKey)],
)
def test_generate_key_types(alg: keys.Algorithm, kind: type) -> None:
    assert isinstance(keys.generate_key(alg), kind)


def test_add_next_is_idempotent(tmp_path: Path) -> None:
    keys.ensure(tmp_path, "EdDSA", now=NOW)
    first = keys.add_next(tmp_path, "EdDSA", now=NOW)
    again = keys.add_next(tmp_path, "EdDSA", now=NOW + timedelta(hours=1))
    assert first == again
    states = sorted(k["state"] for k in document(tmp_path)["keys"])
    assert states == ["active", "next"]


def test_rotate_promotes_next_retires_active_and_prunes(tmp_path: Path) -> None:
    keys.ensure(tmp_path, "RS256", now=NOW)
    first = KeySet.load(tmp_path).active.kid
    upcoming = keys.add_next(tmp_path, "RS256", now=NOW + timedelta(minutes=1))

    second_set = keys.rotate(
        tmp_path, "RS256", retire_after=timedelta(minutes=10), now=NOW + timedelta(minutes=20)
    )
    assert second_set.active.kid == upcoming.kid
    assert second_set.by_kid[first].meta.state == "retired"
    assert second_set.next is not None
    assert second_set.active.meta.activated_at == NOW + timedelta(minutes=20)

    # A rotation less than retire_after later keeps the retired key ...
    third_set = keys.rotate(
        tmp_path, "RS256", retire_after=timedelta(minutes=10), now=NOW + timedelta(minutes=25)
    )
    assert first in third_set.by_kid
    # ... one after it drops it and deletes its PEM.
    fourth_set = keys.rotate(
        tmp_path, "RS256", retire_after=timedelta(minutes=10), now=NOW + timedelta(minutes=40)
    )
    assert first not in fourth_set.by_kid
    assert not (tmp_path / f"{first}.pem").exists()
    assert sum(k.meta.state == "active" for k in fourth_set.keys) == 1
    # The key retired by that very call is always kept.
    assert third_set.active.kid in fourth_set.by_kid
    pems = {p.stem for p in tmp_path.glob("*.pem")}
    assert pems == set(fourth_set.by_kid)


def test_rotate_without_next_creates_and_activates(tmp_path: Path) -> None:
    keys.ensure(tmp_path, "RS256", now=NOW)
    old = KeySet.load(tmp_path).active.kid
    rotated = keys.rotate(tmp_path, "ES256", retire_after=timedelta(minutes=6), now=NOW)
    assert rotated.active.alg == "ES256"
    assert rotated.active.kid != old
    assert rotated.next is not None and rotated.next.alg == "ES256"
    assert rotated.by_kid[old].meta.state == "retired"


def test_jwks_publishes_public_parts_only(multi_ring: KeyRing) -> None:
    jwks = multi_ring.jwks()
    assert [k["alg"] for k in jwks["keys"]] == ["ES256", "EdDSA", "RS256"]  # active, next, retired
    private_members = {"d", "p", "q", "dp", "dq", "qi", "k"}
    for jwk in jwks["keys"]:
        assert jwk["use"] == "sig"
        assert multi_ring.get(jwk["kid"]) is not None
        assert not private_members & set(jwk)
        assert "key_ops" not in jwk
    by_alg = {k["alg"]: k for k in jwks["keys"]}
    assert by_alg["RS256"]["kty"] == "RSA" and by_alg["RS256"]["e"] == "AQAB"
    assert by_alg["ES256"]["kty"] == "EC" and by_alg["ES256"]["crv"] == "P-256"
    assert by_alg["EdDSA"]["kty"] == "OKP" and by_alg["EdDSA"]["crv"] == "Ed25519"
    # A standard library can use the published keys.
    for jwk in jwks["keys"]:
        assert jwt.PyJWK(jwk).key_id == jwk["kid"]
    json.dumps(jwks)  # serialisable
    jwks["keys"].clear()  # callers get a copy
    assert len(multi_ring.jwks()["keys"]) == 3


def test_token_signed_before_rotation_verifies_after(tmp_path: Path) -> None:
    keys.ensure(tmp_path, "RS256")
    keys.add_next(tmp_path, "RS256")
    ring = KeyRing.load(tmp_path)
    tokens = JwtAccessTokens(ring, ISSUER, leeway=30)
    before = tokens.issue({"sub": "7", "aud": AUDIENCE}, ttl=timedelta(minutes=5), now=NOW)
    old_kid = ring.active.kid

    assert not ring.maybe_reload()  # nothing changed: no reload
    keys.rotate(tmp_path, "RS256", retire_after=timedelta(minutes=6))
    assert ring.maybe_reload()
    assert ring.active.kid != old_kid
    assert ring.get(old_kid) is not None and ring.get(old_kid).meta.state == "retired"  # type: ignore[union-attr]
    assert old_kid in {k["kid"] for k in ring.jwks()["keys"]}
    assert tokens.verify(before, audience=AUDIENCE, now=NOW)["sub"] == "7"
    after = tokens.issue({"sub": "8", "aud": AUDIENCE}, ttl=timedelta(minutes=5), now=NOW)
    assert jwt.get_unverified_header(after)["kid"] == ring.active.kid
    assert tokens.verify(after, audience=AUDIENCE, now=NOW)["sub"] == "8"
    assert not ring.maybe_reload()


def test_reload_follows_a_kubernetes_symlink_swap(tmp_path: Path) -> None:
    """Secret volumes: files are links into ..data, itself a link swapped atomically."""
    source_a, source_b = tmp_path / "a", tmp_path / "b"
    keys.ensure(source_a, "ES256")
    shutil.copytree(source_a, source_b)
    keys.rotate(source_b, "ES256", retire_after=timedelta(minutes=6))

    mount = tmp_path / "mount"
    mount.mkdir()
    shutil.copytree(source_a, mount / "..2025_06_01_a", ignore=shutil.ignore_patterns(".*"))
    shutil.copytree(source_b, mount / "..2025_06_01_b", ignore=shutil.ignore_patterns(".*"))
    os.symlink("..2025_06_01_a", mount / "..data")
    for name in os.listdir(source_b):
        if not name.startswith("."):
            os.symlink(f"..data/{name}", mount / name)

    ring = KeyRing.load(mount)
    assert ring.active.kid == KeySet.load(source_a).active.kid
    assert not ring.maybe_reload()
    os.symlink("..2025_06_01_b", mount / "..data_tmp")
    os.replace(mount / "..data_tmp", mount / "..data")  # the atomic swap
    assert ring.maybe_reload()
    assert ring.active.kid == KeySet.load(source_b).active.kid


def test_touch_without_change_does_not_reparse(tmp_path: Path) -> None:
    keys.ensure(tmp_path, "EdDSA")
    ring = KeyRing.load(tmp_path)
    path = tmp_path / KEYSET_FILE
    os.utime(path, ns=(1, 1))
    assert not ring.maybe_reload()
    assert ring.reloads == 0


def test_broken_update_keeps_the_old_set(tmp_path: Path) -> None:
    keys.ensure(tmp_path, "ES256")
    ring = KeyRing.load(tmp_path)
    active = ring.active.kid
    (tmp_path / KEYSET_FILE).write_text("{not json")
    with pytest.raises(KeySetError, match="not valid JSON"):
        ring.maybe_reload()
    assert ring.active.kid == active


async def test_watch_picks_up_rotation(tmp_path: Path) -> None:
    keys.ensure(tmp_path, "EdDSA")
    ring = KeyRing.load(tmp_path)
    first = ring.active.kid
    task = asyncio.create_task(ring.watch(0.01))
    try:
        (tmp_path / KEYSET_FILE).write_text("[]")  # a broken moment: logged, survived
        await asyncio.sleep(0.05)
        assert ring.active.kid == first
        os.remove(tmp_path / KEYSET_FILE)
        keys.ensure(tmp_path, "EdDSA")
        for _ in range(100):
            if ring.active.kid != first:
                break
            await asyncio.sleep(0.01)
        assert ring.active.kid != first
        assert not task.done()
    finally:
        task.cancel()


def write_set(directory: Path, entries: list[dict], pems: dict[str, bytes]) -> None:  # type: ignore[type-arg]
    directory.mkdir(exist_ok=True)
    (directory / KEYSET_FILE).write_text(json.dumps({"version": 1, "keys": entries}))
    for kid, pem in pems.items():
        (directory / f"{kid}.pem").write_bytes(pem)


def entry(kid: str, state: str = "active", alg: str = "ES256", **extra: object) -> dict:  # type: ignore[type-arg]
    base: dict[str, object] = {
        "kid": kid,
        "alg": alg,
        "state": state,
        "created_at": "2025-06-01T00:00:00Z",
        "activated_at": "2025-06-01T00:00:00Z" if state == "active" else None,
        "retired_at": "2025-06-02T00:00:00Z" if state == "retired" else None,
    }
    base.update(extra)
    return base


EC_PEM = keys.private_key_pem(keys.generate_key("ES256"))
ED_PEM = keys.private_key_pem(keys.generate_key("EdDSA"))


@pytest.mark.parametrize(
    ("entries", "pems", "message"),
    [
        ([], {}, "non-empty list"),
        ([entry("a", "next")], {"a": EC_PEM}, "exactly one key must be active, found 0"),
        ([entry("a"), entry("b")], {"a": EC_PEM, "b": EC_PEM}, "found 2"),
        ([entry("a"), entry("a", "retired")], {"a": EC_PEM}, "duplicate kid"),
        ([entry("a", alg="HS256")], {"a": EC_PEM}, "alg must be one of"),
        ([entry("a", alg="none")], {"a": EC_PEM}, "alg must be one of"),
        ([entry("a", state="primary")], {"a": EC_PEM}, "state must be one of"),
        ([entry("../etc/passwd")], {}, "kid must be"),
        ([entry("a" * 65)], {}, "kid must be"),
        ([entry("a")], {}, "a.pem: cannot read"),
        ([entry("a")], {"a": b"garbage"}, "not an unencrypted PEM private key"),
        ([entry("a")], {"a": ED_PEM}, "does not fit alg ES256"),
        ([entry("a", created_at="yesterday")], {"a": EC_PEM}, "not an ISO 8601"),
        ([entry("a", created_at="2025-06-01T00:00:00")], {"a": EC_PEM}, "time zone"),
        ([entry("a", activated_at=None)], {"a": EC_PEM}, "needs activated_at"),
        ([entry("a"), entry("b", "retired", retired_at=None)], {"a": EC_PEM}, "needs retired_at"),
        (
            [entry("a"), entry("b", "next"), entry("c", "next")],
            {"a": EC_PEM, "b": EC_PEM, "c": EC_PEM},
            "at most one key may be next",
        ),
    ],
)
def test_malformed_sets_give_clear_errors(
    tmp_path: Path,
    entries: list[dict],  # type: ignore[type-arg]
    pems: dict[str, bytes],
    message: str,
) -> None:
    write_set(tmp_path, entries, pems)
    with pytest.raises(KeySetError) as caught:
        KeySet.load(tmp_path)
    assert message in caught.value.message
    assert str(tmp_path) in caught.value.message  # says which file
    assert "PRIVATE KEY" not in caught.value.message


def test_missing_and_wrong_version(tmp_path: Path) -> None:
    with pytest.raises(KeySetError, match=r"keyset\.json: cannot read"):
        KeySet.load(tmp_path)
    (tmp_path / KEYSET_FILE).write_text(json.dumps({"version": 2, "keys": []}))
    with pytest.raises(KeySetError, match='"version": 1'):
        KeySet.load(tmp_path)


def test_weak_rsa_key_refused(tmp_path: Path) -> None:
    weak = rsa.generate_private_key(public_exponent=65537, key_size=1024)  # noqa: S505
    write_set(tmp_path, [entry("a", alg="RS256")], {"a": keys.private_key_pem(weak)})
    with pytest.raises(KeySetError, match="1024 bits"):
        KeySet.load(tmp_path)


def test_unknown_fields_are_ignored(tmp_path: Path) -> None:
    write_set(tmp_path, [entry("a", comment="hi")], {"a": EC_PEM})
    assert KeySet.load(tmp_path).active.kid == "a"


def test_get_treats_kid_as_untrusted(multi_ring: KeyRing) -> None:
    for kid in ("../../dev/null", "' OR 1=1--", "x" * 10_000, None, 7, ["a"], {"a": 1}):
        assert multi_ring.get(kid) is None
