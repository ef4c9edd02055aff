"""Outbound policy and call limits (core/trunks/tollfraud.py), with a fake clock."""

from __future__ import annotations

import pytest

from core.settings import DialplanSettings
from core.trunks.dialplan import Dialplan
from core.trunks.tollfraud import HOUR, CallLimiter, check_policy
from core.users import User

UK = Dialplan(DialplanSettings(country_code="44"))


def user(name: str = "alice", **fields: object) -> User:
    return User(name, "pbx.test", "x" * 32, "y" * 64, **fields)  # type: ignore[arg-type]


def refusal_for(policy: str, dialled: str, **fields: object):
    number = UK.parse(dialled)
    assert number is not None
    return check_policy(user(outbound_policy=policy, **fields), number, UK)


@pytest.mark.parametrize(
    ("policy", "dialled", "allowed"),
    [
        ("none", "960001", False),  # the default: other users only
        ("none", "01632960001", False),
        ("local", "960001", True),
        ("local", "01632960001", False),
        ("national", "01632960001", True),
        ("national", "+441632960001", True),  # our own country written internationally
        ("national", "+33123456789", False),
        ("national", "0033123456789", False),
        ("national", "33123456789", False),  # no prefix, too long for local: still abroad
        ("international", "+33123456789", True),
        ("international", "960001", True),
    ],
)
def test_policy_reach(policy: str, dialled: str, allowed: bool) -> None:
    refusal = refusal_for(policy, dialled)
    assert (refusal is None) is allowed
    if refusal is not None:
        assert refusal.status == 403
        assert policy in refusal.detail


def test_deny_prefix_wins_over_policy_and_allow() -> None:
    refusal = refusal_for(
        "international", "+44 900 123456", deny_prefixes=("0900",), allow_prefixes=("0900",)
    )
    assert refusal is not None
    assert refusal.status == 403
    assert "0900" in refusal.detail


def test_allow_prefix_grants_beyond_policy() -> None:
    assert refusal_for("none", "112", allow_prefixes=("112",)) is None
    assert refusal_for("national", "+353 1 234 5678", allow_prefixes=("+353",)) is None
    assert refusal_for("national", "+33 1 23 45 67 89", allow_prefixes=("+353",)) is not None


def test_deny_international_by_plus_alone() -> None:
    assert refusal_for("international", "+33123456789", deny_prefixes=("+",)) is not None
    assert refusal_for("international", "01632960001", deny_prefixes=("+",)) is None


def test_concurrent_limit_per_user() -> None:
    limiter = CallLimiter(max_global=0)
    alice = user(max_concurrent_calls=2)
    assert limiter.admit(alice, "c1", 0.0) is None
    assert limiter.admit(alice, "c2", 0.0) is None
    refusal = limiter.admit(alice, "c3", 0.0)
    assert refusal is not None and refusal.status == 486
    assert limiter.active("alice") == 2
    # Another user is not affected; a released call frees a place.
    assert limiter.admit(user("bob", max_concurrent_calls=1), "b1", 0.0) is None
    limiter.release("c1")
    limiter.release("c1")  # twice: no effect
    assert limiter.active("alice") == 1
    assert limiter.admit(alice, "c3", 1.0) is None


def test_global_limit() -> None:
    limiter = CallLimiter(max_global=2)
    assert limiter.admit(user("a"), "1", 0.0) is None
    assert limiter.admit(user("b"), "2", 0.0) is None
    refusal = limiter.admit(user("c"), "3", 0.0)
    assert refusal is not None
    assert refusal.status == 503
    assert refusal.extra_headers == [("Retry-After", "30")]
    limiter.release("2")
    assert limiter.admit(user("c"), "3", 0.0) is None


def test_calls_per_hour_is_a_sliding_window() -> None:
    limiter = CallLimiter(max_global=0)
    alice = user(max_calls_per_hour=3)
    for index, at in enumerate((0.0, 100.0, 200.0)):
        assert limiter.admit(alice, f"c{index}", at) is None
        limiter.release(f"c{index}")  # short calls: only the attempts count
    refusal = limiter.admit(alice, "c4", 1_000.0)
    assert refusal is not None
    assert refusal.status == 503
    assert refusal.retry_after == int(HOUR - 1_000.0)  # until the first one leaves the hour
    assert limiter.admit(alice, "c4", HOUR) is None  # the call at 0 is an hour old
    assert limiter.admit(alice, "c5", HOUR + 1) is not None


def test_expire_forgets_quiet_users() -> None:
    limiter = CallLimiter(max_global=0)
    limiter.admit(user(max_calls_per_hour=5), "c1", 0.0)
    limiter.expire(HOUR / 2)
    assert limiter._starts_by_user  # still inside the hour
    limiter.expire(HOUR + 1)
    assert not limiter._starts_by_user
