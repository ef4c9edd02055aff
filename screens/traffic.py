"""Pane 1, Traffic: sngrep inside the console.

A live list of dialogs (grouped by Call-ID), the ladder of the one under the cursor and the
raw text of the message picked in the ladder. The list follows the bus at the app's cadence
unless paused; a filter narrows it by text, user, address and method; the selected dialog or
every listed one can be saved as .pcap or .txt.

The console shares one event loop with the SIP core, so every millisecond spent drawing is
one the core does not get. Under a flood the pane therefore draws little: the list holds only
the newest `LIVE_ROWS` dialogs (the model keeps the whole bounded history, which filters and
saves use) in a `LineTable`, which draws only the lines on screen from strips cached per row
(a DataTable cost ~0.5 ms a visible cell), its columns are fixed so an update never re-lays
out the screen, and once more than `BUSY_MESSAGES` arrive between two draws it redraws at
most every `BUSY_INTERVAL` seconds. The ladder (a `LineTable` too) and raw views redraw only
when the selected dialog changed, so they follow the list's cadence too.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import ClassVar

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.widgets import Input, Label

from core.net.pcap import write_pcap
from core.private_files import open_private
from screens.base import FilteredPane
from screens.dialogs import Dialog, TrafficFilter, TrafficMessage, export_text
from screens.save_form import SaveForm, SaveRequest
from screens.widgets.ladder import LadderTable, raw_message
from screens.widgets.line_table import LineTable
from screens.widgets.raw_view import RawView

STATE_STYLES = {
    "IN CALL": "bold green",
    "COMPLETED": "green",
    "RINGING": "yellow",
    "CALL SETUP": "yellow",
    "CANCELLED": "dark_orange",
    "CHALLENGED": "dark_orange",
    "BUSY": "red",
    "REJECTED": "red",
    "UNPARSEABLE": "magenta",
}
LIVE_ROWS = 100  # dialogs the list shows (the newest); the model keeps the full history
BUSY_MESSAGES = 40  # new messages between two draws that make the pane "busy"
BUSY_INTERVAL = 1.0  # seconds between draws of a busy pane


def state_cell(state: str) -> Text:
    if state in STATE_STYLES:
        return Text(state, style=STATE_STYLES[state])
    if state[:1] == "2":
        return Text(state, style="green")
    if state[:1] in "3456":
        return Text(state, style="red")
    return Text(state)


def dialog_cells(dialog: Dialog) -> tuple[str | Text, ...]:
    started = time.strftime("%H:%M:%S", time.localtime(dialog.first_at))
    return (
        started,
        dialog.method or "?",
        dialog.from_user,
        dialog.to_user,
        dialog.source,
        state_cell(dialog.state),
        str(dialog.message_count),
    )


def write_capture(request: SaveRequest, dialogs: list[Dialog]) -> int:
    """Write the dialogs' messages in time order; returns how many were written."""
    messages = sorted(
        (message for dialog in dialogs for message in dialog.messages),
        key=lambda message: message.traffic.at,
    )
    # A capture holds Authorization headers: owner-only, never through a symlink.
    if request.format == "txt":
        with open_private(request.path, "x") as text:
            text.write(export_text(messages))
        return len(messages)
    with open_private(request.path, "xb") as stream:
        return write_pcap(stream, (message.traffic for message in messages))


