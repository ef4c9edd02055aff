"""Spend limits and the disposition of calls: pure, time as an argument."""

from __future__ import annotations

import calendar

import pytest

from core.accounting.disposition import (
    ANSWERED,
    BUSY,
    CALLEE,
    CALLER,
    CANCELLED,
    FAILED,
    MEDIA_TIMEOUT,
    NO_ANSWER,
    PBX,
    REFUSED,
    disposition_of,
    side_of,
)
from core.accounting.limits import SpendLedger, SpendLimit, day_start, month_start

NOON = float(calendar.timegm((2026, 3, 15, 12, 0, 0)))


def test_day_and_month_start_are_utc() -> None:
    assert day_start(NOON) == calendar.timegm((2026, 3, 15, 0, 0, 0))
    assert month_start(NOON) == calendar.timegm((2026, 3, 1, 0, 0, 0))
    assert month_start(calendar.timegm((2024, 2, 29, 23, 59, 59))) == calendar.timegm(
        (2024, 2, 1, 0, 0, 0)
    )


def test_a_user_at_the_limit_may_not_start_a_call() -> None:
    ledger = SpendLedger(user_default=SpendLimit(per_day=1_000_000))
    ledger.load(NOON, {"alice": 999_999}, {"alice": 999_999})
    assert ledger.refusal("alice", NOON) is None
    ledger.record("alice", 1, NOON)
    breach = ledger.refusal("alice", NOON)
    assert breach is not None and breach.period == "day" and breach.username == "alice"
    assert breach.detail == "user alice spent 1.00 of a daily limit of 1.00"
    assert ledger.refusal("bob", NOON) is None


def test_a_new_day_starts_from_nothing_but_the_month_remembers() -> None:
    ledger = SpendLedger(user_default=SpendLimit(per_day=100, per_month=150))
    ledger.load(NOON, {"alice": 100}, {"alice": 100})
    assert ledger.refusal("alice", NOON) is not None
    tomorrow = NOON + 86_400
    assert ledger.refusal("alice", tomorrow) is None
    ledger.record("alice", 50, tomorrow)
    breach = ledger.refusal("alice", tomorrow)
    assert breach is not None and breach.period == "month"
    next_month = float(calendar.timegm((2026, 4, 1, 0, 0, 1)))
    assert ledger.refusal("alice", next_month) is None


def test_per_user_limit_overrides_the_default() -> None:
    ledger = SpendLedger(user_default=SpendLimit(per_day=100))
    ledger.set_user_limits({"boss": SpendLimit()})
    ledger.load(NOON, {"boss": 500, "alice": 100}, {})
    assert ledger.refusal("boss", NOON) is None
    assert ledger.refusal("alice", NOON) is not None


def test_global_limit_counts_everyone() -> None:
    ledger = SpendLedger(global_limit=SpendLimit(per_month=300))
    ledger.load(NOON, {}, {"alice": 200, "bob": 100})
    breach = ledger.refusal("carol", NOON)
    assert breach is not None and breach.username == "" and "the PBX" in breach.detail


def test_running_calls_cross_a_limit_and_are_named() -> None:
    ledger = SpendLedger(user_default=SpendLimit(per_day=1_000))
    ledger.load(NOON, {"alice": 600}, {"alice": 600})
    # 600 + 400 = the limit exactly: allowed to run on
    assert ledger.breaches([("c1", "alice", 400)], NOON) == []
    ended = ledger.breaches([("c1", "alice", 300), ("c2", "alice", 101), ("c3", "bob", 5)], NOON)
    assert [call_id for call_id, _ in ended] == ["c1", "c2"]
    assert ended[0][1].spent == 1_001


def test_no_limits_is_inactive() -> None:
    assert not SpendLedger().active
    assert SpendLedger(global_limit=SpendLimit(per_day=1)).active
    ledger = SpendLedger()
    ledger.set_user_limits({"a": SpendLimit(per_month=5)})
    assert ledger.active


@pytest.mark.parametrize(
    ("answered", "status", "reason", "refused", "disposition", "side"),
    [
        (True, 200, "caller hung up", False, ANSWERED, CALLER),
        (True, 200, "callee hung up", False, ANSWERED, CALLEE),
        (True, 200, "maximum call duration", False, ANSWERED, PBX),
        (True, 200, "media timeout", False, MEDIA_TIMEOUT, PBX),
        (False, 486, "Busy Here", False, BUSY, CALLEE),
        (False, 600, "Busy Everywhere", False, BUSY, CALLEE),
        (False, 408, "no answer", False, NO_ANSWER, PBX),
        (False, 487, "Request Terminated", False, CANCELLED, CALLER),
        (False, 403, "spend limit", True, REFUSED, PBX),
        (False, 503, "Service Unavailable", False, FAILED, CALLEE),
        (False, 480, "Temporarily Unavailable", False, FAILED, CALLEE),
    ],
)
def test_disposition_and_side(
    answered: bool, status: int, reason: str, refused: bool, disposition: str, side: str
) -> None:
    assert disposition_of(answered, status, reason, refused) == disposition
    assert side_of(disposition, reason) == side
