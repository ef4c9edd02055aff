"""The books: the meter kept in step with the store, CDR retention, and the console's figures.

The meter (core/accounting/meter.py) answers the SIP path from memory; this object fills it:
rate tables and spend limits at start and whenever the database changes, and the spend of the
current day and month from the CDRs. The process that writes CDRs (main, or the only one)
prices every one of them, its workers' too, so after the start its ledger is exact and is never
read back: a read would race the writer's queue. A worker process, which prices nothing,
reads the sums again every `SPEND_REFRESH_SECONDS`.

Retention (`AccountingSettings.keep_days`): once every `RETENTION_INTERVAL` seconds one
`DeleteOldCdrs` of at most `RETENTION_BATCH` rows goes to the store's writer, like any other
write of the hot path: nothing waits for it, and a backlog of a million old rows drains in
small transactions (about 30,000 rows a minute) instead of one long lock. `pbxtui cdr export`
first is the documented habit.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from core.accounting.limits import DAY_SECONDS, SpendLedger, SpendLimit, day_start, month_start
from core.accounting.meter import Meter
from core.accounting.rates import parse_money
from core.accounting.stats import HOUR_SECONDS, HourlySeries, Tally, hourly_series, top_spenders
from core.settings import AccountingSettings
from core.store.accounting import CdrFilter
from core.store.database import Store
from core.store.ops import DeleteOldCdrs

log = logging.getLogger(__name__)

SPEND_REFRESH_SECONDS = 30.0
RETENTION_INTERVAL = 2.0
RETENTION_BATCH = 1_000


def limit_of(day: str, month: str) -> SpendLimit:
    """A limit from the config's text amounts ("" = none); the config checked them."""
    return SpendLimit(parse_money(day) if day else 0, parse_money(month) if month else 0)


class TodayFigures:
    """What the Calls pane shows of today (UTC): the day's tally, top spenders, and calls
    and cost per hour over the last 24 hours."""

    __slots__ = ("hourly", "top", "total")

    def __init__(self, total: Tally, top: list[Tally], hourly: HourlySeries) -> None:
        self.total = total
        self.top = top
        self.hourly = hourly


class Books:
    """The meter, its loading, and retention (see the module docstring). `prices_calls`: this
    process writes and prices the CDRs (standalone or main), so its ledger stays exact; a
    worker's is read again from the store."""

    def __init__(self, settings: AccountingSettings, *, prices_calls: bool = True) -> None:
        self.settings = settings
        self.prices_calls = prices_calls
        ledger = SpendLedger(
            global_limit=limit_of(settings.day_limit, settings.month_limit),
            user_default=limit_of(settings.user_day_limit, settings.user_month_limit),
        )
        self.meter = Meter(settings.currency, ledger)
        self._refresh_task: asyncio.Task[None] | None = None
        self._next_refresh = 0.0
        self._next_retention = 0.0
        self.retention_batches = 0

    async def load(self, store: Store, now: float, *, sums: bool = True) -> None:
        """Rate tables and users' own limits from the store, and (`sums`) this day's and
        month's spend: at start, and in a worker process."""
        self.meter.load_rates(await store.rate_tables())
        if sums:
            await self.load_spend(store, now)
        else:
            self.meter.ledger.set_user_limits(await store.spend_limits())

    async def reload(self, store: Store, now: float) -> None:
        """Rates or limits changed in the database: read them again (and, in a process that
        prices nothing, the spend sums too)."""
        await self.load(store, now, sums=not self.prices_calls)

    async def load_spend(self, store: Store, now: float) -> None:
        month = month_start(now)
        day = day_start(now)
        self.meter.load_spend(
            now,
            await store.spend_by_user(day),
            await store.spend_by_user(month),
            await store.spend_limits(),
        )
        self._next_refresh = now + SPEND_REFRESH_SECONDS

    def housekeep(self, store: Store, now: float) -> None:
        """Once a second: the process that writes queues the next retention batch; a worker
        reads the spend sums again when due."""
        writes = self.prices_calls
        if not writes and now >= self._next_refresh and self._refresh_task is None:
            self._next_refresh = now + SPEND_REFRESH_SECONDS
            self._refresh_task = asyncio.get_running_loop().create_task(
                self._refresh(store, now), name="accounting-spend"
            )
        keep_days = self.settings.keep_days
        if writes and keep_days and now >= self._next_retention:
            self._next_retention = now + RETENTION_INTERVAL
            if store.submit(DeleteOldCdrs(now - keep_days * DAY_SECONDS, RETENTION_BATCH)):
                self.retention_batches += 1

    async def _refresh(self, store: Store, now: float) -> None:
        try:
            await self.load_spend(store, now)
        except Exception:
            log.exception("reading the spend totals failed")
        finally:
            self._refresh_task = None

    async def close(self) -> None:
        task = self._refresh_task
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    # -- figures for the console --------------------------------------------------------------
    @staticmethod
    async def today(store: Store, now: float, top: int = 5) -> TodayFigures:
        """Today's tally and top spenders, and the last 24 hours hour by hour."""
        total, by_user, _by_carrier = await store.cdr_tallies(
            CdrFilter(since=day_start(now), until=now + 1)
        )
        first_hour = (int(now // HOUR_SECONDS) - 23) * HOUR_SECONDS
        by_hour = await store.cdrs_by_hour(first_hour, now + 1)
        return TodayFigures(total, top_spenders(by_user, top), hourly_series(by_hour, now))
