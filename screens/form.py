"""The shape every form shares: a modal box of `Field`s that validates inline and dismisses
with its result (Textual's `ModalScreen[T]` pattern).

A form supplies its title and its fields (`compose_fields`) and what Save does (`submit`);
the box, the error line, the Save / Cancel buttons and their keys are here, once. Extra buttons
(`extra_buttons`) run the action their id names, e.g. "generate" → `action_generate`.

Errors come from the admin API as `ValueError` sentences; `show_error` puts each under the
field it is about (by the words it mentions), so the admin sees what to fix where it is.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, ClassVar, Literal, TypeVar, cast

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Button, Input, Label

from screens.widgets.field import Field

if TYPE_CHECKING:
    from core.control.view import AdminCalls, CoreView
    from screens.base import ConsoleHost

ResultType = TypeVar("ResultType")


class FormScreen(ModalScreen[ResultType]):
    """Esc cancels (dismiss None), Enter in the last input or Ctrl+S submits."""

    CSS_PATH = "form.tcss"
    BINDINGS: ClassVar = [
        Binding("escape", "cancel", "Cancel"),
        Binding("ctrl+s", "submit", "Save"),
    ]
    # Words in an error message → the field it is about, first match wins.
    ERROR_FIELDS: ClassVar[tuple[tuple[str, str], ...]] = ()
    SAVE_LABEL: ClassVar[str] = "Save"
    SAVE_VARIANT: ClassVar[Literal["primary", "error"]] = "primary"

    def form_title(self) -> str:
        raise NotImplementedError

    def compose_fields(self) -> ComposeResult:
        raise NotImplementedError

    def extra_buttons(self) -> Sequence[tuple[str, str]]:
        """(label, action name) of buttons between Save and Cancel."""
        return ()

    def compose(self) -> ComposeResult:
        with Vertical(id="form"):
            yield Label(self.form_title(), classes="form-title")
            yield from self.compose_fields()
            yield Label("", id="form-error")
            with Horizontal(classes="form-buttons"):
                yield Button(self.SAVE_LABEL, variant=self.SAVE_VARIANT, id="save", compact=True)
                for label, action in self.extra_buttons():
                    yield Button(label, id=action, compact=True)
                yield Button("Cancel", id="cancel", compact=True)

    async def on_button_pressed(self, event: Button.Pressed) -> None:
        event.stop()
        if event.button.id == "save":
            await self.action_submit()
        elif event.button.id == "cancel":
            self.action_cancel()
        elif event.button.id:
            await self.run_action(event.button.id)

    @property
    def core(self) -> CoreView:
        return cast("ConsoleHost", self.app).core

    @property
    def admin(self) -> AdminCalls:
        return self.core.admin

    def action_cancel(self) -> None:
        self.dismiss(None)

    async def action_submit(self) -> None:
        self.clear_errors()
        await self.submit()

    async def submit(self) -> None:
        raise NotImplementedError

    def on_input_submitted(self, event: Input.Submitted) -> None:
        event.stop()
        self.run_worker(self.action_submit(), exclusive=True, group="submit")

    def value(self, name: str) -> str:
        return self.query_one(f"#{name}", Input).value.strip()

    def clear_errors(self) -> None:
        for field in self.query(Field):
            field.error = ""
        self.query_one("#form-error", Label).update("")

    def field_error(self, name: str, message: str) -> None:
        field = self.query_one(f"#field-{name}", Field)
        field.error = message
        field.control.focus()

    def show_error(self, message: str) -> None:
        """Put an admin API error under the field it names, or at the bottom of the form."""
        lower = message.lower()
        for word, name in self.ERROR_FIELDS:
            if word in lower and self.query(f"#field-{name}"):
                self.field_error(name, message)
                return
        self.query_one("#form-error", Label).update(message)


def parse_count(text: str, what: str) -> int:
    """A non-negative whole number from a form field ('' is 0)."""
    if not text:
        return 0
    if not text.isdigit():
        raise ValueError(f"{what} must be a whole number (0 = no limit)")
    return int(text)
