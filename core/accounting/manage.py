"""Accounting for the console: rate tables, spend limits and today's figures of a running Pbx.

The same rules as the CLI (`pbxtui rate ...`, `pbxtui spend ...`), through the same parsers:
bad input raises `ValueError` with a sentence fit to show under a form field. Every change
goes to SQLite first, then into the meter the SIP path asks, and to the worker processes.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

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
from core.store.errors import NotFoundError
from core.store.rows import CdrRow

if TYPE_CHECKING:
    from core.pbx import Pbx


class AccountingAdmin:
    """`pbx.admin.accounting`: what the console's accounting views and forms call."""

    def __init__(self, pbx: Pbx) -> None:
        self._pbx = pbx

    async def _changed(self) -> None:
        pbx = self._pbx
        await pbx.books.load(pbx.store, pbx.clock(), sums=pbx.is_worker)
        pbx.tables_changed()

    # -- rates ------------------------------------------------------------------------------
    async def import_rates(self, carrier: str, csv_text: str, currency: str = "") -> int:
        """Replace `carrier`'s table with the rates of `csv_text` (all or nothing)."""
        currency = currency or self._pbx.settings.accounting.currency
        validate_currency(currency)
        try:
            rates = parse_rates_csv(csv_text)
        except RateImportError as exc:
            raise ValueError(f"nothing imported: {exc}") from None
        try:
            await self._pbx.store.replace_rates(carrier, currency, rates)
        except NotFoundError as exc:
            raise ValueError(str(exc)) from None
        await self._changed()
        return len(rates)

    async def rate_tables(self) -> list[tuple[str, str, int]]:
        """(carrier, currency, prefixes) of every carrier with rates."""
        return await self._pbx.store.rate_counts()

    async def rates(self, carrier: str) -> tuple[str, list[Rate]]:
        return await self._pbx.store.list_rates(carrier)

    async def delete_rates(self, carrier: str, prefix: str | None = None) -> int:
        digits = None if prefix is None else parse_prefix(prefix)
        removed = await self._pbx.store.delete_rates(carrier, digits)
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
            await self._pbx.store.set_spend_limit(username, limit)
        except NotFoundError as exc:
            raise ValueError(str(exc)) from None
        await self._changed()
        return limit

    async def spend_limits(self) -> dict[str, SpendLimit]:
        return await self._pbx.store.spend_limits()

    # -- figures ------------------------------------------------------------------------------
    async def today(self) -> TodayFigures:
        pbx = self._pbx
        return await Books.today(pbx.store, pbx.clock())

    async def cdrs(self, where: CdrFilter, limit: int = 200) -> list[CdrRow]:
        return await self._pbx.store.query_cdrs(where, limit)
