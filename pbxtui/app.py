"""The console: a Textual app that hosts the SIP core in its own event loop.

`PbxApp` starts the `Pbx` when it mounts and stops it when it exits. It owns the cadence:
`settings.ui.refresh_hz` times a second it drains the event bus into the console's models
(in batches, whatever pane is shown) and asks the visible pane to redraw inside one
`batch_update`, so a flood of SIP messages costs a few table cell updates per tick, never a
widget update per message. The panes live in one `ConsoleScreen`, one per number key (see
screens/console.py for why they are not screens or modes).

The console is locked behind a bcrypt password: set on the first start, asked for at every
start and after `settings.ui.lock_after_seconds` idle. Only tests and the screenshot tool
pass `require_login=False`.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable
from functools import partial
from typing import ClassVar

from textual import events
from textual.app import App, SystemCommand
from textual.binding import Binding, BindingType
from textual.css.query import NoMatches
from textual.screen import Screen

from core.pbx import Pbx, StartError, role_for
from core.settings import Settings
from pbxtui.run import settle_after_start
from screens.base import PbxPane
from screens.confirm import ConfirmScreen
from screens.console import PANE_TYPES, ConsoleScreen
from screens.form import FormScreen
from screens.help import HelpScreen
from screens.lock import LockScreen
from screens.state import ConsoleState
from screens.user_form import UserForm
from screens.widgets.status_strip import PANES

MAX_REFRESH_HZ = 10.0


class PbxApp(App[None]):
    CSS_PATH = "app.tcss"
    TITLE = "pbxtui"
    HORIZONTAL_BREAKPOINTS: ClassVar = [(0, "-narrow"), (120, "-wide")]
    BINDINGS: ClassVar[list[BindingType]] = [
        *(Binding(key, f"show_pane('{pane}')", title, show=False) for key, pane, title in PANES),
        Binding("question_mark,f1", "help", "Help"),
        Binding("ctrl+l", "lock", "Lock"),
        Binding("ctrl+q", "quit", "Quit", priority=True),
    ]

    def __init__(
        self, settings: Settings, *, require_login: bool = True, freeze_gc: bool = False
    ) -> None:
        super().__init__()
        self.settings = settings
        self.require_login = require_login
        self.freeze_gc = freeze_gc
        # The console owns the terminal: worker processes started under it stay quiet.
        self.pbx = Pbx(settings, role=role_for(settings, quiet_workers=True))
        self.state = ConsoleState(self.pbx)
        self.ready = False
        self.locked = False
        self.start_error: str | None = None
        self.last_activity = time.monotonic()
        self.refresh_interval = 1.0 / min(max(settings.ui.refresh_hz, 0.5), MAX_REFRESH_HZ)
        self.console_screen = ConsoleScreen()

    # -- lifecycle ------------------------------------------------------------------------
    async def on_mount(self) -> None:
        # Pushed, not returned by `get_default_screen`: Textual loads a screen's CSS_PATH (the
        # panes' .tcss) when the screen is pushed, never for the default screen.
        await self.push_screen(self.console_screen)
        try:
            await self.pbx.start()
        except StartError as error:
            self.start_error = str(error)
            self.exit(return_code=2)
            return
        self.ready = True
        if self.freeze_gc:
            settle_after_start(asyncio.get_running_loop())
        if self.require_login:
            first_run = not await self.pbx.admin.has_console_password()
            self.lock(first_run=first_run)
            lock_after = self.settings.ui.lock_after_seconds
            if lock_after > 0:
                self.set_interval(min(1.0, lock_after / 4), self.lock_if_idle)
        self.set_interval(self.refresh_interval, self.refresh_panes)
        self.refresh_panes()

    async def on_unmount(self) -> None:
        if self.ready:
            self.ready = False
            await self.pbx.stop()

    # -- the cadence ----------------------------------------------------------------------
    @property
    def current_pane(self) -> str:
        """The name of the pane on show (or under a form, the help or the lock)."""
        return self.console_screen.current_pane

    def visible_pane(self) -> PbxPane | None:
        """The pane on show, also under a form; None while locked."""
        for screen in reversed(self.screen_stack):
            if screen is self.console_screen:
                return screen.pane
            if not screen.is_modal:
                return None
        return None

    def action_show_pane(self, name: str) -> None:
        """Show pane `name`: number keys, the status strip, the palette. Not over a form or
        the help (Textual keeps the app's keys from a modal screen), nor while locked."""
        self.console_screen.show_pane(name)

    def refresh_panes(self) -> None:
        """Drain the bus into the models, then redraw the visible pane, all in one batch."""
        if not self.ready:
            return
        self.state.drain(time.monotonic())
        pane = self.visible_pane()
        if pane is None or not pane.is_mounted:
            return
        stats = self.state.stats
        with self.batch_update():
            try:
                if stats is not None:
                    self.console_screen.status_strip.update_figures(
                        self.state.rates.rate,
                        self.state.rates.history,
                        stats.contacts,
                        stats.calls_up,
                        stats.bans,
                    )
                pane.refresh_view()
            except NoMatches:
                # A pane that is still composing its widgets is drawn on the next tick.
                return

    # -- the lock -------------------------------------------------------------------------
    async def on_event(self, event: events.Event) -> None:
        if isinstance(event, (events.Key, events.MouseDown, events.MouseScrollDown)):
            self.last_activity = time.monotonic()
        await super().on_event(event)

    def lock_if_idle(self) -> None:
        idle = time.monotonic() - self.last_activity
        if not self.locked and idle >= self.settings.ui.lock_after_seconds:
            self.lock(first_run=False)

    def lock(self, *, first_run: bool = False) -> None:
        if self.locked:
            return
        self.locked = True
        self.push_screen(LockScreen(first_run=first_run), self._unlocked)

    def _unlocked(self, ok: bool | None) -> None:
        self.locked = False
        self.last_activity = time.monotonic()
        self.refresh_panes()

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        """A locked console runs none of the app's actions: no panes, help, palette or quit."""
        return not self.locked

    # -- actions --------------------------------------------------------------------------
    def action_lock(self) -> None:
        if self.require_login:
            self.lock(first_run=False)
        else:
            self.notify("this console was started without a login", severity="warning")

    def action_help(self) -> None:
        if not isinstance(self.screen, HelpScreen):
            self.push_screen(HelpScreen(self.key_sections()))

    async def action_quit(self) -> None:
        def answered(yes: bool | None) -> None:
            if yes:
                self.exit()

        if not isinstance(self.screen, ConfirmScreen):
            await self.push_screen(
                ConfirmScreen("Quit the console? The SIP server stops with it.", "Quit"), answered
            )

    def key_sections(self) -> list[tuple[str, Iterable[BindingType]]]:
        """Every key, grouped as the help screen shows them."""
        everywhere: list[BindingType] = [
            *(Binding(key, "", f"{title} pane") for key, _pane, title in PANES),
            *self.BINDINGS[len(PANES) :],
            Binding("ctrl+p", "", "Command palette: find any action by name"),
            Binding("tab", "", "Next table or field"),
        ]
        sections: list[tuple[str, Iterable[BindingType]]] = [("Everywhere", everywhere)]
        for _key, pane, title in PANES:
            sections.append((title, PANE_TYPES[pane].BINDINGS))
        sections.append(
            ("Forms", [*FormScreen.BINDINGS, *UserForm.BINDINGS[len(FormScreen.BINDINGS) :]])
        )
        return sections

    def get_system_commands(self, screen: Screen[object]) -> Iterable[SystemCommand]:
        """The command palette finds every pane and every pane's actions by name."""
        if self.locked:
            return
        yield from super().get_system_commands(screen)
        for key, pane, title in PANES:
            yield SystemCommand(
                f"Go to {title}",
                f"Show the {title} pane (key {key})",
                partial(self.action_show_pane, pane),
            )
        yield SystemCommand("Help: every key", "Show the keys of every pane (?)", self.action_help)
        yield SystemCommand(
            "Lock the console", "Ask for the console password (Ctrl+L)", self.action_lock
        )
        for _key, pane, title in PANES:
            for binding in PANE_TYPES[pane].BINDINGS:
                if isinstance(binding, Binding) and binding.description and binding.show:
                    yield SystemCommand(
                        f"{title}: {binding.description}",
                        f"On the {title} pane (key {binding.key.split(',')[0]})",
                        partial(self.run_pane_action, pane, binding.action),
                    )

    async def run_pane_action(self, name: str, action: str) -> None:
        """Switch to a pane and run one of its actions there (for the command palette)."""
        self.action_show_pane(name)
        pane = self.visible_pane()
        if pane is not None:
            await pane.run_action(action)
