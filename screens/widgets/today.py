"""Today's call figures for the Calls pane: one line to read, two charts to look at.

The line says what an accountant asks first (calls, ASR, ACD, cost so far, who spent most);
the charts show the last 24 hours, an hour per bar, of calls and of cost, so a night of
calls to premium numbers stands out at a glance. They are Textual's own `Sparkline`s: a bar
per hour needs no axes, and a plotting package (textual-plotext) would add a dependency and a
layout cost at every refresh for the same 24 numbers.

The figures come from `pbx.admin.accounting.today()`; this widget only renders them.
"""

from __future__ import annotations

from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical
from textual.widgets import Label, Sparkline

from core.accounting.books import TodayFigures
from core.accounting.rates import format_money


def figures_text(figures: TodayFigures, currency: str) -> Text:
    """`Today  12 calls · ASR 75.0% · ACD 1:20 · cost 1.23 EUR · top: alice 1.00, bob 0.23`.
    Usernames are wire-reachable text: appended as plain text, never parsed as markup."""
    total = figures.total
    minutes, seconds = divmod(round(total.acd), 60)
    text = Text("Today  ", style="bold")
    text.append(
        f"{total.calls} calls · ASR {total.asr:.1f}% · ACD {minutes}:{seconds:02d} · "
        f"cost {format_money(total.cost)} {currency}"
    )
    if figures.top:
        text.append(" · top: ")
        text.append(", ".join(f"{tally.key} {format_money(tally.cost)}" for tally in figures.top))
    return text


class TodayPanel(Vertical):
    """The figures line and the two per-hour charts (calls, cost) of the last 24 hours."""

    DEFAULT_CSS = """
    TodayPanel { height: auto; }
    TodayPanel #today-figures { width: 100%; }
    TodayPanel Horizontal { height: 1; }
    TodayPanel .chart-label { width: 16; color: $text-muted; }
    TodayPanel Sparkline { width: 1fr; height: 1; }
    """

    def compose(self) -> ComposeResult:
        yield Label("Today  -", id="today-figures")
        with Horizontal():
            yield Label("calls / hour", classes="chart-label", id="today-calls-label")
            yield Sparkline([0.0] * 24, id="today-calls")
        with Horizontal():
            yield Label("cost / hour", classes="chart-label", id="today-cost-label")
            yield Sparkline([0.0] * 24, id="today-cost")

    def show(self, figures: TodayFigures, currency: str) -> None:
        hourly = figures.hourly
        self.query_one("#today-figures", Label).update(figures_text(figures, currency))
        peak_calls = max(hourly.calls, default=0)
        peak_cost = max(hourly.cost, default=0)
        self.query_one("#today-calls-label", Label).update(f"calls/h ≤{peak_calls}")
        self.query_one("#today-cost-label", Label).update(f"cost/h ≤{format_money(peak_cost)}")
        self.query_one("#today-calls", Sparkline).data = [float(n) for n in hourly.calls]
        self.query_one("#today-cost", Sparkline).data = [float(n) for n in hourly.cost]
