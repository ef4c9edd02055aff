"""Call statistics from CDRs: the figures an admin reads a carrier or a user by.

* ASR, the answer-seizure ratio: answered calls / call attempts (ITU-T E.411 §2.7 counts
  seizures; here every CDR is a seizure, including calls our policy refused).
* ACD, the average call duration: answered seconds / answered calls.
* Minutes: answered seconds / 60. Cost: the sum of the CDRs' costs, in micro-units.

The store sums CDRs with one GROUP BY (`Tally` rows, see `core/store`); this module turns sums
into figures and per-hour series, so the CLI, the console and the tests share one arithmetic.
Pure: no SQL, no clock.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from core.accounting.rates import format_money

HOUR_SECONDS = 3_600


@dataclass(frozen=True, slots=True)
class Tally:
    """Sums over a set of CDRs: `key` is what they share (a user, a carrier, an hour's start
    as text, or "" for all of them)."""

    key: str
    calls: int = 0
    answered: int = 0
    answered_ms: int = 0
    billable_seconds: int = 0
    cost: int = 0  # micro-units

    @property
    def asr(self) -> float:
        """Answered / attempts, as a percentage (0 when there were no calls)."""
        return 100.0 * self.answered / self.calls if self.calls else 0.0

    @property
    def acd(self) -> float:
        """Average answered call length in seconds (0 when none was answered)."""
        return self.answered_ms / 1_000 / self.answered if self.answered else 0.0

    @property
    def minutes(self) -> float:
        return self.answered_ms / 60_000

    def __add__(self, other: Tally) -> Tally:
        return Tally(
            self.key,
            self.calls + other.calls,
            self.answered + other.answered,
            self.answered_ms + other.answered_ms,
            self.billable_seconds + other.billable_seconds,
            self.cost + other.cost,
        )

    def row(self) -> list[str]:
        """Text cells for a table: key, calls, answered, ASR %, ACD s, minutes, cost."""
        return [
            self.key,
            str(self.calls),
            str(self.answered),
            f"{self.asr:.1f}",
            f"{self.acd:.1f}",
            f"{self.minutes:.1f}",
            format_money(self.cost),
        ]


TALLY_COLUMNS = ("", "calls", "answered", "asr%", "acd_s", "minutes", "cost")


def total(tallies: Iterable[Tally], key: str = "total") -> Tally:
    """The sum of several tallies (per-user rows back to the whole period)."""
    result = Tally(key)
    for tally in tallies:
        result = result + tally
    return Tally(
        key,
        result.calls,
        result.answered,
        result.answered_ms,
        result.billable_seconds,
        result.cost,
    )


def top_spenders(tallies: Iterable[Tally], count: int = 5) -> list[Tally]:
    """The `count` keys that cost most (ties: more calls first, then by name); free ones left
    out, since a spender who spent nothing is no lead to follow."""
    costly = [tally for tally in tallies if tally.cost > 0]
    costly.sort(key=lambda tally: (-tally.cost, -tally.calls, tally.key))
    return costly[:count]


@dataclass(frozen=True, slots=True)
class HourlySeries:
    """Calls and cost in each hour of a window, oldest hour first (the console's chart)."""

    first_hour: int  # epoch second the first bucket starts
    calls: tuple[int, ...]
    cost: tuple[int, ...]


def hourly_series(
    by_hour: Iterable[tuple[int, int, int]], now: float, hours: int = 24
) -> HourlySeries:
    """Buckets for the `hours` hours up to and including the one `now` is in, from
    (hour start epoch, calls, cost) sums; hours with no calls are zero, sums outside dropped."""
    last = int(now // HOUR_SECONDS) * HOUR_SECONDS
    first = last - (hours - 1) * HOUR_SECONDS
    calls = [0] * hours
    cost = [0] * hours
    for hour, count, money in by_hour:
        index = (hour - first) // HOUR_SECONDS
        if 0 <= index < hours:
            calls[index] += count
            cost[index] += money
    return HourlySeries(first, tuple(calls), tuple(cost))
