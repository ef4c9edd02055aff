"""Rates, money and billing arithmetic: integers only, the carriers' increments, all-or-nothing
CSV import with line numbers."""

from __future__ import annotations

import pytest

from core.accounting.rates import (
    MAX_ERRORS_REPORTED,
    MICROS_PER_UNIT,
    Rate,
    RateImportError,
    RateTable,
    billable_seconds,
    charge,
    duration_ms,
    format_money,
    parse_money,
    parse_rates_csv,
    rates_csv,
)

HEADER = "prefix,per_minute,first_increment,increment,connection\n"


# -- money ------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("text", "micros"),
    [
        ("0.0123", 12_300),
        ("0.1", 100_000),
        ("1", 1_000_000),
        ("0", 0),
        ("12.345678", 12_345_678),
        (" 0.06 ", 60_000),
        ("0.000001", 1),
    ],
)
def test_parse_money_is_exact(text: str, micros: int) -> None:
    assert parse_money(text) == micros


@pytest.mark.parametrize(
    "text", ["", "-1", "0.0000001", "1e3", "abc", "1.2.3", "NaN", "inf", "0x10", "\uff11", "+1"]
)
def test_parse_money_refuses_what_is_not_a_plain_amount(text: str) -> None:
    with pytest.raises(ValueError):
        parse_money(text)


@pytest.mark.parametrize(
    ("micros", "text"),
    [(60_000, "0.06"), (12_300, "0.0123"), (0, "0.00"), (2_000_000, "2.00"), (1, "0.000001")],
)
def test_format_money_drops_nothing(micros: int, text: str) -> None:
    assert format_money(micros) == text
    assert parse_money(text) == micros


# -- increments --------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("ms", "first", "step", "billed"),
    [
        (61_000, 60, 60, 120),  # a 61-second call at 60/60 is two minutes
        (61_000, 1, 1, 61),  # at 1/1 it is 61 s
        (60_000, 60, 60, 60),
        (1, 60, 60, 60),  # any answered call pays its first increment
        (0, 60, 60, 0),  # unanswered: nothing
        (61_000, 30, 6, 66),  # 30 s, then 31 s in 6 s steps → 6 steps
        (30_000, 30, 6, 30),
        (30_001, 30, 6, 36),
        (60_500, 1, 1, 61),  # a started second is billed whole
    ],
)
def test_billable_seconds(ms: int, first: int, step: int, billed: int) -> None:
    assert billable_seconds(ms, first, step) == billed


def test_charge_of_a_61_second_call() -> None:
    per_minute = parse_money("0.03")
    minute_rate = Rate("44", per_minute, 60, 60, connection=parse_money("0.01"))
    second_rate = Rate("44", per_minute, 1, 1)
    assert charge(minute_rate, 61_000).cost == 10_000 + 2 * 30_000  # 0.07
    assert charge(minute_rate, 61_000).billable_seconds == 120
    # 61 s at 0.03/min = 0.0305 exactly
    assert charge(second_rate, 61_000).cost == 30_500
    assert charge(minute_rate, 0).cost == 0  # no connection fee for an unanswered call


def test_charge_rounds_a_fraction_of_a_micro_unit_up_once() -> None:
    rate = Rate("1", 1, 1, 1)  # a millionth a minute
    assert charge(rate, 1_000).cost == 1  # 1/60 of a micro-unit → 1
    assert charge(rate, 120_000).cost == 2


def test_duration_ms() -> None:
    assert duration_ms(100.0, 161.0) == 61_000
    assert duration_ms(None, 161.0) == 0
    assert duration_ms(200.0, 100.0) == 0


# -- the table ------------------------------------------------------------------------------
def test_longest_prefix_wins() -> None:
    table = RateTable()
    table.load(
        "acme",
        [Rate("44", 10_000), Rate("447", 90_000), Rate("4479", 150_000), Rate("1", 5_000)],
        "EUR",
    )
    assert table.match("acme", "447911123456").prefix == "4479"  # type: ignore[union-attr]
    assert table.match("acme", "447011123456").prefix == "447"  # type: ignore[union-attr]
    assert table.match("acme", "441632960001").prefix == "44"  # type: ignore[union-attr]
    assert table.match("acme", "33123456789") is None
    assert table.match("other", "441632960001") is None
    assert table.match("acme", "") is None
    table.load("acme", [], "EUR")
    assert table.match("acme", "441632960001") is None
    assert table.carriers() == []


# -- CSV import ---------------------------------------------------------------------------------
def test_import_reads_every_row() -> None:
    text = HEADER + "44,0.0123,60,60,0\n+447,0.09,30,6,0.05\n\n1,0.005,1,1,0\n"
    rates = parse_rates_csv(text)
    assert rates == [
        Rate("44", 12_300, 60, 60, 0),
        Rate("447", 90_000, 30, 6, 50_000),
        Rate("1", 5_000, 1, 1, 0),
    ]
    # What `rate list --csv` prints imports back to the same table.
    import csv
    import io

    buffer = io.StringIO()
    csv.writer(buffer).writerows(rates_csv(rates))
    assert parse_rates_csv(buffer.getvalue()) == rates


def test_import_is_all_or_nothing_with_line_numbers() -> None:
    text = (
        HEADER
        + "44,0.0123,60,60,0\n"  # line 2: fine
        + "4x,0.01,60,60,0\n"  # line 3: bad prefix
        + "45,0.01,0,60,0\n"  # line 4: zero increment
        + "46,-0.01,60,60,0\n"  # line 5: negative price
        + "44,0.02,60,60,0\n"  # line 6: duplicate prefix
        + "47,0.01,60\n"  # line 7: missing fields
        + "48,0.0000001,60,60,0\n"  # line 8: too precise
    )
    with pytest.raises(RateImportError) as caught:
        parse_rates_csv(text)
    lines = [line for line, _message in caught.value.errors]
    assert lines == [3, 4, 5, 6, 7, 8]
    assert "line 6: prefix 44 already on line 2" in str(caught.value)


def test_quoted_newlines_keep_line_numbers_true() -> None:
    text = HEADER + '"44",0.01,60,60,0\n"4\n5",0.01,60,60,0\n46,x,60,60,0\n'
    with pytest.raises(RateImportError) as caught:
        parse_rates_csv(text)
    assert [line for line, _ in caught.value.errors] == [4, 5]


@pytest.mark.parametrize(
    "text",
    ["", "prefix,per_minute\n44,0.1\n", "44,0.0123,60,60,0\n", HEADER, HEADER + "\n\n"],
)
def test_import_refuses_a_file_without_header_or_rows(text: str) -> None:
    with pytest.raises(RateImportError):
        parse_rates_csv(text)


def test_import_errors_are_bounded() -> None:
    text = HEADER + "x,0,60,60,0\n" * 10_000
    with pytest.raises(RateImportError) as caught:
        parse_rates_csv(text)
    assert len(caught.value.errors) == MAX_ERRORS_REPORTED


def test_hostile_cells_never_get_through() -> None:
    for cell in ("=1+1", "0.01e5", "1_000", "٣", "0.1 ", "\x00"):
        with pytest.raises(RateImportError):
            parse_rates_csv(HEADER + f"44,{cell}x,60,60,0\n")
    assert MICROS_PER_UNIT == 1_000_000
