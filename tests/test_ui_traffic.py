"""The Traffic pane against real SIP traffic: dialogs, ladder, raw text, filters, pause,
bounded history and saving as .pcap / .txt."""

from __future__ import annotations

import time
from pathlib import Path

from test_ui_support import console, options_ping, pane_on_show, refreshed, register
from textual.widgets import Input, Label

from core.events import SipTraffic
from screens.save_form import SaveForm
from screens.traffic import BUSY_INTERVAL, BUSY_MESSAGES, LIVE_ROWS, TrafficPane
from screens.widgets.ladder import LadderTable
from screens.widgets.line_table import LineTable
from screens.widgets.raw_view import RawView

USERS = {"alice": "alice-secret-1"}


def options_request(call_id: str) -> bytes:
    return (
        "OPTIONS sip:pbx.test SIP/2.0\r\nVia: SIP/2.0/UDP 192.0.2.10:5062;branch=z9hG4bK1\r\n"
        f"From: <sip:probe@pbx.test>;tag=1\r\nTo: <sip:pbx.test>\r\nCall-ID: {call_id}\r\n"
        "CSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n"
    ).encode()


def listed(app) -> list[tuple[str, str]]:
    """(method, state) of each listed dialog, in order."""
    table = app.screen.query_one("#dialogs", LineTable)
    rows = [table.cells(key) for key in table.keys]
    return [(str(row[1]), str(row[5])) for row in rows]


async def test_dialogs_ladder_and_raw_message(tmp_path: Path) -> None:
    async with console(tmp_path, users=USERS, size=(140, 40)) as (app, pilot):
        client = await register(app, "alice", "alice-secret-1")
        await options_ping(app)
        await refreshed(pilot, app)
        assert listed(app) == [("REGISTER", "200 OK"), ("OPTIONS", "200 OK")]
        table = app.screen.query_one("#dialogs", LineTable)
        table.move_cursor(row=0)
        await pilot.pause()
        ladder = app.screen.query_one("#ladder", LadderTable)
        labels = [ladder.message_at(row).label for row in range(ladder.row_count)]  # type: ignore[union-attr]
        assert labels == ["REGISTER", "401 Unauthorized", "REGISTER", "200 OK"]
        flow = str(ladder.cells(ladder.keys[0])[0])
        assert "REGISTER" in flow and "►" in flow
        ladder.focus()
        await pilot.press("down")
        raw = app.screen.query_one("#raw", RawView).plain
        assert raw.splitlines()[2] == "SIP/2.0 401 Unauthorized"
        assert "WWW-Authenticate: Digest" in raw
        client.close()


async def test_enter_zooms_into_the_flow_and_escape_returns(tmp_path: Path) -> None:
    async with console(tmp_path) as (app, pilot):
        await options_ping(app)
        await refreshed(pilot, app)
        await pilot.press("enter")
        pane = pane_on_show(app)
        assert isinstance(pane, TrafficPane)
        assert pane.has_class("-zoomed") and app.screen.focused is pane.query_one("#ladder")
        assert pane.query_one("#raw").display  # narrow terminal: raw text shows when zoomed
        await pilot.press("escape")
        assert not pane.has_class("-zoomed")


async def test_filters_by_method_user_address_and_text(tmp_path: Path) -> None:
    async with console(tmp_path, users=USERS) as (app, pilot):
        client = await register(app, "alice", "alice-secret-1")
        await options_ping(app, user_agent="probe-ua")
        await refreshed(pilot, app)
        pane = pane_on_show(app)
        assert isinstance(pane, TrafficPane)
        await pilot.press("slash")
        for query, methods in (
            ("m:options", ["OPTIONS"]),
            ("m:register", ["REGISTER"]),
            ("u:alice", ["REGISTER", "OPTIONS"]),
            (f"a:{client.local[0]}:{client.local[1]}", ["REGISTER"]),
            ("probe-ua", ["OPTIONS"]),
            ("WWW-Authenticate", ["REGISTER"]),
            ("m:invite", []),
            ("", ["REGISTER", "OPTIONS"]),
        ):
            pane.query_one("#traffic-filter", Input).value = query
            await pilot.pause()
            assert [method for method, _state in listed(app)] == methods, query
        client.close()


async def test_pause_freezes_the_list_and_resume_catches_up(tmp_path: Path) -> None:
    async with console(tmp_path) as (app, pilot):
        await options_ping(app)
        await refreshed(pilot, app)
        await pilot.press("space")
        await options_ping(app)
        await options_ping(app)
        await refreshed(pilot, app)
        assert len(listed(app)) == 1
        info = str(app.screen.query_one("#traffic-info", Label).render())
        assert "PAUSED +4" in info
        await pilot.press("space")
        await pilot.pause()
        assert len(listed(app)) == 3
        assert "LIVE" in str(app.screen.query_one("#traffic-info", Label).render())


async def test_history_is_bounded_and_says_what_it_dropped(tmp_path: Path) -> None:
    async with console(tmp_path, traffic_dialogs=3) as (app, pilot):
        for _ in range(5):
            await options_ping(app)
        await refreshed(pilot, app)
        assert len(listed(app)) == 3
        assert "4 dropped" in str(app.screen.query_one("#traffic-info", Label).render())
        await pilot.press("x")
        assert listed(app) == []