class TrafficPane(FilteredPane):
    PANE = "traffic"
    FIRST_FOCUS = "#dialogs"
    FILTER_INPUT = "traffic-filter"
    FILTERED = "#dialogs"
    BINDINGS: ClassVar = [
        Binding("slash", "filter", "Filter"),
        Binding("space", "pause", "Pause"),
        Binding("enter", "zoom", "Flow", show=False),
        Binding("z", "zoom", "Zoom"),
        Binding("s", "save", "Save"),
        Binding("x", "clear", "Clear"),
        Binding("escape", "back", "Back", show=False),
    ]

    def __init__(self) -> None:
        super().__init__()
        self.paused = False
        self.filter = TrafficFilter()
        self._matches: dict[str, tuple[int, bool]] = {}  # call-id → (revision, matched)
        self._shown_revision = -1
        self._paused_at_total = 0
        self._drawn_total = 0  # log.total_messages when the list was last drawn
        self._drawn_at = float("-inf")  # monotonic time of that draw
        self.listed: list[Dialog] = []
        self._raw_shown: TrafficMessage | None = None  # the message whose raw text is on show

    def compose(self) -> ComposeResult:
        with Horizontal(id="traffic-bar"):
            yield Input(
                placeholder="/ filter: text  u:user  a:address  m:method",
                id="traffic-filter",
                compact=True,
            )
            yield Label("", id="traffic-info")
        yield LineTable(
            [
                ("time", "Time", 8),
                ("method", "Method", 9),
                ("from", "From", 16),
                ("to", "To", 16),
                ("source", "Source", 21),
                ("state", "State", 18),
                ("count", "Msgs", 5),
            ],
            id="dialogs",
        )
        with Horizontal(id="detail"):
            with Vertical(id="ladder-box"):
                yield LadderTable(id="ladder")
            yield RawView(id="raw")

    # -- cadence --------------------------------------------------------------------------
    def refresh_view(self) -> None:
        self.draw(time.monotonic())

    def draw(self, now: float, *, force: bool = False) -> None:
        """Redraw from the model at monotonic time `now`, unless a busy pane drew too lately.

        `force` draws whatever the cadence says: the admin asked for it (a filter, resume).
        """
        log = self.state.dialogs
        if self.paused or log.revision == self._shown_revision:
            self._update_info()
            return
        busy = log.total_messages - self._drawn_total > BUSY_MESSAGES
        if busy and not force and now - self._drawn_at < BUSY_INTERVAL:
            return
        self._shown_revision = log.revision
        self._drawn_total = log.total_messages
        self._drawn_at = now
        self.listed = self._filtered()
        self._update_info()
        table = self.query_one("#dialogs", LineTable)
        at_bottom = table.cursor_row >= table.row_count - 1
        shown = self.listed[-min(LIVE_ROWS, self.app_settings_rows()) :]
        table.sync({dialog.call_id: dialog_cells(dialog) for dialog in shown})
        if at_bottom and table.row_count:
            # Following the newest dialog, like `tail -f`, until the admin moves up.
            table.move_cursor(row=table.row_count - 1, animate=False)
        self._show_selected()

    def _filtered(self) -> list[Dialog]:
        """Every dialog in the history that the filter lets through, oldest first."""
        log = self.state.dialogs
        if self.filter.empty:
            dialogs = list(log)
        else:
            matches = self._matches
            dialogs = []
            for dialog in log:
                cached = matches.get(dialog.call_id)
                if cached is None or cached[0] != dialog.revision:
                    cached = (dialog.revision, self.filter.matches(dialog))
                    matches[dialog.call_id] = cached
                if cached[1]:
                    dialogs.append(dialog)
            if len(matches) > 2 * max(len(log), 1):
                live = {dialog.call_id for dialog in log}
                self._matches = {key: value for key, value in matches.items() if key in live}
        return dialogs

    def app_settings_rows(self) -> int:
        return self.core.settings.ui.max_table_rows

    def _update_info(self) -> None:
        log = self.state.dialogs
        parts: list[tuple[str, str] | str] = []
        if self.paused:
            new = log.total_messages - self._paused_at_total
            parts.append((f" ⏸ PAUSED +{new} ", "bold reverse yellow"))
        else:
            parts.append((" ● LIVE ", "bold green"))
        shown = len(self.listed)
        parts.append(f" {shown}/{len(log)} dialogs  {log.total_messages} msgs")
        lost = log.dropped_messages + log.missed
        if lost:
            parts.append((f"  {lost} dropped", "yellow"))
        # The label's width is fixed (traffic.tcss): new figures never re-lay out the screen.
        self.query_one("#traffic-info", Label).update(Text.assemble(*parts), layout=False)

    def _show_selected(self) -> None:
        key = self.query_one("#dialogs", LineTable).selected_key
        dialog = self.state.dialogs.get(key) if key else None
        ladder = self.query_one("#ladder", LadderTable)
        if ladder.show(dialog):
            self._show_message()

    def _show_message(self) -> None:
        message = self.query_one("#ladder", LadderTable).selected_message
        if message is self._raw_shown:
            return  # a redrawn ladder re-highlights its row: the text on show is still right
        self._raw_shown = message
        self.query_one("#raw", RawView).show(raw_message(message) if message else "")

    # -- events ---------------------------------------------------------------------------
    @on(LineTable.Highlighted, "#dialogs")
    def _dialog_highlighted(self) -> None:
        self._show_selected()

    @on(LineTable.Highlighted, "#ladder")
    def _message_highlighted(self) -> None:
        self._show_message()

    @on(LineTable.Selected, "#dialogs")
    def _dialog_selected(self) -> None:
        self.action_zoom()

    @on(Input.Changed, "#traffic-filter")
    def _filter_changed(self, event: Input.Changed) -> None:
        self.apply_filter(event.value)

    def apply_filter(self, query: str) -> None:
        self.filter = TrafficFilter.parse(query)
        self._matches = {}
        self._shown_revision = -1
        if not self.paused:
            self.draw(time.monotonic(), force=True)

    # -- actions --------------------------------------------------------------------------
    def action_pause(self) -> None:
        self.paused = not self.paused
        self._paused_at_total = self.state.dialogs.total_messages
        if not self.paused:
            self._shown_revision = -1
            self.draw(time.monotonic(), force=True)
        else:
            self._update_info()

    def action_zoom(self) -> None:
        zoomed = not self.has_class("-zoomed")
        self.set_class(zoomed, "-zoomed")
        target = "#ladder" if zoomed else "#dialogs"
        self.query_one(target).focus()

    def action_back(self) -> None:
        if self.has_class("-zoomed"):
            self.action_zoom()
        elif self.screen.focused is self.query_one("#traffic-filter", Input):
            self.query_one("#dialogs", LineTable).focus()

    def action_clear(self) -> None:
        self.state.dialogs.clear()
        self._matches = {}
        self._shown_revision = -1
        self.listed = []
        self.query_one("#dialogs", LineTable).sync({})
        self.query_one("#ladder", LadderTable).show(None)
        self.query_one("#raw", RawView).show("")
        self._raw_shown = None
        self._update_info()

    def action_save(self) -> None:
        selected = self.query_one("#dialogs", LineTable).selected_key
        stem = "pbxtui-" + time.strftime("%Y%m%d-%H%M%S")
        self.app.push_screen(SaveForm(stem, selected, len(self.listed)), self._save)

    async def _save(self, request: SaveRequest | None) -> None:
        if request is None:
            return
        if request.scope == "selected":
            key = self.query_one("#dialogs", LineTable).selected_key
            found = self.state.dialogs.get(key) if key else None
            dialogs = [found] if found else []
        else:
            dialogs = list(self.listed)
        try:
            count = await asyncio.to_thread(write_capture, request, dialogs)
        except OSError as error:
            self.notify(
                f"could not save: {error.strerror or error}", severity="error", markup=False
            )
            return
        self.notify(f"saved {count} messages to {Path(request.path)}", markup=False)
