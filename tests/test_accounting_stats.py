"""Statistics arithmetic: ASR, ACD, minutes, cost, top spenders, the hourly series."""

from __future__ import annotations

from core.accounting.stats import Tally, hourly_series, top_spenders, total


def test_asr_acd_minutes_by_hand() -> None:
    # 4 attempts, 3 answered for 30 s, 90 s and 120 s: ASR 75 %, ACD 80 s, 4 minutes.
    tally = Tally("alice", calls=4, answered=3, answered_ms=240_000, cost=123_400)
    assert tally.asr == 75.0
    assert tally.acd == 80.0
    assert tally.minutes == 4.0
    assert tally.row() == ["alice", "4", "3", "75.0", "80.0", "4.0", "0.1234"]


def test_empty_tally_divides_by_nothing() -> None:
    tally = Tally("nobody")
    assert (tally.asr, tally.acd, tally.minutes) == (0.0, 0.0, 0.0)


def test_total_and_top_spenders() -> None:
    rows = [
        Tally("alice", 2, 1, 60_000, 60, 50_000),
        Tally("bob", 3, 3, 30_000, 30, 90_000),
        Tally("carol", 1, 0, 0, 0, 0),
        Tally("dave", 5, 1, 1_000, 1, 50_000),
    ]
    everyone = total(rows)
    assert everyone == Tally("total", 11, 5, 91_000, 91, 190_000)
    assert [tally.key for tally in top_spenders(rows, 3)] == ["bob", "dave", "alice"]


def test_hourly_series_fills_empty_hours_and_drops_old_ones() -> None:
    now = 100 * 3_600 + 1_800.0  # half past hour 100
    series = hourly_series(
        [(100 * 3_600, 2, 10), (99 * 3_600, 1, 5), (50 * 3_600, 9, 9), (77 * 3_600, 4, 0)],
        now,
    )
    assert series.first_hour == 77 * 3_600
    assert len(series.calls) == 24
    assert series.calls[-1] == 2 and series.cost[-1] == 10
    assert series.calls[-2] == 1 and series.calls[0] == 4
    assert sum(series.calls) == 7