async def test_save_selected_as_pcap_and_filtered_as_text(tmp_path: Path) -> None:
    async with console(tmp_path, users=USERS) as (app, pilot):
        client = await register(app, "alice", "alice-secret-1")
        await options_ping(app)
        await refreshed(pilot, app)
        app.screen.query_one("#dialogs", LineTable).move_cursor(row=0)
        pcap = tmp_path / "register.pcap"
        await pilot.press("s")
        form = app.screen
        assert isinstance(form, SaveForm)
        form.query_one("#path", Input).value = str(pcap)
        await pilot.press("enter")
        await app.workers.wait_for_complete()
        await pilot.pause()
        data = pcap.read_bytes()
        assert data[:4] == bytes.fromhex("d4c3b2a1")  # libpcap magic, little-endian
        assert data.count(b"REGISTER sip:pbx.test SIP/2.0") == 2 and b"OPTIONS" not in data

        text_path = tmp_path / "all.txt"
        await pilot.press("s")
        form = app.screen
        await pilot.click("#fmt-txt")
        await pilot.click("#scope-filtered")
        form.query_one("#path", Input).value = str(text_path)
        await pilot.click("#save")
        await app.workers.wait_for_complete()
        await pilot.pause()
        text = text_path.read_text()
        assert "REGISTER sip:pbx.test SIP/2.0" in text and "OPTIONS sip:" in text
        client.close()


async def test_save_form_refuses_an_existing_file_and_cancels(tmp_path: Path) -> None:
    async with console(tmp_path) as (app, pilot):
        await options_ping(app)
        await refreshed(pilot, app)
        taken = tmp_path / "taken.pcap"
        taken.write_bytes(b"keep me")
        await pilot.press("s")
        form = app.screen
        form.query_one("#path", Input).value = str(taken)
        await pilot.press("enter")
        await pilot.pause()
        assert "already exists" in form.query_one("#field-path").error  # type: ignore[attr-defined]
        form.query_one("#path", Input).value = str(tmp_path / "missing" / "x.pcap")
        await pilot.press("enter")
        await pilot.pause()
        assert "does not exist" in form.query_one("#field-path").error  # type: ignore[attr-defined]
        await pilot.press("escape")
        assert isinstance(pane_on_show(app), TrafficPane)
        assert taken.read_bytes() == b"keep me"


async def test_a_flood_lists_the_newest_rows_at_a_calm_cadence(tmp_path: Path) -> None:
    async with console(tmp_path) as (app, pilot):
        pane = pane_on_show(app)
        assert isinstance(pane, TrafficPane)
        log = app.state.dialogs
        server = ("127.0.0.1", 5060)
        phone = ("192.0.2.10", 5062)

        def arrive(first: int, count: int) -> None:
            log.add(
                SipTraffic("in", "udp", phone, server, options_request(f"flood-{n}"), at=100.0)
                for n in range(first, first + count)
            )

        arrive(0, LIVE_ROWS + 50)
        now = time.monotonic() + 1_000.0  # after any draw of the app's own cadence
        pane.draw(now)
        table = pane.query_one("#dialogs", LineTable)
        # The list holds the newest rows only; the model (and so filters and saves) keeps all.
        assert table.keys == [f"flood-{n}" for n in range(50, LIVE_ROWS + 50)]
        assert len(pane.listed) == LIVE_ROWS + 50
        assert table.selected_key == f"flood-{LIVE_ROWS + 49}"  # following the newest
        # Busy: a draw soon after the last one waits; one a busy interval later catches up.
        arrive(LIVE_ROWS + 50, BUSY_MESSAGES + 1)
        pane.draw(now + BUSY_INTERVAL / 2)
        assert table.keys[-1] == f"flood-{LIVE_ROWS + 49}"
        pane.draw(now + BUSY_INTERVAL)
        newest = LIVE_ROWS + 50 + BUSY_MESSAGES
        assert table.keys[-1] == table.selected_key == f"flood-{newest}"
        assert len(table.keys) == LIVE_ROWS
        # What the admin asks for is drawn at once, busy or not.
        arrive(newest + 1, BUSY_MESSAGES + 1)
        await pilot.press("slash")
        pane.query_one("#traffic-filter", Input).value = "flood-2"
        await pilot.pause()
        everything = range(newest + BUSY_MESSAGES + 2)
        assert table.keys == [f"flood-{n}" for n in everything if str(n).startswith("2")]


async def test_dialog_list_keys_click_and_cursor_that_follows_its_row(tmp_path: Path) -> None:
    async with console(tmp_path, size=(120, 30)) as (app, pilot):
        pane = pane_on_show(app)
        assert isinstance(pane, TrafficPane)
        log = app.state.dialogs
        log.add(
            SipTraffic(
                "in", "udp", ("192.0.2.10", 5062), ("127.0.0.1", 5060), options_request(f"c-{n}")
            )
            for n in range(30)
        )
        pane.draw(time.monotonic() + 1_000.0, force=True)
        await pilot.pause()
        table = pane.query_one("#dialogs", LineTable)
        assert table.selected_key == "c-29"  # following the newest
        await pilot.press("home")
        assert table.selected_key == "c-0" and table.scroll_offset.y == 0
        await pilot.press("down", "down")
        assert table.selected_key == "c-2"
        assert pane.query_one("#ladder", LadderTable).dialog is log.get("c-2")
        await pilot.press("pagedown")
        page = table.scrollable_content_region.height - 1  # less the header line
        assert table.cursor_row == 2 + page
        assert table.scroll_offset.y > 0  # the cursor is kept on pane
        await pilot.press("end")
        assert table.selected_key == "c-29"
        # Rows leaving above the cursor leave it on the same dialog.
        await pilot.press("up")
        table.sync({key: table.cells(key) for key in table.keys[5:]})
        assert table.selected_key == "c-28" and table.cursor_row == 23
        # A click picks a row; a click on the row under the cursor opens its flow.
        await pilot.press("home")
        await pilot.click("#dialogs", offset=(5, 3))  # line 0 is the header
        assert table.selected_key == "c-7" and not pane.has_class("-zoomed")
        await pilot.click("#dialogs", offset=(5, 3))
        assert pane.has_class("-zoomed")
