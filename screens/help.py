"""Every key of the console in one place: the global keys and each pane's and form's."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import ClassVar

from rich.table import Table
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Vertical, VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Label, Static


def _bindings(bindings: Iterable[BindingType]) -> list[Binding]:
    found = []
    for binding in bindings:
        if isinstance(binding, Binding):
            found.append(binding)
        else:
            found.append(Binding(*binding))
    return found


def _key_label(key: str) -> str:
    names = {"slash": "/", "question_mark": "?", "space": "Space", "escape": "Esc"}
    return " ".join(
        names.get(part, part.replace("ctrl+", "Ctrl+").title() if len(part) > 1 else part)
        for part in key.split(",")
    )


def keys_table(sections: Sequence[tuple[str, Iterable[BindingType]]]) -> Table:
    table = Table(box=None, show_header=False, padding=(0, 2, 0, 0), expand=True)
    table.add_column("key", style="bold cyan", no_wrap=True)
    table.add_column("what")
    for title, bindings in sections:
        table.add_row(f"[b reverse] {title} [/]", "")
        for binding in _bindings(bindings):
            if binding.description:
                table.add_row(_key_label(binding.key), binding.description)
        table.add_row("", "")
    return table


class HelpScreen(ModalScreen[None]):
    """`sections` is (title, bindings) pairs, as the app collects them from its panes."""

    CSS_PATH = "help.tcss"
    BINDINGS: ClassVar = [Binding("escape,q,question_mark,f1", "close", "Close")]

    def __init__(self, sections: Sequence[tuple[str, Iterable[BindingType]]]) -> None:
        super().__init__()
        self.sections = sections

    def compose(self) -> ComposeResult:
        with Vertical(id="help"):
            yield Label("Keys — Esc closes; Ctrl+P finds any action by name", id="help-title")
            with VerticalScroll(id="help-body"):
                yield Static(keys_table(self.sections), id="help-keys")

    def action_close(self) -> None:
        self.dismiss(None)
