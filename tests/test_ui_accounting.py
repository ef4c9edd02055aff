"""The console's accounting: today's figures and charts on the Calls pane, and a carrier's
rate table seen, imported (all or nothing) and deleted from the Carriers pane."""

from __future__ import annotations

import time
from pathlib import Path

from test_ui_support import console, refreshed
from textual.widgets import Input, Label, Sparkline

from core.store.rows import CdrRow
from screens.rate_form import RatesForm
from screens.widgets.tables import KeyedTable

USERS = {"alice": "alice-secret-1", "bob": "bob-secret-22"}
HEADER = "prefix,per_minute,first_increment,increment,connection\n"


def priced(call_id: str, caller: str, at: float, talk: float, cost: int) -> CdrRow:
    row = CdrRow(
        call_id, caller, "441632960001", "127.0.0.1", "outbound", at, at + 1, at + 1 + talk, 200
    )
    row.duration, row.disposition, row.carrier = talk, "answered", "acme"
    row.cost, row.currency, row.billable_seconds = cost, "EUR", 60
    return row


async def test_calls_pane_shows_todays_figures_and_hourly_charts(tmp_path: Path) -> None:
    async with console(tmp_path, users=USERS, size=(120, 40)) as (app, pilot):
        now = time.time()
        store = app.pbx.store
        await store.insert_cdr(priced("c1", "alice", now - 30, 60.0, 250_000))
        await store.insert_cdr(priced("c2", "[bold]bob", now - 20, 120.0, 50_000))
        failed = CdrRow("c3", "alice", "bob", "127.0.0.1", "internal", now - 10, None, now, 486)
        failed.disposition = "busy"
        await store.insert_cdr(failed)
        await pilot.press("6")
        await app.workers.wait_for_complete()
        await refreshed(pilot, app)
        text = str(app.screen.query_one("#today-figures", Label).render())
        # 3 calls, 2 answered: ASR 66.7 %, ACD 90 s; 0.30 spent, alice first.
        assert "3 calls · ASR 66.7% · ACD 1:30 · cost 0.30 EUR" in text
        assert "top: alice 0.25, [bold]bob 0.05" in text  # a username is never markup
        calls = app.screen.query_one("#today-calls", Sparkline)
        cost = app.screen.query_one("#today-cost", Sparkline)
        assert len(calls.data or []) == 24 and sum(calls.data or []) == 3
        assert sum(cost.data or []) == 300_000
        table = app.screen.query_one("#cdrs", KeyedTable)
        cells = [[str(cell) for cell in table.cells(key)] for key in table.keys]
        assert cells[0][-2:] == ["busy", ""]
        assert ["answered", "0.25 EUR"] in [row[-2:] for row in cells]


async def test_carrier_rates_are_seen_imported_and_deleted(tmp_path: Path) -> None:
    async with console(tmp_path, users=USERS, size=(120, 40)) as (app, pilot):
        await app.pbx.admin.add_carrier("acme", ["192.0.2.1/32"], gateway="192.0.2.1:5060")
        good = tmp_path / "rates.csv"
        good.write_text(HEADER + "44,0.0123,60,60,0\n447,0.09,30,6,0.05\n")
        bad = tmp_path / "bad.csv"
        bad.write_text(HEADER + "33,0.01,60,60,0\n34,oops,60,60,0\n")
        await pilot.press("5")
        await app.workers.wait_for_complete()
        await refreshed(pilot, app)
        await pilot.press("t")
        await pilot.pause()
        assert isinstance(app.screen, RatesForm)
        assert "no rates" in str(app.screen.query_one("#rates-summary", Label).render())
        app.screen.query_one("#file", Input).value = str(bad)
        await pilot.press("ctrl+s")
        await pilot.pause()
        assert isinstance(app.screen, RatesForm)  # refused: the form stays, the table too
        assert (await app.pbx.admin.accounting.rate_tables()) == []
        app.screen.query_one("#file", Input).value = str(good)
        await pilot.press("ctrl+s")
        await app.workers.wait_for_complete()
        await pilot.pause()
        assert not isinstance(app.screen, RatesForm)
        assert await app.pbx.admin.accounting.rate_tables() == [("acme", "EUR", 2)]
        # The running core prices with the new table at once.
        assert app.pbx.books.meter.rate_for("acme", "447911123456").prefix == "447"  # type: ignore[union-attr]
        table = app.screen.query_one("#carriers", KeyedTable)
        assert str(table.cells("acme")[-1]) == "2"
        await pilot.press("t")
        await pilot.pause()
        assert "2 prefixes, EUR" in str(app.screen.query_one("#rates-summary", Label).render())
        await pilot.click("#delete")
        await app.workers.wait_for_complete()
        await pilot.pause()
        assert await app.pbx.admin.accounting.rate_tables() == []
        assert app.pbx.books.meter.rate_for("acme", "447911123456") is None
