"""Carrier rates: what a call through a carrier costs, as integers, never floats.

A carrier's rate table maps number prefixes to a `Rate`: a price per minute, a connection fee,
and the billing increments carriers write as `first/next` (60/60 bills whole minutes, 1/1 by
the second, 30/6 a first half-minute then six-second steps). A dialled number takes the rate
of its longest matching prefix, matched against the canonical form of the number (the E.164
digits without `+`, see `core/trunks/dialplan.py`), so `44` and `447` can sit side by side and
a UK mobile takes the `447` price.

Money is integer micro-units: a millionth of the currency's main unit. Carriers quote per-minute
prices to four or five decimals (0.0123), which cents cannot hold; six decimals hold every
price we have met exactly, and an integer sum of a month of calls never drifts the way a float
sum does. The rule for fractions is the carrier's: a call's price is rounded *up* to the next
micro-unit, once, at the end.

The CSV a carrier's table is imported from has the header `prefix,per_minute,first_increment,
increment,connection`; `parse_rates_csv` reads it whole and either returns every row or raises
`RateImportError` listing each bad line by number, so a half-imported table never bills a call.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation

MICROS_PER_UNIT = 1_000_000  # money is stored in millionths of the main unit
MONEY_DECIMALS = 6
MAX_PREFIX_DIGITS = 20  # as long as a dialled number may be (core/trunks/dialplan.py)
MAX_INCREMENT_SECONDS = 3_600
MAX_PRICE_MICROS = 1_000 * MICROS_PER_UNIT  # 1,000 a minute: beyond any real tariff
MAX_RATE_ROWS = 200_000  # a full international deck is ~60k prefixes
MAX_ERRORS_REPORTED = 20
CSV_HEADER = ("prefix", "per_minute", "first_increment", "increment", "connection")


class RateImportError(ValueError):
    """A rate file that cannot be imported; `errors` are `(line number, message)` pairs."""

    def __init__(self, errors: list[tuple[int, str]]) -> None:
        self.errors = errors
        shown = "; ".join(f"line {line}: {message}" for line, message in errors)
        super().__init__(shown)


@dataclass(frozen=True, slots=True)
class Rate:
    """One prefix's price. `per_minute` and `connection` are micro-units."""

    prefix: str
    per_minute: int
    first_increment: int = 60
    increment: int = 60
    connection: int = 0

    @property
    def increments_text(self) -> str:
        return f"{self.first_increment}/{self.increment}"


@dataclass(frozen=True, slots=True)
class Charge:
    """What one call costs under a rate: the seconds billed and the price in micro-units."""

    rate: Rate
    billable_seconds: int
    cost: int


