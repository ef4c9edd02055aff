"""The accounting tables' SQL: rates, spend limits, CDR queries, sums and retention.

Like `core.store.queries`, every statement is a constant string with `?` parameters. The CDR
filters are optional: each one is written `(? IS NULL OR column = ?)` and passed twice, so one
constant statement serves every combination and nothing is built from input.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Any

from core.accounting.limits import SpendLimit
from core.accounting.rates import Rate
from core.accounting.stats import HOUR_SECONDS, Tally
from core.store.connection import Connection
from core.store.errors import NotFoundError
from core.store.rows import CdrRow

# Every CdrRow field, in the dataclass's order (so `CdrRow(*row)` fills it).
_CDR_COLUMNS = """
    call_id, caller, callee, source_ip, direction, started_at, answered_at, ended_at, status,
    reason, duration, id, disposition, hangup_side, carrier, gateway, dialled, number, contact,
    rate_prefix, rate_per_minute, rate_increments, billable_seconds, cost, currency
"""
_CDR_FILTER = """
    started_at >= ? AND started_at < ?
    AND (? IS NULL OR caller = ?)
    AND (? IS NULL OR carrier = ?)
    AND (? IS NULL OR disposition = ?)
"""
_SELECT_CDRS_NEWEST = (
    "SELECT " + _CDR_COLUMNS + " FROM cdrs WHERE " + _CDR_FILTER + " ORDER BY id DESC LIMIT ?"
)
_SELECT_CDRS_CHUNK = (
    "SELECT " + _CDR_COLUMNS + " FROM cdrs WHERE id > ? AND " + _CDR_FILTER + " ORDER BY id LIMIT ?"
)
_TALLY = """
    count(*), sum(answered_at IS NOT NULL),
    coalesce(sum(CASE WHEN answered_at IS NOT NULL THEN CAST(round(duration * 1000) AS INTEGER)
                      ELSE 0 END), 0),
    coalesce(sum(billable_seconds), 0), coalesce(sum(cost), 0)
"""
# Per user: an inbound call's caller is whatever number the carrier sent, so inbound calls
# are one row, INBOUND_KEY, rather than a row per stranger (bounded by the users, and the
# rows still add up to the total).
INBOUND_KEY = "(inbound)"
_TALLY_BY_USER = (
    "SELECT CASE WHEN direction = 'inbound' THEN '" + INBOUND_KEY + "' ELSE caller END, "
    + _TALLY + " FROM cdrs WHERE " + _CDR_FILTER + " GROUP BY 1"
)  # fmt: skip
_TALLY_BY_CARRIER = (
    "SELECT carrier, " + _TALLY + " FROM cdrs WHERE " + _CDR_FILTER
    + " AND carrier != '' GROUP BY carrier"
)  # fmt: skip
_TALLY_ALL = "SELECT 'total', " + _TALLY + " FROM cdrs WHERE " + _CDR_FILTER
_BY_HOUR = """
    SELECT CAST(started_at / ? AS INTEGER) * ?, count(*), coalesce(sum(cost), 0)
    FROM cdrs WHERE started_at >= ? AND started_at < ? GROUP BY 1
