"""A labelled form field on one line, with its inline validation message underneath."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical
from textual.widget import Widget
from textual.widgets import Label


class Field(Vertical):
    """`Field("Username", Input(..., compact=True), name="username")`; `error` shows below it."""

    DEFAULT_CSS = """
    Field { height: auto; margin-bottom: 1; }
    Field > Horizontal { height: auto; }
    Field .field-label { width: 22; color: $text-muted; padding-right: 1; }
    Field .field-control { width: 1fr; }
    Field .field-hint { color: $text-muted; height: auto; padding-left: 22; }
    Field > .field-error { color: $error; height: auto; display: none; padding-left: 22; }
    Field.-invalid > .field-error { display: block; }
    Field.-invalid .field-label { color: $error; text-style: bold; }
    """

    def __init__(self, label: str, control: Widget, *, name: str, hint: str = "") -> None:
        super().__init__(id=f"field-{name}")
        self.field_name = name
        self.label = label
        self.hint = hint
        self.control = control
        self._error = ""

    def compose(self) -> ComposeResult:
        with Horizontal():
            yield Label(self.label, classes="field-label")
            self.control.add_class("field-control")
            yield self.control
        if self.hint:
            yield Label(self.hint, classes="field-hint")
        yield Label("", classes="field-error")

    @property
    def error(self) -> str:
        return self._error

    @error.setter
    def error(self, message: str) -> None:
        self._error = message
        self.query_one(".field-error", Label).update(message)
        self.set_class(bool(message), "-invalid")