def billable_seconds(duration_ms: int, first_increment: int, increment: int) -> int:
    """The seconds a carrier bills for a call of `duration_ms` answered milliseconds.

    Any started increment is billed whole: the first `first_increment` seconds as one block,
    then every started `increment`. An unanswered call (0 ms) bills nothing.
    """
    if duration_ms <= 0:
        return 0
    first_ms = first_increment * 1_000
    if duration_ms <= first_ms:
        return first_increment
    step_ms = increment * 1_000
    steps = -(-(duration_ms - first_ms) // step_ms)  # ceiling division, integers only
    return first_increment + steps * increment


def charge(rate: Rate, duration_ms: int) -> Charge:
    """The price of a call answered for `duration_ms`: the connection fee (only when it was
    answered) plus the per-minute price over the billable seconds, rounded up to a micro-unit."""
    seconds = billable_seconds(duration_ms, rate.first_increment, rate.increment)
    if seconds == 0:
        return Charge(rate, 0, 0)
    minutes_price = -(-(rate.per_minute * seconds) // 60)
    return Charge(rate, seconds, rate.connection + minutes_price)


def duration_ms(answered_at: float | None, ended_at: float | None) -> int:
    """Answered-to-ended time in whole milliseconds (the clock's float seconds, rounded once)."""
    if answered_at is None or ended_at is None or ended_at <= answered_at:
        return 0
    return round((ended_at - answered_at) * 1_000)


# --- money as text -------------------------------------------------------------------------


def parse_money(text: str) -> int:
    """Micro-units of a decimal amount in the main unit (`0.0123` → 12300).

    Decimal, not float, so `0.1` is exactly 100000. Raises ValueError for anything that is not
    a plain non-negative decimal with at most six places.
    """
    text = text.strip()
    if not text or len(text) > 24 or not all(c in "0123456789." for c in text):
        raise ValueError(f"{text!r} is not an amount")
    try:
        amount = Decimal(text)
    except InvalidOperation:
        raise ValueError(f"{text!r} is not an amount") from None
    micros = amount * MICROS_PER_UNIT
    if micros != micros.to_integral_value():
        raise ValueError(f"{text!r} has more than {MONEY_DECIMALS} decimal places")
    return int(micros)


def format_money(micros: int, min_decimals: int = 2) -> str:
    """The main-unit text of an amount: `60000` → `0.06`, `12300` → `0.0123`, `0` → `0.00`.

    Exact: trailing zeros beyond `min_decimals` are dropped, nothing is rounded away.
    """
    sign = "-" if micros < 0 else ""
    whole, fraction = divmod(abs(micros), MICROS_PER_UNIT)
    digits = f"{fraction:06d}".rstrip("0")
    digits = digits.ljust(min_decimals, "0")
    return f"{sign}{whole}.{digits}" if digits else f"{sign}{whole}"


def validate_currency(code: str) -> None:
    """An ISO 4217 alphabetic code: three capital letters (`EUR`, `GBP`, `USD`)."""
    if len(code) != 3 or not all("A" <= c <= "Z" for c in code):
        raise ValueError(f"{code!r} is not a currency code (three capital letters, e.g. EUR)")


def _parse_seconds(text: str, name: str) -> int:
    text = text.strip()
    if not text.isascii() or not text.isdigit() or len(text) > 5:
        raise ValueError(f"{name} {text!r} is not a whole number of seconds")
    value = int(text)
    if not 1 <= value <= MAX_INCREMENT_SECONDS:
        raise ValueError(f"{name} must be 1 to {MAX_INCREMENT_SECONDS} seconds")
    return value


def parse_prefix(text: str) -> str:
    """A rate prefix in canonical digits: a leading `+` is allowed and dropped."""
    text = text.strip()
    digits = text[1:] if text.startswith("+") else text
    if not digits or not digits.isascii() or not digits.isdigit():
        raise ValueError(f"prefix {text!r} is not digits")
    if len(digits) > MAX_PREFIX_DIGITS:
        raise ValueError(f"prefix {text!r} is longer than {MAX_PREFIX_DIGITS} digits")
    return digits


def _parse_price(text: str, name: str) -> int:
    try:
        micros = parse_money(text)
    except ValueError as exc:
        raise ValueError(f"{name}: {exc}") from None
    if micros > MAX_PRICE_MICROS:
        raise ValueError(f"{name} {text.strip()!r} is beyond any tariff")
    return micros


def parse_rate_row(fields: list[str]) -> Rate:
    """One CSV row (without its line number); raises ValueError with what is wrong."""
    if len(fields) != len(CSV_HEADER):
        raise ValueError(f"expected {len(CSV_HEADER)} fields, got {len(fields)}")
    prefix, per_minute, first, increment, connection = fields
    return Rate(
        parse_prefix(prefix),
        _parse_price(per_minute, "per_minute"),
        _parse_seconds(first, "first_increment"),
        _parse_seconds(increment, "increment"),
        _parse_price(connection, "connection"),
    )


def parse_rates_csv(text: str) -> list[Rate]:
    """Every rate of a CSV file, or RateImportError naming each bad line (up to
    MAX_ERRORS_REPORTED). A prefix listed twice is an error: which price was meant?"""
    errors: list[tuple[int, str]] = []
    rates: list[Rate] = []
    seen: dict[str, int] = {}
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    try:
        header = next(reader, None)
    except csv.Error as exc:
        raise RateImportError([(1, f"unreadable CSV: {exc}")]) from None
    if header is None:
        raise RateImportError([(1, "the file is empty (expected a header row)")])
    if tuple(field.strip().lower() for field in header) != CSV_HEADER:
        raise RateImportError([(1, "the header must be " + ",".join(CSV_HEADER))])
    try:
        for fields in reader:
            line = reader.line_num
            if not fields or all(not field.strip() for field in fields):
                continue
            if len(rates) + len(errors) >= MAX_RATE_ROWS:
                errors.append((line, f"more than {MAX_RATE_ROWS} rows"))
                break
            try:
                rate = parse_rate_row(fields)
            except ValueError as exc:
                errors.append((line, str(exc)))
                if len(errors) >= MAX_ERRORS_REPORTED:
                    break
                continue
            if rate.prefix in seen:
                errors.append((line, f"prefix {rate.prefix} already on line {seen[rate.prefix]}"))
                continue
            seen[rate.prefix] = line
            rates.append(rate)
    except csv.Error as exc:
        errors.append((reader.line_num, f"unreadable CSV: {exc}"))
    if errors:
        raise RateImportError(errors[:MAX_ERRORS_REPORTED])
    if not rates:
        raise RateImportError([(2, "no rates after the header")])
    return rates


def rates_csv(rates: Iterable[Rate]) -> Iterator[list[str]]:
    """Rows (header first) in the import format, so a listed table imports back unchanged."""
    yield list(CSV_HEADER)
    for rate in rates:
        yield [
            rate.prefix,
            format_money(rate.per_minute),
            str(rate.first_increment),
            str(rate.increment),
            format_money(rate.connection),
        ]


# --- the table the proxy asks --------------------------------------------------------------


class RateTable:
    """Every carrier's rates in memory, for a longest-prefix match at the end of a call.

    A match is at most MAX_PREFIX_DIGITS dict lookups: no scan, whatever the deck's size.
    """

    __slots__ = ("_by_carrier", "currency_by_carrier")

    def __init__(self) -> None:
        self._by_carrier: dict[str, dict[str, Rate]] = {}
        self.currency_by_carrier: dict[str, str] = {}

    def load(self, carrier: str, rates: Iterable[Rate], currency: str) -> None:
        """Replace one carrier's table."""
        table = {rate.prefix: rate for rate in rates}
        if table:
            self._by_carrier[carrier] = table
            self.currency_by_carrier[carrier] = currency
        else:
            self._by_carrier.pop(carrier, None)
            self.currency_by_carrier.pop(carrier, None)

    def clear(self) -> None:
        self._by_carrier.clear()
        self.currency_by_carrier.clear()

    def carriers(self) -> list[str]:
        return sorted(self._by_carrier)

    def count(self, carrier: str) -> int:
        return len(self._by_carrier.get(carrier, ()))

    def match(self, carrier: str, number: str) -> Rate | None:
        """The rate of the longest prefix of `number` (canonical digits) in `carrier`'s table."""
        table = self._by_carrier.get(carrier)
        if not table or not number:
            return None
        for length in range(min(len(number), MAX_PREFIX_DIGITS), 0, -1):
            rate = table.get(number[:length])
            if rate is not None:
                return rate
        return None