"""
FAR_FUTURE = 1e12  # "no --until": past any started_at a clock will give


@dataclass(frozen=True, slots=True)
class CdrFilter:
    """Which CDRs a list, an export or the stats cover: a start-time window [since, until)
    and optional equalities. None means "any"."""

    since: float = 0.0
    until: float = FAR_FUTURE
    user: str | None = None
    carrier: str | None = None
    disposition: str | None = None

    def params(self) -> tuple[object, ...]:
        return (
            self.since,
            self.until,
            self.user,
            self.user,
            self.carrier,
            self.carrier,
            self.disposition,
            self.disposition,
        )


def _tally(row: Sequence[Any]) -> Tally:
    return Tally(str(row[0]), int(row[1]), int(row[2] or 0), int(row[3]), int(row[4]), int(row[5]))


class AccountingQueries(Connection):
    """The accounting methods of `core.store.database.Store`."""

    # -- rates

    async def replace_rates(self, carrier: str, currency: str, rates: Sequence[Rate]) -> None:
        """Make `rates` the carrier's whole table, in one transaction: the old table stays
        until the new one is complete. `NotFoundError` when the carrier does not exist."""
        async with self._transaction() as db:
            found = await db.execute_fetchall("SELECT 1 FROM carriers WHERE name = ?", (carrier,))
            if not found:
                raise NotFoundError(f"no carrier {carrier!r}")
            await db.execute("DELETE FROM rates WHERE carrier = ?", (carrier,))
            await db.executemany(
                """
                INSERT INTO rates (carrier, prefix, per_minute, first_increment, increment,
                                   connection, currency)
                VALUES (?, ?, ?, ?, ?, ?, ?)
                """,
                [
                    (
                        carrier,
                        rate.prefix,
                        rate.per_minute,
                        rate.first_increment,
                        rate.increment,
                        rate.connection,
                        currency,
                    )
                    for rate in rates
                ],
            )

    async def list_rates(self, carrier: str) -> tuple[str, list[Rate]]:
        """The carrier's currency ("" when it has no table) and rates, by prefix."""
        rows = await self._db.execute_fetchall(
            """
            SELECT prefix, per_minute, first_increment, increment, connection, currency
            FROM rates WHERE carrier = ? ORDER BY prefix
            """,
            (carrier,),
        )
        rates = [Rate(*row[:5]) for row in rows]
        return (str(rows[0][5]) if rows else ""), rates  # type: ignore[index]

    async def rate_tables(self) -> dict[str, tuple[str, list[Rate]]]:
        """Every carrier's table: carrier → (currency, rates), for the meter."""
        rows = await self._db.execute_fetchall(
            """
            SELECT carrier, prefix, per_minute, first_increment, increment, connection, currency
            FROM rates ORDER BY carrier
            """
        )
        tables: dict[str, tuple[str, list[Rate]]] = {}
        for row in rows:
            carrier = str(row[0])
            if carrier not in tables:
                tables[carrier] = (str(row[6]), [])
            tables[carrier][1].append(Rate(*row[1:6]))
        return tables

    async def rate_counts(self) -> list[tuple[str, str, int]]:
        """(carrier, currency, number of prefixes) of each carrier with a table."""
        rows = await self._db.execute_fetchall(
            "SELECT carrier, min(currency), count(*) FROM rates GROUP BY carrier ORDER BY carrier"
        )
        return [(str(row[0]), str(row[1]), int(row[2])) for row in rows]

    async def delete_rates(self, carrier: str, prefix: str | None = None) -> int:
        """Remove one prefix of a carrier's table, or (prefix None) the whole table; the
        number of rates removed."""
        async with self._transaction() as db:
            cursor = await db.execute(
                "DELETE FROM rates WHERE carrier = ? AND (? IS NULL OR prefix = ?)",
                (carrier, prefix, prefix),
            )
            return cursor.rowcount

    # -- spend limits

    async def set_spend_limit(self, username: str, limit: SpendLimit) -> None:
        """A user's own limits (0: none); `NotFoundError` for an unknown user."""
        async with self._transaction() as db:
            found = await db.execute_fetchall("SELECT 1 FROM users WHERE username = ?", (username,))
            if not found:
                raise NotFoundError(f"no user {username!r}")
            await db.execute(
                """
                INSERT INTO spend_limits (username, per_day, per_month) VALUES (?, ?, ?)
                ON CONFLICT (username) DO UPDATE SET
                    per_day = excluded.per_day, per_month = excluded.per_month
                """,
                (username, limit.per_day, limit.per_month),
            )

    async def delete_spend_limit(self, username: str) -> bool:
        """Back to the configured default for users."""
        return (
            await self._rows_changed("DELETE FROM spend_limits WHERE username = ?", (username,)) > 0
        )

    async def spend_limits(self) -> dict[str, SpendLimit]:
        rows = await self._db.execute_fetchall(
            "SELECT username, per_day, per_month FROM spend_limits"
        )
        return {str(row[0]): SpendLimit(int(row[1]), int(row[2])) for row in rows}

    async def spend_by_user(self, since: float) -> dict[str, int]:
        """What each user's calls that started at or after `since` cost (micro-units)."""
        rows = await self._db.execute_fetchall(
            "SELECT caller, sum(cost) FROM cdrs WHERE started_at >= ? AND cost > 0 GROUP BY caller",
            (since,),
        )
        return {str(row[0]): int(row[1]) for row in rows}

    # -- CDR queries

    async def query_cdrs(self, where: CdrFilter, limit: int = 100) -> list[CdrRow]:
        """The newest `limit` CDRs that match, newest first."""
        rows = await self._db.execute_fetchall(_SELECT_CDRS_NEWEST, (*where.params(), limit))
        return [CdrRow(*row) for row in rows]

    async def iterate_cdrs(
        self, where: CdrFilter, chunk_size: int = 1_000
    ) -> AsyncIterator[CdrRow]:
        """Every matching CDR, oldest first, in chunks: an export never loads the table."""
        async for cdr in self._cdrs_by_id(_SELECT_CDRS_CHUNK, where.params(), chunk_size):
            yield cdr

    async def cdr_tallies(self, where: CdrFilter) -> tuple[Tally, list[Tally], list[Tally]]:
        """Sums for the period: in all, per user (caller) and per carrier."""
        params = where.params()
        everything = await self._db.execute_fetchall(_TALLY_ALL, params)
        by_user = await self._db.execute_fetchall(_TALLY_BY_USER, params)
        by_carrier = await self._db.execute_fetchall(_TALLY_BY_CARRIER, params)
        return (
            _tally(next(iter(everything))),
            sorted(map(_tally, by_user), key=lambda tally: (-tally.cost, tally.key)),
            sorted(map(_tally, by_carrier), key=lambda tally: (-tally.cost, tally.key)),
        )

    async def cdrs_by_hour(self, since: float, until: float) -> list[tuple[int, int, int]]:
        """(hour start, calls, cost) of each hour with calls in [since, until)."""
        rows = await self._db.execute_fetchall(_BY_HOUR, (HOUR_SECONDS, HOUR_SECONDS, since, until))
        return [(int(row[0]), int(row[1]), int(row[2])) for row in rows]

    async def count_cdrs_before(self, before: float) -> int:
        rows = await self._db.execute_fetchall(
            "SELECT count(*) FROM cdrs WHERE started_at < ?", (before,)
        )
        return int(next(iter(rows))[0])
