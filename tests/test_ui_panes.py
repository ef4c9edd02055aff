"""The live panes against real traffic: registrations (unregister), security (feed, bans,
ban and unban, offenders, counters) and calls (CDRs and their filter)."""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path

from support.client import UdpClient
from support.phone import Phone
from test_ui_support import console, flood, refreshed, register, server_of
from textual.widgets import Input, Label

from core.settings import SecuritySettings
from core.store.rows import CdrRow
from screens.widgets.line_table import LineTable
from screens.widgets.tables import KeyedTable

USERS = {"alice": "alice-secret-1", "bob": "bob-secret-22"}


def rows(app, table_id: str) -> list[list[str]]:
    table = app.screen.query_one(f"#{table_id}", KeyedTable)
    return [[str(cell) for cell in table.cells(key)] for key in table.keys]


async def test_registrations_show_where_contacts_came_from_and_unregister(tmp_path: Path) -> None:
    async with console(tmp_path, users=USERS) as (app, pilot):
        alice = await register(app, "alice", USERS["alice"])
        bob = await register(app, "bob", USERS["bob"])
        await pilot.press("2")
        await refreshed(pilot, app)
        shown = rows(app, "bindings")
        assert [row[0] for row in shown] == ["alice", "bob"]
        _user, _contact, source, transport, agent, expires, _nat = shown[0]
        assert source == f"{alice.local[0]}:{alice.local[1]}" and transport == "UDP"
        assert agent == "pbxtui-test-phone" and expires.startswith("59:")
        # Each column is as wide as its widest cell: nothing is cut short.
        columns = app.screen.query_one("#bindings", KeyedTable).columns
        for row in shown:
            assert all(
                len(cell) <= width for cell, (_k, _l, width) in zip(row, columns, strict=True)
            )
        app.screen.query_one("#registrations-filter", Input).value = "bob"
        await pilot.pause()
        assert [row[0] for row in rows(app, "bindings")] == ["bob"]
        app.screen.query_one("#bindings", KeyedTable).focus()
        await pilot.press("escape")
        assert [row[0] for row in rows(app, "bindings")] == ["alice", "bob"]
        # The selection survives the filter: still bob, until the admin moves to alice.
        assert app.screen.query_one("#bindings", KeyedTable).selected_key.startswith("bob")  # type: ignore[union-attr]
        await pilot.press("up")
        await pilot.press("u", "n")
        assert len(app.pbx.location.all_bindings()) == 2
        await pilot.press("u", "y")
        await pilot.pause()
        assert [b.user for b in app.pbx.location.all_bindings()] == ["bob"]
        assert [row[0] for row in rows(app, "bindings")] == ["bob"]
        alice.close()
        bob.close()


async def test_security_feed_collapses_auth_failures_and_shows_a_flood_ban(tmp_path: Path) -> None:
    security = replace(SecuritySettings(), flood_limit=20)
    async with console(tmp_path, users=USERS, core={"security": security}) as (app, pilot):
        async with UdpClient(server_of(app)) as client:
            phone = Phone(client, "alice", "wrong-password")
            for _ in range(3):
                assert (await phone.register()).status == 401  # type: ignore[union-attr]
        await flood(app, 40)
        await pilot.press("3")
        await refreshed(pilot, app)
        feed = rows(app, "feed")
        kinds = {row[2]: row for row in feed}
        assert kinds["auth-failed"][1] == "127.0.0.1" and kinds["auth-failed"][4] == "x3"
        assert "user=alice" in kinds["auth-failed"][3]
        assert kinds["flood-banned"][1] == "127.0.0.2"
        assert [row[0] for row in rows(app, "bans")] == ["127.0.0.2"]
        assert rows(app, "bans")[0][2] == "flood"
        offenders = {row[0]: row for row in rows(app, "offenders")}
        assert offenders["127.0.0.2"][2] == "yes" and offenders["127.0.0.1"][1] == "3"
        counters = str(app.screen.query_one("#security-counters", Label).render())
        assert "auth-failed 3" in counters and "flood-banned 1" in counters
        # a ban is counted once, as its security action, not again as the SourceBanned event
        assert "ban " not in counters.replace("flood-banned", "")


async def test_ban_and_unban_from_the_security_pane(tmp_path: Path) -> None:
    async with console(tmp_path) as (app, pilot):
        await app.pbx.admin.ban("203.0.113.9", 600, "by hand")
        await pilot.press("3")
        await refreshed(pilot, app)
        assert rows(app, "bans")[0][:3] == ["203.0.113.9", rows(app, "bans")[0][1], "by hand"]
        assert rows(app, "bans")[0][1].startswith(("10:00", "9:5"))
        app.screen.query_one("#bans", KeyedTable).focus()
        await pilot.press("u", "escape")
        assert app.pbx.security.bans(app.pbx.clock())
        await pilot.press("u", "y")
        await refreshed(pilot, app)
        assert app.pbx.security.bans(app.pbx.clock()) == []
        assert rows(app, "bans") == []
        assert "unbanned" in {row[2] for row in rows(app, "feed")}
        # Ban again, prefilled from the selected feed row's source.
        app.screen.query_one("#feed", KeyedTable).focus()
        await pilot.press("b")
        assert app.screen.query_one("#ip", Input).value == "203.0.113.9"
        await pilot.press("ctrl+s")
        await refreshed(pilot, app)
        assert [row[0] for row in rows(app, "bans")] == ["203.0.113.9"]


