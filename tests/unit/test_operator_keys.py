"""The operator's signing keys: format compatibility with the service, and the rotation planner.

Compatibility is proven with the service's own loader (``sso.security.keyset``):
what ``sso_operator.keys`` writes into a Secret, laid out as the kubelet mounts
it, must load there. The planner is pure, so it is tested exhaustively: named
cases for each rule, and a property test that replays thousands of random
rotation policies and irregular timer ticks (outages, crashes before the
Secret write, re-runs) and checks at every instant that every key that signed
a still-valid token, or is about to sign, is published.
"""

from __future__ import annotations

import base64
import dataclasses
import random  # noqa: TID251 - reproducible test schedules, nothing secret
from datetime import UTC, datetime, timedelta
from pathlib import Path

import jwt
import pytest

from sso.security.keyset import KeySet, KeySetError
from sso_operator import keys
from sso_operator.keys import KeyEntry, KeySetFormatError, RotationPolicy, plan

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
POLICY = RotationPolicy(
    algorithm="RS256",
    rotation_interval=timedelta(days=30),
    overlap=timedelta(hours=24),
    access_token_ttl=timedelta(minutes=5),
)


def mount(tmp_path: Path, data: dict[str, str]) -> Path:
    """Write a Secret's data as the kubelet does: one file per key, in a flat directory."""
    directory = tmp_path / "keys"
    directory.mkdir(mode=0o700)
    for name, value in data.items():
        (directory / name).write_bytes(base64.b64decode(value))
        (directory / name).chmod(0o600)
    return directory


def materialise(entries: tuple[KeyEntry, ...]) -> dict[str, bytes]:
    return {e.kid: keys.generate_private_key_pem(e.alg) for e in entries}


# ------------------------------------------------------------ compatibility


@pytest.mark.parametrize("alg", ["RS256", "ES256", "EdDSA"])
def test_secret_loads_with_the_service_loader(tmp_path: Path, alg: keys.Algorithm) -> None:
    policy = RotationPolicy(alg, timedelta(hours=2), timedelta(minutes=10), timedelta(minutes=5))
    first = plan((), T0, policy)
    later = plan(first.keys, T0 + timedelta(hours=3), policy)  # one rotation: 3 states
    assert {k.state for k in later.keys} == {"active", "next", "retired"}
    pems = materialise(later.keys)
    keyset = KeySet.load(mount(tmp_path, keys.secret_data(later.keys, pems)))
    assert keyset.active.kid == later.active.kid
    assert keyset.next is not None and keyset.next.kid == later.next.kid  # type: ignore[union-attr]
    published = [jwk["kid"] for jwk in keyset.jwks["keys"]]
    assert sorted(published) == sorted(k.kid for k in later.keys)
    assert published[0] == later.active.kid
    for key in keyset.keys:
        ours = next(k for k in later.keys if k.kid == key.kid)
        assert (key.meta.alg, key.meta.state) == (ours.alg, ours.state)
        assert key.meta.created_at == ours.created_at
        assert key.meta.activated_at == ours.activated_at
        assert key.meta.retired_at == ours.retired_at
    # The active key signs a token that the published public key verifies.
    token = jwt.encode({"sub": "1"}, keyset.active.private_key, algorithm=alg)
    assert jwt.decode(token, keyset.active.public_key, algorithms=[alg])["sub"] == "1"


def test_rsa_keys_have_2048_bits_and_kids_follow_the_contract(tmp_path: Path) -> None:
    first = plan((), T0, POLICY)
    keyset = KeySet.load(mount(tmp_path, keys.secret_data(first.keys, materialise(first.keys))))
    assert all(k.private_key.key_size >= 2048 for k in keyset.keys)  # type: ignore[union-attr]
    for entry in first.keys:
        date, alg, suffix = entry.kid.split("-")
        assert (date, alg, len(suffix)) == ("20260301", "rs256", 8)


