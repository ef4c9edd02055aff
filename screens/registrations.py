"""Pane 2, Registrations: every registered contact, where it really came from, and its health.

"Registered from" is the address the packets showed, not what the Contact claims; a phone
behind NAT has both, and the NAT column says whether our keep-alive pings still get answers.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal
from textual.widgets import Input, Label

from core.printable import printable
from screens.base import FilteredPane
from screens.confirm import ConfirmScreen
from screens.dialogs import format_address
from screens.widgets.tables import KeyedTable

if TYPE_CHECKING:
    from core.control.rows import ContactRow


def countdown(seconds: float) -> str:
    seconds = max(0, int(seconds))
    hours, rest = divmod(seconds, 3_600)
    minutes, seconds = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{seconds:02d}" if hours else f"{minutes}:{seconds:02d}"


def nat_cell(binding: ContactRow) -> Text:
    if not binding.behind_nat:
        return Text("-", style="dim")
    if not binding.reachable:
        return Text(f"NAT ✗ {binding.ping_failures} missed", style="bold red")
    if binding.ping_failures:
        return Text(f"NAT ? {binding.ping_failures} missed", style="yellow")
    return Text("NAT ✓ pinged", style="green")


def binding_key(binding: ContactRow) -> str:
    return f"{binding.user}\x1f{binding.contact}"


def binding_cells(binding: ContactRow, now: float) -> tuple[str | Text, ...]:
    left = binding.expires_at - now
    return (
        binding.user,
        binding.contact,
        format_address(binding.remote),
        binding.transport.upper(),
        binding.user_agent,
        Text(countdown(left), style="yellow" if left < 60 else ""),
        nat_cell(binding),
    )


class RegistrationsPane(FilteredPane):
    PANE = "registrations"
    FIRST_FOCUS = "#bindings"
    FILTER_INPUT = "registrations-filter"
    FILTERED = "#bindings"
    BINDINGS: ClassVar = [
        Binding("slash", "filter", "Filter"),
        Binding("u,delete", "unregister", "Unregister"),
        Binding("escape", "unfilter", "Clear filter", show=False),
    ]

    def __init__(self) -> None:
        super().__init__()
        self.filter_text = ""

    def compose(self) -> ComposeResult:
        with Horizontal(id="registrations-bar"):
            yield Input(
                placeholder="/ filter: user, contact, address or user agent",
                id="registrations-filter",
                compact=True,
            )
            yield Label("", id="registrations-info")
        yield KeyedTable(
            [
                ("user", "User"),
                ("contact", "Contact"),
                ("from", "Registered from"),
                ("transport", "Proto"),
                ("agent", "User agent"),
                ("expires", "Expires"),
                ("nat", "NAT ping"),
            ],
            id="bindings",
        )

    def refresh_view(self) -> None:
        core = self.core
        now = core.clock()
        bindings = sorted(core.registrations(), key=lambda b: (b.user, b.contact))
        needle = self.filter_text
        if needle:
            bindings = [
                b
                for b in bindings
                if needle in b.user.lower()
                or needle in b.contact.lower()
                or needle in format_address(b.remote)
                or needle in b.user_agent.lower()
            ]
        total = len(bindings)
        bindings = bindings[: core.settings.ui.max_table_rows]
        self.query_one("#bindings", KeyedTable).sync(
            {binding_key(b): binding_cells(b, now) for b in bindings}
        )
        users = len({b.user for b in bindings})
        self.show_text("registrations-info", f" {total} contacts of {users} users ")

    @on(Input.Changed, "#registrations-filter")
    def _filter_changed(self, event: Input.Changed) -> None:
        self.filter_text = event.value.strip().lower()
        self.refresh_view()

    def action_unregister(self) -> None:
        key = self.query_one("#bindings", KeyedTable).selected_key
        if key is None:
            self.notify("no contact selected", severity="warning")
            return
        user, _, contact = key.partition("\x1f")

        async def answered(yes: bool | None) -> None:
            if not yes:
                return
            try:
                await self.admin.unregister(user, contact)
            except ValueError as error:
                self.notify(str(error), severity="error", markup=False)
                return
            # The Contact is the phone's text: never markup, never raw control characters.
            self.notify(printable(f"unregistered {contact} of {user}"), markup=False)
            self.refresh_view()

        self.app.push_screen(
            ConfirmScreen(f"Unregister {contact} of {user}?", "Unregister"), answered
        )
