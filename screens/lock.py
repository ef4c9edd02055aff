"""The console lock: set a console password on first start, ask for it at start and after idle.

The check is bcrypt (slow on purpose, ~0.3 s); the admin API runs it in a worker thread, so
the SIP core keeps answering while the console waits. The SIP core never stops for the lock:
it only hides the console.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, cast

from textual import work
from textual.app import ComposeResult
from textual.containers import Vertical
from textual.screen import Screen
from textual.widgets import Input, Label

if TYPE_CHECKING:
    from screens.base import ConsoleHost

MIN_CONSOLE_PASSWORD = 8


class LockScreen(Screen[bool]):
    """`first_run`: choose the console password (twice); otherwise enter it. Dismisses True."""

    CSS_PATH = "lock.tcss"
    AUTO_FOCUS = "#password"

    def __init__(self, *, first_run: bool) -> None:
        super().__init__()
        self.first_run = first_run
        self.failures = 0

    def compose(self) -> ComposeResult:
        settings = cast("ConsoleHost", self.app).core.settings
        with Vertical(id="lock"):
            yield Label("pbxtui", id="lock-brand")
            yield Label(f"PBX console for {settings.domain}", id="lock-domain")
            if self.first_run:
                yield Label(
                    "First start: choose a console password. It guards this console, "
                    "not the phones; it is stored as a bcrypt hash.",
                    id="lock-intro",
                )
            else:
                yield Label("Locked. The SIP server keeps running.", id="lock-intro")
            yield Input(placeholder="console password", password=True, id="password")
            if self.first_run:
                yield Input(placeholder="the same again", password=True, id="confirm")
            yield Label("", id="lock-error")

    def on_input_submitted(self, event: Input.Submitted) -> None:
        event.stop()
        if self.first_run and event.input.id == "password":
            self.query_one("#confirm", Input).focus()
            return
        self.check()

    def _error(self, message: str) -> None:
        self.query_one("#lock-error", Label).update(message)

    @work(exclusive=True)
    async def check(self) -> None:
        password_input = self.query_one("#password", Input)
        password = password_input.value
        admin = cast("ConsoleHost", self.app).core.admin
        if self.first_run:
            confirm = self.query_one("#confirm", Input)
            if len(password) < MIN_CONSOLE_PASSWORD:
                self._error(f"use at least {MIN_CONSOLE_PASSWORD} characters")
                password_input.focus()
                return
            if confirm.value != password:
                self._error("the two passwords differ")
                confirm.value = ""
                confirm.focus()
                return
            self._error("saving…")
            try:
                await admin.set_console_password(password)
            except ValueError as error:
                self._error(str(error))
                return
            self.dismiss(True)
            return
        if not password:
            self._error("enter the console password")
            return
        self._error("checking…")
        password_input.disabled = True
        try:
            ok = await admin.check_console_password(password)
        finally:
            password_input.disabled = False
        if ok:
            self.dismiss(True)
            return
        self.failures += 1
        password_input.value = ""
        password_input.focus()
        self._error(f"wrong password ({self.failures} failed)")