def test_round_trip_through_secret_data() -> None:
    first = plan((), T0, POLICY)
    pems = materialise(first.keys)
    entries, read_pems = keys.read_secret_data(keys.secret_data(first.keys, pems))
    assert sorted(entries, key=lambda e: e.kid) == sorted(first.keys, key=lambda e: e.kid)
    assert read_pems == pems


def test_unreadable_secrets_are_errors_the_service_agrees_with(tmp_path: Path) -> None:
    first = plan((), T0, POLICY)
    pems = materialise(first.keys)
    data = keys.secret_data(first.keys, pems)
    kid = first.active.kid
    wrong = dict(data)
    wrong[f"{kid}.pem"] = base64.b64encode(keys.generate_private_key_pem("ES256")).decode()
    with pytest.raises(KeySetFormatError, match=f"{kid}.pem: key type .* does not fit RS256"):
        keys.read_secret_data(wrong)
    with pytest.raises(KeySetError, match="does not fit alg RS256"):
        KeySet.load(mount(tmp_path, wrong))
    missing = {k: v for k, v in data.items() if k != f"{kid}.pem"}
    with pytest.raises(KeySetFormatError, match="missing from the Secret"):
        keys.read_secret_data(missing)
    with pytest.raises(KeySetFormatError, match=r"keyset\.json: missing"):
        keys.read_secret_data({})
    for text, message in [
        ("{", "not valid JSON"),
        ('{"version": 2, "keys": []}', "version"),
        ('{"version": 1, "keys": [{"kid": "../x", "alg": "RS256"}]}', "kid must be"),
        ('{"version": 1, "keys": [{"kid": "a", "alg": "HS256", "state": "active"}]}', "alg"),
    ]:
        with pytest.raises(KeySetFormatError, match=message):
            keys.parse_keyset_json(text)


# ------------------------------------------------------------ planner rules


def test_empty_set_gets_an_active_and_a_next_key() -> None:
    first = plan((), T0, POLICY)
    assert [k.state for k in first.keys] == ["active", "next"]
    assert first.activated == first.active.kid and len(first.created) == 2
    assert first.active.activated_at == T0
    assert first.next_rotation == T0 + POLICY.rotation_interval
    assert first.changed


def test_nothing_happens_before_the_rotation_is_due() -> None:
    first = plan((), T0, POLICY)
    for offset in (timedelta(0), timedelta(hours=1), timedelta(days=29, hours=23)):
        again = plan(first.keys, T0 + offset, POLICY)
        assert not again.changed and again.keys == first.keys
        assert again.wake_at == T0 + POLICY.rotation_interval


def test_rotation_promotes_next_retires_active_and_publishes_a_new_next() -> None:
    first = plan((), T0, POLICY)
    when = T0 + POLICY.rotation_interval
    second = plan(first.keys, when, POLICY)
    assert second.activated == first.next.kid  # type: ignore[union-attr]
    assert second.retired == (first.active.kid,)
    assert len(second.created) == 1 and second.next.kid == second.created[0]  # type: ignore[union-attr]
    old = next(k for k in second.keys if k.kid == first.active.kid)
    assert (old.state, old.retired_at) == ("retired", when)
    assert second.active.activated_at == when
    assert second.wake_at == when + POLICY.retain  # the retired key's removal comes first


def test_rotation_waits_until_next_was_published_long_enough() -> None:
    first = plan((), T0, POLICY)
    # The next key is replaced late (say, an algorithm change the day before the rotation).
    late = T0 + POLICY.rotation_interval - timedelta(hours=1)
    es = RotationPolicy("ES256", POLICY.rotation_interval, POLICY.overlap, POLICY.access_token_ttl)
    switched = plan(first.keys, late, es)
    assert switched.removed == (first.next.kid,)  # type: ignore[union-attr]
    assert switched.next.alg == "ES256" and switched.next.created_at == late  # type: ignore[union-attr]
    assert switched.next_rotation == late + es.publish_lead
    waiting = plan(switched.keys, late + es.publish_lead - timedelta(seconds=1), es)
    assert not waiting.changed
    done = plan(switched.keys, late + es.publish_lead, es)
    assert done.active.alg == "ES256" and done.activated == switched.next.kid  # type: ignore[union-attr]
    # The RS256 key stays published as retired: both kinds verify meanwhile.
    assert {k.alg for k in done.keys} == {"RS256", "ES256"}


