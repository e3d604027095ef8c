"""PasswordPolicy: code-point lengths, max first, blocklist, context words (A1-A4)."""

from __future__ import annotations

import time

import pytest

from sso.config import PasswordSettings
from sso.errors import InvalidArgument, WeakPassword
from sso.security.passwords import Argon2PasswordHasher
from sso.security.policy import DEFAULT_BLOCKLIST_PATH, PasswordPolicy, load_blocklist


def reason_of(policy: PasswordPolicy, password: str, **kwargs: object) -> str | None:
    try:
        policy.check(password, **kwargs)  # type: ignore[arg-type]
    except InvalidArgument as exc:
        return exc.reason
    return None


def fullwidth(text: str) -> str:
    return "".join(chr(ord(c) + 0xFEE0) for c in text)


def ranked_blocklist() -> list[str]:
    lines = DEFAULT_BLOCKLIST_PATH.read_text(encoding="utf-8").splitlines()
    return [line for line in lines if line and not line.startswith("#")]


@pytest.fixture(scope="module")
def policy() -> PasswordPolicy:
    return PasswordPolicy.from_settings(PasswordSettings())


def test_defaults(policy: PasswordPolicy) -> None:
    assert (policy.min_length, policy.max_length) == (12, 128)


def test_shipped_blocklist_size_and_header() -> None:
    entries = ranked_blocklist()
    assert len(entries) >= 10_000
    assert len(load_blocklist()) == len(set(entries))
    header = DEFAULT_BLOCKLIST_PATH.read_text(encoding="utf-8")[:600]
    assert "zxcvbn" in header
    assert "MIT" in header


async def test_one_mebibyte_password_rejected_fast_with_zero_hashes(
    policy: PasswordPolicy, fast_settings: PasswordSettings
) -> None:
    hasher = Argon2PasswordHasher(fast_settings)
    huge = "a" * (1 << 20)
    started = time.perf_counter()
    with pytest.raises(InvalidArgument) as caught:
        policy.check(huge)
        await hasher.hash(huge)  # what a caller does after the policy
    elapsed = time.perf_counter() - started
    hasher.close()
    assert caught.value.reason == "PASSWORD_TOO_LONG"
    assert not isinstance(caught.value, WeakPassword)
    assert elapsed < 0.020
    assert hasher.calls == 0


def test_combining_marks_fail_fast(policy: PasswordPolicy) -> None:
    hostile = "a" + "\u0301" * 100_000
    started = time.perf_counter()
    assert reason_of(policy, hostile) == "PASSWORD_TOO_LONG"
    assert time.perf_counter() - started < 0.020


@pytest.mark.parametrize("length", [64, 128])
def test_long_passwords_accepted(policy: PasswordPolicy, length: int) -> None:
    password = ("Tr0ub4dor&3-horse-" * 10)[:length]
    assert reason_of(policy, password) is None


def test_129_rejected(policy: PasswordPolicy) -> None:
    assert reason_of(policy, ("Tr0ub4dor&3-horse-" * 10)[:129]) == "PASSWORD_TOO_LONG"


def test_length_counts_code_points(policy: PasswordPolicy) -> None:
    eleven = "🦊🐙🦉🐢🦀🐝🦋🐌🦑🐡🦔"
    assert len(eleven.encode()) == 44
    assert reason_of(policy, eleven) == "PASSWORD_TOO_SHORT"
    assert reason_of(policy, eleven + "🐳") is None
    assert reason_of(policy, "naïve cafés!") is None  # 12 code points, 14 bytes
    assert reason_of(policy, "Abcdefgh1!x") == "PASSWORD_TOO_SHORT"


def test_min_length_is_configurable() -> None:
    strict = PasswordPolicy(min_length=15)
    assert reason_of(strict, "violet-anchor-9") is None  # 15
    assert reason_of(strict, "violet-ancho-9") == "PASSWORD_TOO_SHORT"  # 14
    with pytest.raises(WeakPassword) as caught:
        strict.check("short")
    assert "15" in caught.value.message
    assert caught.value.metadata == {"min_length": "15"}


def test_no_composition_rules(policy: PasswordPolicy) -> None:
    for ok in ("correct horse battery staple", "pass word 😀 ünïcödé", "zzqxvbnmlkjhgf"):
        assert reason_of(policy, ok) is None, ok


def test_control_characters_invalid(policy: PasswordPolicy) -> None:
    assert reason_of(policy, "valid-looking\x00password") == "PASSWORD_INVALID"
    assert reason_of(policy, "line\nbreak password") == "PASSWORD_INVALID"
    assert reason_of(policy, "lone \ud800 surrogate pw") == "PASSWORD_INVALID"


def test_top_3000_that_meet_the_minimum_are_refused() -> None:
    ranked = ranked_blocklist()
    for minimum in (8, 12):
        policy = PasswordPolicy(min_length=minimum)
        eligible = [p for p in ranked if len(p) >= minimum][:3000]
        refused = [p for p in eligible if reason_of(policy, p) == "PASSWORD_COMMON"]
        assert len(eligible) >= (3000 if minimum == 8 else 200)
        assert refused == eligible
    # And the overall top 3,000 all fail one way or another at the default minimum.
    default = PasswordPolicy()
    assert all(reason_of(default, p) is not None for p in ranked[:3000])


def test_blocklist_is_case_insensitive_and_sees_through_decoration(
    policy: PasswordPolicy,
) -> None:
    for weak in (
        "QWERTY123456",
        "Password2025!",
        "!!Dragon1234567",
        "Iloveyou!2025",
        fullwidth("PASSWORD1234"),
    ):
        assert reason_of(policy, weak) == "PASSWORD_COMMON", weak


def test_repetition_refused(policy: PasswordPolicy) -> None:
    assert reason_of(policy, "aaaaaaaaaaaaaaaa") == "PASSWORD_COMMON"
    assert reason_of(policy, "abababababababab") == "PASSWORD_COMMON"


def test_product_and_context_words(policy: PasswordPolicy) -> None:
    for weak in ("Sso2025!Sso2025!", "SingleSignOn2025!", "single sign-on 2025", "SSO-sso-1234"):
        assert reason_of(policy, weak) == "PASSWORD_COMMON", weak
    email = ["jane.doe@example.com"]
    assert reason_of(policy, "JaneDoe2025!!", context_words=email) == "PASSWORD_COMMON"
    assert reason_of(policy, "example.com-2025", context_words=email) == "PASSWORD_COMMON"
    assert reason_of(policy, "JaneDoe2025!!") is None  # without context it is not known
    # A context word inside a real passphrase is fine.
    assert reason_of(policy, "jane likes purple turnips", context_words=email) is None
    assert reason_of(policy, "ssomething-unusual-42") is None


def test_messages_never_echo_the_password(policy: PasswordPolicy) -> None:
    for bad in ("short", "Password2025!", "x" * 200, "nul\x00nul\x00nul\x00"):
        with pytest.raises(InvalidArgument) as caught:
            policy.check(bad)
        assert bad not in caught.value.message