async def test_calls_pane_lists_cdrs_and_filters_them(tmp_path: Path) -> None:
    async with console(tmp_path, users=USERS) as (app, pilot):
        now = time.time()
        store = app.pbx.store
        await store.insert_cdr(
            CdrRow(
                "c1",
                "alice",
                "bob",
                "127.0.0.1",
                "internal",
                now - 60,
                now - 55,
                now - 10,
                200,
                "OK",
                45.0,
            )
        )
        await store.insert_cdr(
            CdrRow(
                "c2",
                "bob",
                "441632960001",
                "127.0.0.1",
                "outbound",
                now - 30,
                None,
                now - 25,
                486,
                "Busy Here",
                0.0,
            )
        )
        await pilot.press("6")
        await app.workers.wait_for_complete()
        await refreshed(pilot, app)
        shown = rows(app, "cdrs")
        assert [row[1:3] for row in shown] == [["bob", "441632960001"], ["alice", "bob"]]
        assert shown[1][5] == "200 OK" and shown[1][6] == "0:45" and shown[0][5] == "486 Busy Here"
        await pilot.press("slash", *"4416")
        await app.workers.wait_for_complete()
        await pilot.pause()
        assert [row[0:3][1:] for row in rows(app, "cdrs")] == [["bob", "441632960001"]]
        await pilot.press("escape")
        await app.workers.wait_for_complete()
        await pilot.pause()
        assert len(rows(app, "cdrs")) == 2
        assert "Calls up (0)" in str(app.screen.query_one("#calls-title", Label).render())


async def test_with_worker_processes_the_console_shows_what_they_did(tmp_path: Path) -> None:
    """Registrations, traffic and figures handled by the workers reach main's console."""
    async with console(tmp_path, users=USERS, core={"workers": 2}) as (app, pilot):
        # The users were added after the workers started: they read the table again a
        # moment later, and until then alice is unknown there (401).
        deadline = time.monotonic() + 5
        alice = await UdpClient(server_of(app)).open()
        phone = Phone(alice, "alice", USERS["alice"])  # one Call-ID: one dialog in Traffic
        response = await phone.register()
        while response is not None and response.status == 401 and time.monotonic() < deadline:
            await pilot.pause(0.1)
            response = await phone.register()
        assert response is not None and response.status == 200, response
        while not app.pbx.location.all_bindings() and time.monotonic() < deadline:
            await pilot.pause(0.05)
        await pilot.press("2")
        await refreshed(pilot, app)
        assert [row[0] for row in rows(app, "bindings")] == ["alice"]
        await pilot.press("1")
        await refreshed(pilot, app)
        dialogs = app.screen.query_one("#dialogs", LineTable)
        listed = [(str(dialogs.cells(key)[1]), str(dialogs.cells(key)[5])) for key in dialogs.keys]
        assert listed == [("REGISTER", "200 OK")]
        # The header strip counts the workers' messages (reported about once a second).
        while app.pbx.stats().messages_in < 2 and time.monotonic() < deadline + 2:
            await pilot.pause(0.1)
        assert app.pbx.stats().messages_in >= 2
        alice.close()


async def test_filter_keys_move_between_the_box_and_its_list_in_every_filtered_pane(
    tmp_path: Path,
) -> None:
    """`/` goes to the filter box, Enter back to the list; where Escape clears the filter
    (Registrations, Calls) it empties the box and goes back to the list too."""
    panes = [("1", "traffic-filter", "dialogs", False)]
    panes += [("2", "registrations-filter", "bindings", True), ("6", "cdr-filter", "cdrs", True)]
    async with console(tmp_path, users=USERS) as (app, pilot):
        for key, box_id, list_id, escape_clears in panes:
            await pilot.press(key)
            box = app.screen.query_one(f"#{box_id}", Input)
            await pilot.press("slash", "z")
            assert app.screen.focused is box and box.value == "z"
            await pilot.press("enter")
            assert app.screen.focused is app.screen.query_one(f"#{list_id}")
            if escape_clears:
                await pilot.press("slash", "escape")
                assert box.value == ""
                assert app.screen.focused is app.screen.query_one(f"#{list_id}")
            else:
                box.value = ""
            await pilot.pause()
