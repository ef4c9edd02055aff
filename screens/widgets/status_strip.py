"""The two lines at the top of every pane: where you are, and how the server is doing.

Line one names the panes with their number keys (clickable); line two carries the live
figures: messages per second with a one-minute sparkline, registered contacts, calls up and
active bans. The app updates it once per refresh, never per message.
"""

from __future__ import annotations

from collections.abc import Sequence

from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical
from textual.widgets import Label, Sparkline, Static

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
    """Navigation and live figures; `pane` is the mode name of the screen it sits on."""

    def __init__(self, pane: str) -> None:
        super().__init__(id="status-strip")
        self.pane = pane

    def compose(self) -> ComposeResult:
        yield Static(self._nav(), id="nav", markup=True)
        with Horizontal(id="figures"):
            yield Label("  0.0 msg/s", id="rate")
            yield Sparkline([0.0], id="rate-spark")
            yield Label("", id="counts")

    def _nav(self) -> str:
        parts = ["[b]pbxtui[/b] "]
        for key, mode, title in PANES:
            short = "Regs" if mode == "registrations" else title
            text = f" [b]{key}[/b] {short} "
            if mode == self.pane:
                parts.append(f"[reverse]{text}[/reverse]")
            else:
                parts.append(f"[@click=app.switch_mode('{mode}')]{text}[/]")
        return "".join(parts)

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
            counts.append(f"  {note}", style="bold yellow")
        self.query_one("#counts", Label).update(counts, layout=False)
