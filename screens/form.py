"""The shape every form shares: a modal box of `Field`s that validates inline and dismisses
with its result (Textual's `ModalScreen[T]` pattern).

Errors come from the admin API as `ValueError` sentences; `show_error` puts each under the
field it is about (by the words it mentions), so the admin sees what to fix where it is.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar, TypeVar, cast

from textual.binding import Binding
from textual.screen import ModalScreen
from textual.widgets import Input, Label

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