def test_retired_keys_are_removed_only_after_the_retention() -> None:
    first = plan((), T0, POLICY)
    rotated_at = T0 + POLICY.rotation_interval
    second = plan(first.keys, rotated_at, POLICY)
    assert POLICY.retain == timedelta(hours=24) + POLICY.propagation
    kept = plan(second.keys, rotated_at + POLICY.retain - timedelta(seconds=1), POLICY)
    assert not kept.changed
    gone = plan(second.keys, rotated_at + POLICY.retain, POLICY)
    assert gone.removed == (first.active.kid,) and len(gone.keys) == 2


def test_retention_covers_token_ttl_plus_leeway_when_overlap_is_short() -> None:
    policy = RotationPolicy("RS256", timedelta(hours=1), timedelta(minutes=5), timedelta(minutes=5))
    assert policy.retain == timedelta(minutes=6) + policy.propagation
    assert policy.publish_lead == timedelta(minutes=5) + policy.propagation


def test_rotate_now_promotes_next_at_once_or_creates_a_fresh_active_key() -> None:
    first = plan((), T0, POLICY)
    forced = plan(first.keys, T0 + timedelta(minutes=1), POLICY, rotate_now=True)
    assert forced.activated == first.next.kid  # type: ignore[union-attr]
    assert forced.retired == (first.active.kid,)
    # Nothing to promote (the only next key was just created): a fresh active key.
    bootstrap = plan((), T0, POLICY, rotate_now=True)
    assert sum(k.state == "active" for k in bootstrap.keys) == 1
    assert bootstrap.active.kid not in {k.kid for k in bootstrap.keys if k.state == "next"}


def test_repairs_never_unpublish_a_key() -> None:
    a = KeyEntry("a", "RS256", "active", T0, T0)
    b = KeyEntry("b", "RS256", "active", T0, T0 + timedelta(minutes=1))
    n1 = KeyEntry("n1", "RS256", "next", T0)
    n2 = KeyEntry("n2", "RS256", "next", T0 + timedelta(minutes=1))
    r = KeyEntry("r", "RS256", "retired", T0)  # no retired_at
    now = T0 + timedelta(minutes=2)
    repaired = plan((a, b, n1, n2, r), now, POLICY)
    states = {k.kid: k.state for k in repaired.keys}
    assert states == {"a": "retired", "b": "active", "n1": "retired", "n2": "next", "r": "retired"}
    assert len(repaired.repairs) == 3 and repaired.changed
    assert all(k.retired_at == now for k in repaired.keys if k.kid in {"a", "n1", "r"})
    only_retired = plan((replace_state(r, now),), now, POLICY)
    assert only_retired.active.kid not in {"r"} and "r" in {k.kid for k in only_retired.keys}


def replace_state(entry: KeyEntry, retired_at: datetime) -> KeyEntry:
    return KeyEntry(entry.kid, entry.alg, "retired", entry.created_at, None, retired_at)


def test_applying_a_plan_twice_changes_nothing_the_second_time() -> None:
    state: tuple[KeyEntry, ...] = ()
    for hours in (0, 24 * 30, 24 * 30 + 1, 24 * 31 + 1, 24 * 60, 24 * 100):
        now = T0 + timedelta(hours=hours)
        once = plan(state, now, POLICY)
        twice = plan(once.keys, now, POLICY)
        assert not twice.changed and twice.keys == once.keys
        state = once.keys


def test_plan_is_deterministic() -> None:
    assert plan((), T0, POLICY) == plan((), T0, POLICY)


# ------------------------------------------------------------ property test


