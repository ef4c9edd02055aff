"""Spend limits: the toll-fraud guard that bills see.

Call-count limits (core/trunks/tollfraud.py) stop a burst; a spend limit stops the slow leak a
bill shows a month later: a user, or the whole PBX, may spend at most so much a day and a month
(UTC days and calendar months). Limits are hard:

* a call that would start while its user, or everyone together, is already at a limit is
  refused (403, with a SecurityEvent("toll-fraud"));
* a call in progress whose cost so far takes a total past a limit is ended (BYE to both sides)
  and its CDR says so.

The ledger holds the money already spent in the current day and month, per user and in all,
loaded from the CDRs at start and moved on as calls end; what the calls in progress cost so far
is added at each check, so a long call is counted before it ends. Money is integer micro-units
(core/accounting/rates.py). Pure: time is an argument.
"""

from __future__ import annotations

import calendar
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from core.accounting.rates import format_money

DAY_SECONDS = 86_400
_ADJECTIVES = {"day": "daily", "month": "monthly"}


@dataclass(frozen=True, slots=True)
class SpendLimit:
    """A day and a month cap in micro-units; 0 means no cap."""

    per_day: int = 0
    per_month: int = 0

    @property
    def unlimited(self) -> bool:
        return self.per_day == 0 and self.per_month == 0


NO_LIMIT = SpendLimit()


def day_start(now: float) -> float:
    """The epoch second the UTC day of `now` began."""
    return float(int(now // DAY_SECONDS) * DAY_SECONDS)


def month_start(now: float) -> float:
    """The epoch second the UTC calendar month of `now` began."""
    moment = time.gmtime(now)
    return float(calendar.timegm((moment.tm_year, moment.tm_mon, 1, 0, 0, 0)))


@dataclass(frozen=True, slots=True)
class LimitBreach:
    """Which limit a spend reached: who (a username, or "" for the PBX as a whole), the period
    and the amounts, for the 403 detail, the event and the CDR."""

    username: str
    period: str  # "day" or "month"
    limit: int
    spent: int

    @property
    def detail(self) -> str:
        who = f"user {self.username}" if self.username else "the PBX"
        return (
            f"{who} spent {format_money(self.spent)} of a {_ADJECTIVES[self.period]} limit "
            f"of {format_money(self.limit)}"
        )


class SpendLedger:
    """Money spent this UTC day and month, per user and in all, against the limits."""

    def __init__(self, global_limit: SpendLimit = NO_LIMIT, user_default: SpendLimit = NO_LIMIT):
        self.global_limit = global_limit
        self.user_default = user_default
        self.user_limits: dict[str, SpendLimit] = {}
        self._day = 0.0
        self._month = 0.0
        self.day_by_user: dict[str, int] = {}
        self.month_by_user: dict[str, int] = {}
        self.day_total = 0
        self.month_total = 0

    @property
    def active(self) -> bool:
        """Whether any limit is set (no limit: the proxy need not cost calls in progress)."""
        return not (
            self.global_limit.unlimited
            and self.user_default.unlimited
            and all(limit.unlimited for limit in self.user_limits.values())
        )

    def limit_of(self, username: str) -> SpendLimit:
        return self.user_limits.get(username, self.user_default)

    def set_user_limits(self, limits: Mapping[str, SpendLimit]) -> None:
        self.user_limits = dict(limits)

    def load(
        self,
        now: float,
        day_by_user: Mapping[str, int],
        month_by_user: Mapping[str, int],
    ) -> None:
        """Start from the sums of the CDRs of the day and month `now` is in."""
        self._day = day_start(now)
        self._month = month_start(now)
        self.day_by_user = {user: cost for user, cost in day_by_user.items() if cost}
        self.month_by_user = {user: cost for user, cost in month_by_user.items() if cost}
        self.day_total = sum(self.day_by_user.values())
        self.month_total = sum(self.month_by_user.values())

    def _roll(self, now: float) -> None:
        """A new UTC day (or month) starts its sums from nothing."""
        if now >= self._day + DAY_SECONDS or now < self._day:
            self._day = day_start(now)
            self.day_by_user.clear()
            self.day_total = 0
        month = month_start(now)
        if month != self._month:
            self._month = month
            self.month_by_user.clear()
            self.month_total = 0

    def record(self, username: str, cost: int, now: float) -> None:
        """A finished call of `username` cost `cost`."""
        self._roll(now)
        if cost <= 0:
            return
        self.day_by_user[username] = self.day_by_user.get(username, 0) + cost
        self.month_by_user[username] = self.month_by_user.get(username, 0) + cost
        self.day_total += cost
        self.month_total += cost

    def refusal(self, username: str, now: float) -> LimitBreach | None:
        """Why `username` may not start a call now (a total already at a limit), or None."""
        return self._reached(username, now, {}, strict=False)

    def breaches(
        self, running: Iterable[tuple[str, str, int]], now: float
    ) -> list[tuple[str, LimitBreach]]:
        """The calls to end: `running` is (call-id, username, cost so far) of each call in
        progress; a call is ended when its user's total or the global total, counting every
        call in progress, goes past a limit. Returned as (call-id, breach)."""
        running = list(running)
        if not running:
            return []
        extra_by_user: dict[str, int] = {}
        for _call_id, username, cost in running:
            extra_by_user[username] = extra_by_user.get(username, 0) + cost
        ended: list[tuple[str, LimitBreach]] = []
        for call_id, username, cost in running:
            if cost <= 0:
                continue
            breach = self._reached(username, now, extra_by_user, strict=True)
            if breach is not None:
                ended.append((call_id, breach))
        return ended

    def _reached(
        self, username: str, now: float, extra_by_user: Mapping[str, int], *, strict: bool
    ) -> LimitBreach | None:
        """A limit that the spend is at (`strict` False: refuse to start) or past (`strict`
        True: cut a running call, which may spend up to the limit exactly)."""
        self._roll(now)
        user_extra = extra_by_user.get(username, 0)
        all_extra = sum(extra_by_user.values())
        limit = self.limit_of(username)
        checks = (
            (username, "day", limit.per_day, self.day_by_user.get(username, 0) + user_extra),
            (username, "month", limit.per_month, self.month_by_user.get(username, 0) + user_extra),
            ("", "day", self.global_limit.per_day, self.day_total + all_extra),
            ("", "month", self.global_limit.per_month, self.month_total + all_extra),
        )
        for who, period, cap, spent in checks:
            if cap and (spent > cap if strict else spent >= cap):
                return LimitBreach(who, period, cap, spent)
        return None
