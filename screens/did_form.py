"""Map an inbound number (DID) to the user whose phones ring for it."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.widgets import Input, Select

from core.store.rows import DidRow
from screens.form import FormScreen
from screens.widgets.field import Field


class DidForm(FormScreen[DidRow | None]):
    ERROR_FIELDS = (
        ("telephone number", "number"),
        ("prefix", "number"),
        ("did", "number"),
        ("user", "user"),
    )

    def __init__(self, usernames: list[str]) -> None:
        super().__init__()
        self.usernames = usernames

    def form_title(self) -> str:
        return "New DID"

    def compose_fields(self) -> ComposeResult:
        yield Field(
            "Number",
            Input(id="number", placeholder="+44 1632 960001", compact=True),
            name="number",
            hint="as the carrier sends it; spaces and dashes are fine",
        )
        yield Field(
            "Rings user",
            Select(
                [(name, name) for name in self.usernames],
                prompt="choose a user",
                id="user",
                compact=True,
            ),
            name="user",
        )

    def on_mount(self) -> None:
        self.query_one("#number", Input).focus()

    async def submit(self) -> None:
        number = self.value("number")
        user_select = self.query_one("#user", Select)
        if user_select.is_blank():
            self.field_error("user", "choose the user this number rings")
            return
        try:
            did = await self.admin.add_did(number, str(user_select.value))
        except ValueError as error:
            self.show_error(str(error))
            return
        self.dismiss(did)
