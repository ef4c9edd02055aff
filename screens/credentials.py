"""The SIP credentials of a new (or re-passworded) user, shown once, ready to type into a phone
(the fields are core/provisioning.py's, the same `pbxtui user add` prints).

The password is not stored anywhere but as digest hashes, so this is the only time the
console can show it; the screen says so.
"""

from __future__ import annotations

from typing import ClassVar

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import Button, Label, Static

from core.provisioning import PhoneSettings


class CredentialsScreen(ModalScreen[None]):
    CSS_PATH = "credentials.tcss"
    BINDINGS: ClassVar = [Binding("escape,enter", "close", "Close")]

    def __init__(self, account: PhoneSettings) -> None:
        super().__init__()
        self.text = account.text()

    def compose(self) -> ComposeResult:
        with Vertical(id="credentials"):
            yield Label("SIP account ready — type this into the phone", id="credentials-title")
            yield Static(self.text, id="credentials-text", markup=False)
            yield Label(
                "The password is shown only now: it is stored as digest hashes.",
                id="credentials-note",
            )
            yield Button("Done (Enter)", variant="primary", id="done", compact=True)

    def on_button_pressed(self) -> None:
        self.dismiss(None)

    def action_close(self) -> None:
        self.dismiss(None)
