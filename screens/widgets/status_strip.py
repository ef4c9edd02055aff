"""The two lines at the top of the console: where you are, and how the server is doing.

Line one names the panes with their number keys (clickable); line two carries the live
figures: messages per second with a one-minute sparkline, registered contacts, calls up and
active bans. The app updates it once per refresh, never per message. There is one strip for
all the panes: a pane switch repaints line one, nothing is mounted or laid out again.
"""

from __future__ import annotations

from collections.abc import Sequence

from rich.markup import escape
from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical
from textual.widgets import Label, Sparkline, Static

# (number key, pane name, title) of each pane, in the order of the keys.
PANES: tuple[tuple[str, str, str], ...] = (
    ("1", "traffic", "Traffic"),
    ("2", "registrations", "Registrations"),
    ("3", "security", "Security"),
    ("4", "users", "Users"),
    ("5", "carriers", "Carriers"),
    ("6", "calls", "Calls"),
)


def format_rate(rate: float) -> str:
    if rate >= 10_000:
        return f"{rate / 1000:.0f}k"
    if rate >= 100:
        return f"{rate:.0f}"
    return f"{rate:.1f}"


class StatusStrip(Vertical):
    """Navigation and live figures; `pane` is the name of the pane on show."""

    def __init__(self, pane: str, mode: str = "") -> None:
        super().__init__(id="status-strip")
        self.pane = pane
        self.mode = mode  # "one process" or "attached pid N": what quitting would stop

    def compose(self) -> ComposeResult:
        yield Static(self._nav(), id="nav", markup=True)
        with Horizontal(id="figures"):
            yield Label("  0.0 msg/s", id="rate")
            yield Sparkline([0.0], id="rate-spark")
            yield Label("", id="counts")

    def _nav(self) -> str:
        parts = ["[b]pbxtui[/b] "]
        for key, pane, title in PANES:
            short = "Regs" if pane == "registrations" else title
            text = f" [b]{key}[/b] {short} "
            if pane == self.pane:
                parts.append(f"[reverse]{text}[/reverse]")
            else:
                parts.append(f"[@click=app.show_pane('{pane}')]{text}[/]")
        if self.mode:
            parts.append(f"  [b $accent]{escape(self.mode)}[/]")
        return "".join(parts)

    def set_mode(self, mode: str) -> None:
        """Say where the core runs (known once it has started or the console has attached)."""
        if mode != self.mode:
            self.mode = mode
            if self.is_mounted:
                self.query_one("#nav", Static).update(self._nav())

    def show_pane(self, pane: str) -> None:
        """Highlight `pane` in the navigation line (fixed size: a repaint, not a layout)."""
        if pane != self.pane:
            self.pane = pane
            self.query_one("#nav", Static).update(self._nav(), layout=False)

    def update_figures(
        self,
        rate: float,
        history: Sequence[float],
        contacts: int,
        calls_up: int,
        bans: int,
        note: str = "",
    ) -> None:
        # Fixed widths (app.tcss): new figures repaint two labels, never re-lay out the screen.
        self.query_one("#rate", Label).update(f"{format_rate(rate):>6} msg/s", layout=False)
        self.query_one("#rate-spark", Sparkline).data = list(history)
        counts = Text.assemble(
            (f" {contacts}", "bold"),
            " contact  " if contacts == 1 else " contacts  ",
            (f"{calls_up}", "bold green" if calls_up else "bold"),
            " call up  " if calls_up == 1 else " calls up  ",
            (f"{bans}", "bold red" if bans else "bold"),
            " ban" if bans == 1 else " bans",
        )
        if note:
            # First, so a narrow terminal cuts the counts rather than the warning.
            counts = Text.assemble((f" {note} ", "bold yellow"), counts)
        self.query_one("#counts", Label).update(counts, layout=False)
