"""Pane 6, Calls: today's figures and per-hour charts, the calls up now with their durations
ticking, and the recent call records with what each cost."""

from __future__ import annotations

import time
from typing import Any, ClassVar

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal
from textual.widgets import Input, Label

from core.accounting.rates import format_money
from core.store.rows import CdrRow
from screens.base import FilteredPane, StoreRowsPane
from screens.registrations import countdown
from screens.widgets.tables import KeyedTable
from screens.widgets.today import TodayPanel

# An answered, relayed call that has carried no packet for this long shows as silent: a
# phone sends RTP every 20 ms, comfort noise at least every few seconds (RFC 3389).
SILENT_AFTER_SECONDS = 5.0
CDR_LIMIT = 200


def clock(at: float | None) -> str:
    return time.strftime("%m-%d %H:%M:%S", time.localtime(at)) if at else ""


def call_cells(call: Any, now: float) -> tuple[str | Text, ...]:
    """A live call: duration counts from the answer, ringing time from the start."""
    answered = call.answered_at
    if answered:
        duration = Text(countdown(now - answered), style="bold green")
    else:
        duration = Text(f"ringing {countdown(now - call.started_at)}", style="yellow")
    return (
        clock(call.started_at), call.caller, call.callee, call.source, call.state, duration,
        media_cell(call),
    )  # fmt: skip


def media_cell(call: Any) -> Text:
    """Relayed or direct; packets and bytes each way (caller → callee / back); silence."""
    media = call.media
    if media is None:
        return Text("direct", style="dim")
    if not media.streams:
        return Text("relayed by rtpengine", style="green")  # until its first `query` answer
    caller_bytes = sum(stream.caller_bytes for stream in media.streams)
    callee_bytes = sum(stream.callee_bytes for stream in media.streams)
    counts = (
        f"→{media.caller_packets} ←{media.callee_packets} pkt "
        f"{caller_bytes // 1024}/{callee_bytes // 1024} KiB"
    ) + _quality(media.streams[0])
    if any(stream.on_hold for stream in media.streams):
        return Text(f"on hold {counts}", style="yellow")
    if call.answered_at and media.idle_seconds >= SILENT_AFTER_SECONDS:
        return Text(f"no audio {countdown(media.idle_seconds)} {counts}", style="bold red")
    return Text(f"relayed {counts}", style="green")


def _quality(stream: Any) -> str:
    """Loss and jitter as the phones report them over RTCP (caller's view / callee's)."""
    if stream.caller_loss is None and stream.callee_loss is None:
        return ""

    def shown(value: float | None) -> str:
        return "-" if value is None else f"{value:.0f}"

    loss = f"{shown(stream.caller_loss)}/{shown(stream.callee_loss)} %"
    jitter = f"{shown(stream.caller_jitter_ms)}/{shown(stream.callee_jitter_ms)} ms"
    return f" loss {loss} jitter {jitter}"


def cdr_cells(cdr: CdrRow) -> tuple[str | Text, ...]:
    status = Text(
        f"{cdr.status} {cdr.reason}".strip(), style="green" if cdr.status == 200 else "red"
    )
    return (
        clock(cdr.started_at),
        cdr.caller,
        cdr.callee,
        cdr.source_ip,
        cdr.direction,
        status,
        countdown(cdr.duration) if cdr.duration else "",
        cdr.disposition,
        f"{format_money(cdr.cost)} {cdr.currency}" if cdr.currency else "",
    )


class CallsPane(StoreRowsPane, FilteredPane):
    PANE = "calls"
    FIRST_FOCUS = "#cdrs"
    FILTER_INPUT = "cdr-filter"
    FILTERED = "#cdrs"
    BINDINGS: ClassVar = [
        Binding("slash", "filter", "Filter CDRs"),
        Binding("r", "reload", "Reload"),
        Binding("escape", "unfilter", "Clear filter", show=False),
    ]

    def __init__(self) -> None:
        super().__init__()
        self.filter_text = ""
        self.cdrs: list[CdrRow] = []
        self._calls_revision = -1

    def compose(self) -> ComposeResult:
        yield TodayPanel(id="today")
        yield Label("Calls up", classes="section-title", id="calls-title")
        yield KeyedTable(
            [
                ("started", "Started"),
                ("caller", "Caller"),
                ("callee", "Callee"),
                ("source", "Source"),
                ("state", "State"),
                ("duration", "Duration"),
                ("media", "Media"),
            ],
            id="calls",
        )
        with Horizontal(id="cdr-bar"):
            yield Label("Recent calls", classes="section-title", id="cdr-title")
            yield Input(
                placeholder="/ filter: number, user, address, status",
                id="cdr-filter",
                compact=True,
            )
        yield KeyedTable(
            [
                ("started", "Started"),
                ("caller", "Caller"),
                ("callee", "Callee"),
                ("source", "Source"),
                ("direction", "Direction"),
                ("status", "Result"),
                ("duration", "Duration"),
                ("disposition", "Disposition"),
                ("cost", "Cost"),
            ],
            id="cdrs",
        )

    def refresh_view(self) -> None:
        now = time.time()
        calls = self.core.calls()
        self.query_one("#calls", KeyedTable).sync(
            {call.call_id: call_cells(call, now) for call in calls}
        )
        self.show_text("calls-title", f"Calls up ({len(calls)})")
        calls_changed = self.state.calls_revision != self._calls_revision
        self._calls_revision = self.state.calls_revision
        self.reload_rows(when_stale=not calls_changed)

    async def load_rows(self) -> None:
        self.cdrs = await self.admin.list_cdrs(limit=CDR_LIMIT, text=self.filter_text or None)
        self.query_one("#cdrs", KeyedTable).sync(
            {
                str(cdr.id if cdr.id is not None else cdr.call_id): cdr_cells(cdr)
                for cdr in self.cdrs
            }
        )
        shown = f"matching {self.filter_text!r}" if self.filter_text else "most recent"
        self.show_text("cdr-title", f"Recent calls ({len(self.cdrs)} {shown})")
        accounting = self.admin.accounting
        if accounting is not None:
            figures = await accounting.today()
            currency = self.core.settings.accounting.currency
            self.query_one("#today", TodayPanel).show(figures, currency)

    @on(Input.Changed, "#cdr-filter")
    async def _filter_changed(self, event: Input.Changed) -> None:
        self.filter_text = event.value.strip()
        self.reload_rows()
