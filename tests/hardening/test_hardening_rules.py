"""The pure rules: lockout schedule (C2's figures), sliding window, client address, fallback."""

from __future__ import annotations

from datetime import timedelta

import pytest
from pydantic import ValidationError

from sso.config import RateLimitSettings
from sso.domain.limits import (
    LimitRule,
    LockoutPolicy,
    RequestLimits,
    client_address,
    parse_networks,
    sliding_window,
)
from sso.storage.ratelimit import LocalRateLimiter


def test_lockout_schedule_doubles_every_threshold_failures_up_to_the_cap() -> None:
    policy = LockoutPolicy()
    delays = {n: policy.delay_for(n).total_seconds() for n in (1, 4, 5, 9, 10, 15, 20, 25, 30, 99)}
    assert delays == {
        1: 0, 4: 0, 5: 30, 9: 30, 10: 60, 15: 120, 20: 240, 25: 480, 30: 900, 99: 900,
    }  # fmt: skip
    assert policy.steps() == [
        (5, timedelta(seconds=30)),
        (10, timedelta(seconds=60)),
        (15, timedelta(seconds=120)),
        (20, timedelta(seconds=240)),
        (25, timedelta(seconds=480)),
        (30, timedelta(minutes=15)),
    ]
    assert LockoutPolicy().delay_for(10**6) == timedelta(minutes=15)


def test_sliding_window_counts_the_overlap_of_the_previous_window() -> None:
    # 10 per 60 s; 10 hits in the previous window, 30 s into this one: half of them count.
    assert sliding_window(10, 60, 30, 0, 10) == (True, 0.0)
    allowed, wait = sliding_window(10, 60, 30, 5, 10)
    assert not allowed and wait == pytest.approx(60 * (1 - 4 / 10) - 30)
    allowed, wait = sliding_window(10, 60, 10, 10, 0)  # this window is full
    assert not allowed and wait == pytest.approx(50 + 60 * (1 - 9 / 10))


async def test_local_limiter_enforces_its_share_and_says_when_to_retry() -> None:
    now = [1000.0]
    limiter = LocalRateLimiter(fraction=0.5, clock=lambda: now[0])
    rule = LimitRule("login_ip", 10, timedelta(seconds=60))
    decisions = [await limiter.hit(rule, "10.0.0.1") for _ in range(6)]
    assert [d.allowed for d in decisions] == [True] * 5 + [False]
    assert decisions[-1].retry_after > 0
    assert (await limiter.hit(rule, "10.0.0.2")).allowed  # keys are independent
    now[0] += 120  # two windows later nothing counts
    assert (await limiter.hit(rule, "10.0.0.1")).allowed


async def test_local_limiter_memory_is_bounded() -> None:
    limiter = LocalRateLimiter(max_keys=100)
    rule = LimitRule("login_ip", 5, timedelta(seconds=60))
    for i in range(1000):
        await limiter.hit(rule, f"k{i}")
    assert len(limiter) <= 100


TRUSTED = parse_networks(["10.0.0.0/8", "::1/128"])


@pytest.mark.parametrize(
    ("peer", "xff", "expected"),
    [
        ("203.0.113.9", "1.2.3.4", "203.0.113.9"),  # untrusted peer: its header is ignored
        ("10.1.1.1", "1.2.3.4", "1.2.3.4"),
        ("10.1.1.1", "6.6.6.6, 1.2.3.4", "1.2.3.4"),  # the left part is the client's own claim
        ("10.1.1.1", "1.2.3.4, 10.2.2.2", "1.2.3.4"),  # nearest hops that are proxies skipped
        ("10.1.1.1", "", "10.1.1.1"),
        ("10.1.1.1", "garbage", "10.1.1.1"),
        ("10.1.1.1", "1.2.3.4:5678", "1.2.3.4"),
        ("::1", "2001:db8::7", "2001:db8::7"),
        ("::1", "[2001:db8::7]:443", "2001:db8::7"),
    ],
)
def test_client_address_believes_forwarded_for_only_from_trusted_proxies(
    peer: str, xff: str, expected: str
) -> None:
    assert client_address(peer, xff, TRUSTED) == expected
    assert client_address(peer, xff, ()) == peer


def test_settings_validate_proxies_and_build_rules() -> None:
    s = RateLimitSettings(trusted_proxies=["10.0.0.1/8", " ::1 "])
    assert s.trusted_proxies == ["10.0.0.0/8", "::1/128"]
    with pytest.raises(ValidationError):
        RateLimitSettings(trusted_proxies=["not-a-network"])
    limits = RequestLimits.from_settings(RateLimitSettings())
    assert limits.login_ip == LimitRule("login_ip", 100, timedelta(minutes=1))
    assert limits.login_email == LimitRule("login_email", 10, timedelta(minutes=1))
    assert limits.register_ip == LimitRule("register_ip", 20, timedelta(minutes=1))
    assert RequestLimits.from_settings(RateLimitSettings(enabled=False)) == RequestLimits()
