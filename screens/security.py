"""Pane 3, Security: attacks bouncing off, live.

The feed collapses repeats of the same kind from the same source into one line with a count,
so a brute-force run is one line ticking up, not a screenful. Beside it: the bans in force
with the time each has left, the sources that offended most, and a counter per kind.
"""

from __future__ import annotations

import math
import time
from typing import ClassVar

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.widgets import Label

from screens.ban_form import BanForm
from screens.base import PbxPane
from screens.confirm import ConfirmScreen
from screens.registrations import countdown
from screens.state import FeedRow
from screens.widgets.tables import KeyedTable

FEED_ROWS = 200
KIND_STYLES = {
    "banned": "bold red",
    "flood-banned": "bold red",
    "brute-force-user": "bold red",
    "toll-fraud": "bold red",
    "unbanned": "green",
    "auth-failed": "yellow",
    "tls-required": "yellow",
    "scanner-dropped": "magenta",
    "banned-dropped": "dim",
}
# The bus counts every feed event by kind (security events, bans included, by action); these
# kinds are not attacks.
NOT_SECURITY_KINDS = frozenset(
    {
        "registered",
        "refreshed",
        "unregistered",
        "expired",
        "unreachable",
        "call",
        "server",
        "event",
    }
)


def feed_cells(row: FeedRow) -> tuple[str | Text, ...]:
    return (
        time.strftime("%H:%M:%S", time.localtime(row.last_at)),
        row.source,
        Text(row.kind, style=KIND_STYLES.get(row.kind, "")),
        f"{row.detail} user={row.user}" if row.user else row.detail,
        Text(f"x{row.count}" if row.count > 1 else "", style="bold"),
    )


def time_left(until: float, now: float) -> str:
    return "forever" if math.isinf(until) else countdown(until - now)


class SecurityPane(PbxPane):
    PANE = "security"
    FIRST_FOCUS = "#feed"
    BINDINGS: ClassVar = [
        Binding("b", "ban", "Ban"),
        Binding("u,delete", "unban", "Unban"),
    ]

    def __init__(self) -> None:
        super().__init__()
        self._feed_revision = -1

    def compose(self) -> ComposeResult:
        yield Label("", id="security-counters")
        with Horizontal(id="security-main"):
            yield KeyedTable(
                [
                    ("at", "Last"),
                    ("source", "Source"),
                    ("kind", "Kind"),
                    ("detail", "Detail"),
                    ("count", "Count"),
                ],
                id="feed",
            )
            with Vertical(id="security-side"):
                with Vertical(id="bans-box"):
                    yield Label("Bans in force", classes="section-title")
                    yield KeyedTable(
                        [
                            ("ip", "Address"),
                            ("left", "Left"),
                            ("reason", "Reason"),
                            ("hits", "Hits"),
                        ],
                        id="bans",
                    )
                with Vertical(id="offenders-box"):
                    yield Label("Top offenders", classes="section-title")
                    yield KeyedTable(
                        [("source", "Source"), ("events", "Events"), ("banned", "Banned")],
                        id="offenders",
                    )

    def refresh_view(self) -> None:
        feed = self.state.security
        now = self.core.clock()
        bans = sorted(self.core.bans(now), key=lambda ban: ban.until)
        banned = {ban.ip for ban in bans}
        if feed.revision != self._feed_revision:
            self._feed_revision = feed.revision
            rows = list(feed.rows.values())[-FEED_ROWS:]
            self.query_one("#feed", KeyedTable).sync(
                {row.key: feed_cells(row) for row in reversed(rows)}
            )
            self.query_one("#offenders", KeyedTable).sync(
                {
                    source: (source, str(count), "yes" if source in banned else "")
                    for source, count in feed.top_offenders(10)
                }
            )
        self.query_one("#bans", KeyedTable).sync(
            {
                ban.ip: (ban.ip, time_left(ban.until, now), ban.reason, str(ban.count or ""))
                for ban in bans[: self.core.settings.ui.max_table_rows]
            }
        )
        self.show_text("security-counters", self._counters())

    def _counters(self) -> Text:
        counts = self.core.bus.counts
        text = Text(" ")
        kinds = [kind for kind in counts if kind not in NOT_SECURITY_KINDS]
        if not kinds:
            text.append("no security events yet", style="dim")
        for kind in sorted(kinds):
            text.append(f"{kind} ", style=KIND_STYLES.get(kind, ""))
            text.append(f"{counts[kind]}  ", style="bold")
        if self.state.feed_missed:
            text.append(f"({self.state.feed_missed} events missed)", style="yellow")
        return text

    def _selected_source(self) -> str:
        focused = self.screen.focused
        if isinstance(focused, KeyedTable) and focused.selected_key:
            key = focused.selected_key
            if focused.id == "feed":
                return key.partition("|")[2]
            return key
        return ""

    def action_ban(self) -> None:
        def banned(ip: str | None) -> None:
            if ip:
                self.notify(f"banned {ip}", markup=False)
                self.refresh_view()

        self.app.push_screen(BanForm(self._selected_source()), banned)

    def action_unban(self) -> None:
        bans_table = self.query_one("#bans", KeyedTable)
        on_bans = self.screen.focused is bans_table
        ip = bans_table.selected_key if on_bans else self._selected_source()
        banned = {ban.ip for ban in self.core.bans(self.core.clock())}
        if not ip or ip not in banned:
            ip = bans_table.selected_key or ""
        if not ip:
            self.notify("no ban selected", severity="warning")
            return

        async def answered(yes: bool | None) -> None:
            if not yes:
                return
            try:
                await self.admin.unban(ip)
            except ValueError as error:
                self.notify(str(error), severity="error", markup=False)
                return
            self.notify(f"unbanned {ip}", markup=False)
            self.refresh_view()

        self.app.push_screen(ConfirmScreen(f"Unban {ip}?", "Unban"), answered)
