"""`pbxtui rate/spend/cdr` on a real SQLite file: all-or-nothing imports with line numbers,
filters, the export's money columns, stats against a hand computation, retention."""

from __future__ import annotations

import asyncio
import calendar
import csv
import io
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TypeVar

import pytest
from conftest import Cli

from core.accounting.books import Books
from core.accounting.rates import Rate
from core.settings import AccountingSettings
from core.store.accounting import CdrFilter
from core.store.database import Store
from core.store.ops import DeleteOldCdrs, InsertCdr
from core.store.rows import CdrRow

T = TypeVar("T")
HEADER = "prefix,per_minute,first_increment,increment,connection\n"
DAY = 86_400
T0 = float(calendar.timegm((2026, 3, 2, 10, 0, 0)))  # a Monday, 10:00 UTC


def with_store(db: Path, action: Callable[[Store], Awaitable[T]]) -> T:
    async def go() -> T:
        async with await Store.open(db) as store:
            return await action(store)

    return asyncio.run(go())


def cdr(
    caller: str,
    started: float,
    *,
    talk: float | None = None,
    status: int = 200,
    disposition: str = "answered",
    carrier: str = "",
    cost: int = 0,
    billable: int = 0,
    reason: str = "",
) -> CdrRow:
    answered = None if talk is None else started + 5
    ended = started + 5 + (talk or 0)
    return CdrRow(
        call_id=f"{caller}-{started}",
        caller=caller,
        callee="441632960001" if carrier else "bob",
        source_ip="127.0.0.1",
        direction="outbound" if carrier else "internal",
        started_at=started,
        answered_at=answered,
        ended_at=ended,
        status=status,
        reason=reason,
        duration=talk or 0.0,
        disposition=disposition,
        hangup_side="caller",
        carrier=carrier,
        number="441632960001" if carrier else "",
        billable_seconds=billable,
        cost=cost,
        currency="EUR" if carrier else "",
    )


# The known set the stats are checked against by hand:
#   alice: 3 calls via acme, 2 answered (60 s, 120 s), costs 0.05 + 0.10
#   bob:   2 internal calls, 1 answered (30 s), 1 busy
#   carol: 1 call via acme refused by policy, and 1 a day earlier (outside the period)
KNOWN = [
    cdr("alice", T0, talk=60, carrier="acme", cost=50_000, billable=60),
    cdr("alice", T0 + 100, talk=120, carrier="acme", cost=100_000, billable=120),
    cdr("alice", T0 + 200, status=487, disposition="cancelled", carrier="acme"),
    cdr("bob", T0 + 300, talk=30),
    cdr("bob", T0 + 400, status=486, disposition="busy"),
    cdr("carol", T0 + 500, status=403, disposition="refused by policy", carrier="acme"),
    cdr("carol", T0 - DAY, talk=600, carrier="acme", cost=999_000, billable=600),
]


def store_known(db: Path) -> None:
    async def go(store: Store) -> None:
        for row in KNOWN:
            await store.insert_cdr(row)

    with_store(db, go)


# -- rates ------------------------------------------------------------------------------------
def test_rate_import_list_del(cli: Cli, tmp_path: Path, db: Path) -> None:
    assert cli("carrier", "add", "acme", "--ip", "192.0.2.1").code == 0
    rates = tmp_path / "acme.csv"
    rates.write_text(HEADER + "44,0.0123,60,60,0\n447,0.09,30,6,0.05\n")
    result = cli("rate", "import", str(rates), "--carrier", "acme", "--currency", "GBP")
    assert result.code == 0 and "imported 2 rates" in result.out
    tables = with_store(db, lambda store: store.rate_tables())
    assert tables == {
        "acme": ("GBP", [Rate("44", 12_300, 60, 60, 0), Rate("447", 90_000, 30, 6, 50_000)])
    }
    listed = cli("rate", "list", "--carrier", "acme")
    (tmp_path / "again.csv").write_text(listed.out)
    assert cli("rate", "import", str(tmp_path / "again.csv"), "--carrier", "acme").code == 0
    assert with_store(db, lambda store: store.list_rates("acme"))[1] == tables["acme"][1]
    assert cli("rate", "del", "--carrier", "acme", "--prefix", "447").code == 0
    assert cli("rate", "del", "--carrier", "acme", "--prefix", "447").code == 2
    assert cli("rate", "del", "--carrier", "acme").code == 0
    assert cli("rate", "list").out.strip() == "no rates"