def _check_history(
    history: list[tuple[datetime, tuple[KeyEntry, ...]]], end: datetime, policy: RotationPolicy
) -> None:
    """Every key is published wherever a token it signed may still be presented.

    A pod sees a written set up to ``propagation`` late, so a key retired at R
    may still sign until R + propagation, and its tokens live TTL + leeway
    longer. Relying apps must have had the key ``overlap`` before the first
    signature. So key K must be in every set current during
    [activated - overlap - propagation, retired + propagation + TTL + leeway).
    """
    for _, state in history:
        assert sum(k.state == "active" for k in state) == 1
        assert sum(k.state == "next" for k in state) <= 1
    activated: dict[str, datetime] = {}
    retired: dict[str, datetime] = {}
    for when, state in history:
        for key in state:
            if key.state == "active":
                activated.setdefault(key.kid, when)
            if key.state == "retired" and key.kid in activated:
                retired.setdefault(key.kid, when)
    starts = [when for when, _ in history]
    stops = [*starts[1:], end]
    for kid, since in activated.items():
        lower = max(since - policy.overlap - policy.propagation, starts[0])
        last_signature = retired.get(kid, end) + policy.propagation
        upper = last_signature + policy.access_token_ttl + policy.leeway
        for (start, state), stop in zip(history, stops, strict=True):
            if start < upper and stop > lower:
                assert kid in {k.kid for k in state}, (
                    f"{kid} missing from the set written at {start} "
                    f"(must be published {lower} .. {upper})"
                )


@pytest.mark.parametrize("seed", range(40))
def test_every_signing_key_stays_published_while_its_tokens_live(seed: int) -> None:
    rng = random.Random(seed)
    for _ in range(25):
        ttl = timedelta(seconds=rng.randint(30, 86400 // 4))
        overlap = ttl + timedelta(seconds=rng.choice([0, rng.randint(1, 7200)]))
        interval = overlap + timedelta(
            seconds=rng.choice([rng.randint(1, 900), rng.randint(1, 3 * 86400)])
        )
        policy = RotationPolicy(
            rng.choice(["RS256", "ES256", "EdDSA"]),
            interval,
            overlap,
            ttl,
            leeway=timedelta(seconds=rng.choice([0, 30, 60])),
            propagation=timedelta(seconds=rng.choice([0, 5, 90, 600])),
        )
        now = T0 + timedelta(seconds=rng.randint(0, 86400))
        end = now + 12 * max(interval, policy.publish_lead)
        state: tuple[KeyEntry, ...] = ()
        history: list[tuple[datetime, tuple[KeyEntry, ...]]] = []
        rotations = 0
        while now < end:
            if rng.random() < 0.03:  # someone changes spec.signing.algorithm
                policy = dataclasses.replace(policy, algorithm=rng.choice(["RS256", "ES256"]))
            result = plan(state, now, policy)
            if result.changed and (not history or rng.random() > 0.1):  # 10 %: crash first
                state = result.keys
                history.append((now, state))
                rotations += bool(result.retired)
                assert not plan(state, now, policy).changed  # a re-run is a no-op
            cap = int(interval.total_seconds())
            gap = rng.choice([rng.randint(1, 120), rng.randint(1, cap), rng.randint(1, cap)])
            if rng.random() < 0.05:  # an operator outage
                gap = rng.randint(cap, 3 * cap)
            now += timedelta(seconds=gap)
        assert rotations >= 2, policy  # the schedule really rotated
        _check_history(history, end, policy)


def test_the_property_check_catches_a_planner_that_removes_keys_early() -> None:
    """The invariant check itself can fail: an early removal of a retired key is caught."""
    first = plan((), T0, POLICY)
    rotated_at = T0 + POLICY.rotation_interval
    second = plan(first.keys, rotated_at, POLICY)
    early = tuple(k for k in second.keys if k.state != "retired")
    history = [
        (T0, first.keys),
        (rotated_at, second.keys),
        (rotated_at + timedelta(minutes=1), early),
    ]
    with pytest.raises(AssertionError, match="missing from the set"):
        _check_history(history, rotated_at + timedelta(hours=1), POLICY)
