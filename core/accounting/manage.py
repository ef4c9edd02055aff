"""Accounting for the console: rate tables, spend limits and today's figures of a running Pbx.

The same rules as the CLI (`pbxtui rate ...`, `pbxtui spend ...`), through the same parsers:
bad input raises `ValueError` with a sentence fit to show under a form field. Every change
goes to SQLite first, then into the meter the SIP path asks, and to the worker processes.
"""

from __future__ import annotations

from collections.abc import Callable

from core.accounting.books import Books, TodayFigures
from core.accounting.limits import SpendLimit
from core.accounting.rates import (
    Rate,
    RateImportError,
    parse_money,
    parse_prefix,
    parse_rates_csv,
    validate_currency,
)
from core.store.accounting import CdrFilter
from core.store.database import Store
from core.store.errors import NotFoundError
from core.store.rows import CdrRow


class AccountingAdmin:
    """`pbx.admin.accounting`: what the console's accounting views and forms call."""

    def __init__(
        self,
        *,
        store: Store,
        books: Books,
        currency: str,
        clock: Callable[[], float],
        tables_changed: Callable[[], None],
    ) -> None:
        self._store = store
        self._books = books
        self._currency = currency
        self._clock = clock
        self._tables_changed = tables_changed

    async def _changed(self) -> None:
        await self._books.reload(self._store, self._clock())
        self._tables_changed()

    # -- rates ------------------------------------------------------------------------------
    async def import_rates(self, carrier: str, csv_text: str, currency: str = "") -> int:
        """Replace `carrier`'s table with the rates of `csv_text` (all or nothing)."""
        currency = currency or self._currency
        validate_currency(currency)
        try:
            rates = parse_rates_csv(csv_text)
        except RateImportError as exc:
            raise ValueError(f"nothing imported: {exc}") from None
        try:
            await self._store.replace_rates(carrier, currency, rates)
        except NotFoundError as exc:
            raise ValueError(str(exc)) from None
        await self._changed()
        return len(rates)

    async def rate_tables(self) -> list[tuple[str, str, int]]:
        """(carrier, currency, prefixes) of every carrier with rates."""
        return await self._store.rate_counts()

    async def rates(self, carrier: str) -> tuple[str, list[Rate]]:
        return await self._store.list_rates(carrier)

    async def delete_rates(self, carrier: str, prefix: str | None = None) -> int:
        digits = None if prefix is None else parse_prefix(prefix)
        removed = await self._store.delete_rates(carrier, digits)
        if not removed:
            raise ValueError(f"carrier {carrier!r} has no such rates")
        await self._changed()
        return removed

    # -- spend limits ---------------------------------------------------------------------------
    async def set_spend_limit(self, username: str, per_day: str, per_month: str) -> SpendLimit:
        """A user's own limits, amounts in the main unit ("" or "0": none)."""
        limit = SpendLimit(
            parse_money(per_day) if per_day.strip() else 0,
            parse_money(per_month) if per_month.strip() else 0,
        )
        try:
            await self._store.set_spend_limit(username, limit)
        except NotFoundError as exc:
            raise ValueError(str(exc)) from None
        await self._changed()
        return limit

    async def spend_limits(self) -> dict[str, SpendLimit]:
        return await self._store.spend_limits()

    # -- figures ------------------------------------------------------------------------------
    async def today(self) -> TodayFigures:
        return await Books.today(self._store, self._clock())

    async def cdrs(self, where: CdrFilter, limit: int = 200) -> list[CdrRow]:
        return await self._store.query_cdrs(where, limit)