def test_rate_import_is_all_or_nothing_with_line_numbers(
    cli: Cli, tmp_path: Path, db: Path
) -> None:
    assert cli("carrier", "add", "acme", "--ip", "192.0.2.1").code == 0
    good = tmp_path / "good.csv"
    good.write_text(HEADER + "44,0.01,60,60,0\n")
    assert cli("rate", "import", str(good), "--carrier", "acme").code == 0
    bad = tmp_path / "bad.csv"
    bad.write_text(HEADER + "33,0.02,60,60,0\n34,abc,60,60,0\n35,0.01,60,0,0\n")
    result = cli("rate", "import", str(bad), "--carrier", "acme")
    assert result.code == 2
    [line] = result.messages.strip().splitlines()  # one error line, naming each bad line
    assert "line 3:" in line and "line 4:" in line and "line 2" not in line
    # The old table is untouched: not even the good line 2 of the bad file got in.
    assert with_store(db, lambda store: store.list_rates("acme"))[1] == [Rate("44", 10_000)]


@pytest.mark.parametrize(
    "args",
    [
        ("rate", "import", "missing.csv", "--carrier", "acme"),
        ("rate", "import", "good.csv", "--carrier", "nobody"),
        ("rate", "import", "good.csv", "--carrier", "acme", "--currency", "euro"),
        ("rate", "del", "--carrier", "acme", "--prefix", "4x"),
        ("spend", "set", "nobody", "--day", "1"),
        ("spend", "set", "alice", "--day", "-1"),
        ("spend", "set", "alice", "--month", "1.0000001"),
        ("cdr", "list", "--since", "yesterday"),
        ("cdr", "list", "--since", "2026-03-02", "--until", "2026-03-01"),
        ("cdr", "list", "--disposition", "happy"),
        ("cdr", "list", "--limit", "0"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(cli: Cli, tmp_path: Path, args: tuple[str, ...]) -> None:
    assert cli("carrier", "add", "acme", "--ip", "192.0.2.1").code == 0
    assert cli("user", "add", "alice", "--password", "Pw-long-enough-1").code == 0
    (tmp_path / "good.csv").write_text(HEADER + "44,0.01,60,60,0\n")
    result = cli(*args)
    assert result.code == 2
    assert len(result.messages.strip().splitlines()) == 1
    assert "Traceback" not in result.messages


def test_spend_limits(cli: Cli, db: Path) -> None:
    assert cli("user", "add", "alice", "--password", "Pw-long-enough-1").code == 0
    assert cli("spend", "set", "alice", "--day", "1.50", "--month", "20").code == 0
    limits = with_store(db, lambda store: store.spend_limits())
    assert limits["alice"].per_day == 1_500_000 and limits["alice"].per_month == 20_000_000
    assert "alice  1.50" in cli("spend", "list").out
    assert cli("spend", "del", "alice").code == 0
    assert cli("spend", "del", "alice").code == 2


# -- CDR queries ------------------------------------------------------------------------------
def test_cdr_list_filters(cli: Cli, db: Path) -> None:
    store_known(db)
    since = "2026-03-02T00:00:00Z"
    lines = cli("cdr", "list", "--since", since).out.strip().splitlines()
    assert len(lines) == 1 + 6  # header, the day's six calls
    alice = cli("cdr", "list", "--user", "alice", "--since", since).out.strip().splitlines()
    assert len(alice) == 1 + 3
    busy = cli("cdr", "list", "--disposition", "busy").out.strip().splitlines()
    assert len(busy) == 2 and "bob" in busy[1]
    acme = cli("cdr", "list", "--carrier", "acme", "--limit", "2").out.strip().splitlines()
    assert len(acme) == 1 + 2
    early = cli("cdr", "list", "--until", "2026-03-02").out.strip().splitlines()
    assert len(early) == 2 and "carol" in early[1]


def test_cdr_export_money_and_filters(cli: Cli, db: Path) -> None:
    store_known(db)
    result = cli("cdr", "export", "--csv", "-", "--user", "alice", "--disposition", "answered")
    rows = list(csv.DictReader(io.StringIO(result.out)))
    assert [row["cost"] for row in rows] == ["0.05", "0.10"]
    assert {row["currency"] for row in rows} == {"EUR"}
    assert rows[0]["started_at"] == "2026-03-02T10:00:00.000+00:00"
    assert rows[0]["disposition"] == "answered" and rows[0]["carrier"] == "acme"


def test_cdr_export_is_formula_safe(cli: Cli, db: Path) -> None:
    hostile = cdr("=HYPERLINK(1)", T0, talk=1, reason="@SUM(1)")
    with_store(db, lambda store: store.insert_cdr(hostile))
    rows = list(csv.DictReader(io.StringIO(cli("cdr", "export", "--csv", "-").out)))
    assert rows[0]["caller"] == "'=HYPERLINK(1)" and rows[0]["reason"] == "'@SUM(1)"


def test_stats_match_a_hand_computation(cli: Cli, db: Path) -> None:
    store_known(db)
    where = CdrFilter(since=T0 - 3600, until=T0 + DAY)
    everything, by_user, by_carrier = with_store(db, lambda store: store.cdr_tallies(where))
    # 6 calls, 3 answered (60 + 120 + 30 s): ASR 50 %, ACD 70 s, 3.5 minutes, cost 0.15
    assert (everything.calls, everything.answered) == (6, 3)
    assert everything.asr == 50.0 and everything.acd == 70.0 and everything.minutes == 3.5
    assert everything.cost == 150_000 and everything.billable_seconds == 180
    users = {tally.key: tally for tally in by_user}
    assert users["alice"].asr == pytest.approx(200 / 3) and users["alice"].acd == 90.0
    assert users["bob"].calls == 2 and users["bob"].asr == 50.0 and users["bob"].acd == 30.0
    assert users["carol"].calls == 1 and users["carol"].answered == 0
    assert by_user[0].key == "alice"  # the biggest spender first
    [acme] = by_carrier
    assert (acme.key, acme.calls, acme.answered, acme.cost) == ("acme", 4, 2, 150_000)
    text = cli("cdr", "stats", "--since", "2026-03-02T09:00Z", "--until", "2026-03-03T10:00Z").out
    assert "total  6      3         50.0  70.0   3.5      0.15" in text
    assert "acme     4      2         50.0  90.0   3.0      0.15" in text


def test_books_today_figures(db: Path) -> None:
    store_known(db)
    figures = with_store(db, lambda store: Books.today(store, T0 + 600))
    assert figures.total.calls == 6 and figures.total.cost == 150_000
    assert [tally.key for tally in figures.top] == ["alice"]  # carol's costly call was yesterday
    # The chart's 24 hours end with this one: carol's call of 24 hours ago is off its left.
    assert figures.hourly.calls[-1] == 6 and sum(figures.hourly.calls) == 6
    assert figures.hourly.cost[-1] == 150_000


def test_books_load_the_spend_of_the_day_and_month(db: Path) -> None:
    store_known(db)

    async def go(store: Store) -> Books:
        books = Books(AccountingSettings(user_day_limit="0.15"))
        await books.load(store, T0 + 600)
        return books

    books = with_store(db, go)
    ledger = books.meter.ledger
    assert ledger.day_by_user == {"alice": 150_000}
    assert ledger.month_by_user == {"alice": 150_000, "carol": 999_000}
    assert books.meter.refusal("alice", T0 + 600) is not None
    assert books.meter.refusal("carol", T0 + 600) is None


# -- retention --------------------------------------------------------------------------------
def test_retention_deletes_only_old_cdrs_in_batches(db: Path) -> None:
    async def go(store: Store) -> tuple[int, int, list[str]]:
        store.start_writer()
        old = [cdr("old", T0 - 500 * DAY + i) for i in range(25)]
        edge = cdr("edge", T0 - 400 * DAY)  # exactly keep_days old: kept
        new = [cdr("new", T0 - i) for i in range(5)]
        for row in [*old, edge, *new]:
            await store.insert_cdr(row)
        cutoff = T0 - 400 * DAY
        # Calls keep being recorded through the same writer while the purge runs.
        for batch in range(3):
            store.submit(DeleteOldCdrs(cutoff, 10))
            store.submit(InsertCdr(cdr("during", T0 + batch)))
            await store.flush()
        first = await store.count_cdrs_before(cutoff)
        store.submit(DeleteOldCdrs(cutoff, 10))
        await store.flush()
        remaining = await store.query_cdrs(CdrFilter(), limit=1_000)
        return first, await store.count_cdrs_before(cutoff), sorted({r.caller for r in remaining})

    after_three, after_four, callers = with_store(db, go)
    assert after_three == 0  # 25 rows in batches of 10: three batches
    assert after_four == 0
    assert callers == ["during", "edge", "new"]


def test_schema_3_gives_old_cdrs_their_disposition(tmp_path: Path) -> None:
    import sqlite3

    from core.store.schema import MIGRATIONS

    path = tmp_path / "v2.db"
    with sqlite3.connect(path) as db:
        for statement in (*MIGRATIONS[0], *MIGRATIONS[1]):
            db.execute(statement)
        for status, answered in ((200, 1.0), (486, None), (487, None), (408, None), (503, None)):
            db.execute(
                "INSERT INTO cdrs (call_id, started_at, answered_at, status) VALUES (?, 0, ?, ?)",
                (f"c{status}", answered, status),
            )
    rows = with_store(path, lambda store: store.query_cdrs(CdrFilter(), limit=10))
    assert {row.status: row.disposition for row in rows} == {
        200: "answered",
        486: "busy",
        487: "cancelled",
        408: "no answer",
        503: "failed",
    }


def test_inbound_callers_are_one_row_of_the_per_user_stats(db: Path) -> None:
    async def go(store: Store) -> list[str]:
        for index in range(5):
            row = cdr(f"+4420794600{index:02d}", T0 + index, talk=10)
            row.direction = "inbound"
            await store.insert_cdr(row)
        await store.insert_cdr(cdr("alice", T0, talk=20))
        everything, by_user, _ = await store.cdr_tallies(CdrFilter())
        assert everything.calls == sum(tally.calls for tally in by_user) == 6
        return [tally.key for tally in by_user]

    assert sorted(with_store(db, go)) == ["(inbound)", "alice"]
