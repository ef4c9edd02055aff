"""The meter: prices finished calls and keeps the spend limits, for the proxy and the trunks.

One per process. It holds the carriers' rate tables (`RateTable`) and the spend ledger
(`SpendLedger`), both loaded from the store and reloaded when the CLI or the console changes
them. Three questions reach it, none of them awaiting anything:

* a CDR about to be stored: which rate, how many billable seconds, what cost (`bill`);
* an outbound call about to start: is its user, or the PBX, at a spend limit (`refusal`);
* once a second: which answered calls, priced as if they ended now, take a total past a
  limit (`calls_to_end`), so they are hung up before the bill runs further.

Only calls through a carrier are priced: the CDR's carrier names the table, its canonical
number is matched. Internal calls, and inbound calls (whose carrier has no table for the
number dialled in), cost nothing.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from core.accounting.limits import LimitBreach, SpendLedger, SpendLimit
from core.accounting.rates import Charge, Rate, RateTable, charge, duration_ms
from core.store.rows import CdrRow

OUTBOUND = "outbound"


@dataclass(frozen=True, slots=True)
class RunningCall:
    """What the meter needs of a call in progress: who pays, through which carrier, for
    which number, answered when."""

    call_id: str
    username: str
    carrier: str
    number: str
    answered_at: float


class Meter:
    """Rates and spend limits in memory (see the module docstring)."""

    def __init__(self, currency: str, ledger: SpendLedger | None = None) -> None:
        self.currency = currency
        self.rates = RateTable()
        self.ledger = ledger or SpendLedger()
        self.billed = 0
        self.unrated = 0  # outbound carrier calls answered with no matching prefix

    # -- loading ----------------------------------------------------------------------------
    def load_rates(self, rates_by_carrier: Mapping[str, tuple[str, Iterable[Rate]]]) -> None:
        """Replace every table: carrier → (currency, rates)."""
        self.rates.clear()
        for carrier, (currency, rates) in rates_by_carrier.items():
            self.rates.load(carrier, rates, currency)

    def load_spend(
        self,
        now: float,
        day_by_user: Mapping[str, int],
        month_by_user: Mapping[str, int],
        user_limits: Mapping[str, SpendLimit],
    ) -> None:
        self.ledger.set_user_limits(user_limits)
        self.ledger.load(now, day_by_user, month_by_user)

    # -- pricing ----------------------------------------------------------------------------
    def rate_for(self, carrier: str, number: str) -> Rate | None:
        return self.rates.match(carrier, number) if carrier else None

    def price(self, carrier: str, number: str, answered_ms: int) -> Charge | None:
        rate = self.rate_for(carrier, number)
        return None if rate is None else charge(rate, answered_ms)

    def bill(self, cdr: CdrRow) -> CdrRow:
        """Fill in the CDR's rate, billable seconds, cost and currency, and count the cost
        against its caller's spend. Returns the same row."""
        if cdr.direction != OUTBOUND or not cdr.carrier:
            return cdr
        rate = self.rate_for(cdr.carrier, cdr.number)
        if rate is None:
            if cdr.answered_at is not None:
                self.unrated += 1
            return cdr
        answered_ms = duration_ms(cdr.answered_at, cdr.ended_at)
        if cdr.answered_at is not None:  # connected: the first increment is due, however short
            answered_ms = max(1, answered_ms)
        priced = charge(rate, answered_ms)
        cdr.rate_prefix = rate.prefix
        cdr.rate_per_minute = rate.per_minute
        cdr.rate_increments = rate.increments_text
        cdr.billable_seconds = priced.billable_seconds
        cdr.cost = priced.cost
        cdr.currency = self.rates.currency_by_carrier.get(cdr.carrier, self.currency)
        self.billed += 1
        self.ledger.record(cdr.caller, priced.cost, cdr.ended_at or cdr.started_at)
        return cdr

    # -- limits -----------------------------------------------------------------------------
    def refusal(self, username: str, now: float) -> LimitBreach | None:
        """A spend limit that stops `username` starting a call through a carrier now."""
        return self.ledger.refusal(username, now)

    def calls_to_end(
        self, running: Iterable[RunningCall], now: float
    ) -> list[tuple[str, LimitBreach]]:
        """Answered calls that, priced as if they ended now, take a total past a hard limit."""
        if not self.ledger.active:
            return []
        costs = []
        for call in running:
            # Answered is billed: the connection fee and the first increment are due at once.
            answered_ms = max(1, duration_ms(call.answered_at, now))
            priced = self.price(call.carrier, call.number, answered_ms)
            if priced is not None:
                costs.append((call.call_id, call.username, priced.cost))
        return self.ledger.breaches(costs, now)
