"""The console's one screen: the status strip, the six panes in a `ContentSwitcher`, the key bar.

Why not six screens (Textual modes): measured in-process at 120x36 (a key pressed until a
frame showing the new pane is rendered), a switch between screens takes ~120-150 ms median
idle and ~170 ms under 300 msg/s: Textual restyles the whole screen it resumes, which also
dropped every DataTable's render cache; each screen's own `Footer` was remounted key by key
(half of the cost); the whole terminal was repainted. Here all panes stay mounted and styled;
a switch hides one container and shows another, moves the focus to where it last was on that
pane, redraws the pane from the models once, and repaints the pane's area, the navigation
line and the key bar (screens/widgets/key_bar.py, which replaces the Footer): ~35 ms.

Each pane keeps its sibling `.tcss`; this screen loads them all when the app pushes it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar, cast

from textual.app import ComposeResult
from textual.screen import Screen
from textual.widget import Widget
from textual.widgets import ContentSwitcher

from screens.base import PbxPane
from screens.calls import CallsPane
from screens.carriers import CarriersPane
from screens.registrations import RegistrationsPane
from screens.security import SecurityPane
from screens.traffic import TrafficPane
from screens.users import UsersPane
from screens.widgets.key_bar import KeyBar
from screens.widgets.status_strip import StatusStrip

if TYPE_CHECKING:
    from screens.base import ConsoleHost

# Pane name → its class, in the order of the number keys (`PANES`).
PANE_TYPES: dict[str, type[PbxPane]] = {
    pane.PANE: pane
    for pane in (TrafficPane, RegistrationsPane, SecurityPane, UsersPane, CarriersPane, CallsPane)
}
FIRST_PANE = "traffic"


class ConsoleScreen(Screen[None]):
    """Shows one pane at a time; `show_pane(name)` switches, `pane` is the one on show."""

    CSS_PATH: ClassVar = ["console.tcss", *(f"{name}.tcss" for name in PANE_TYPES)]
    # The focus goes where `show_pane` puts it, never to the first focusable widget.
    AUTO_FOCUS = ""

    def __init__(self, mode: str = "") -> None:
        super().__init__()
        self.panes: dict[str, PbxPane] = {name: pane() for name, pane in PANE_TYPES.items()}
        self.current_pane = FIRST_PANE
        self.status_strip = StatusStrip(FIRST_PANE, mode)
        self.switcher = ContentSwitcher(
            *self.panes.values(), initial=f"pane-{FIRST_PANE}", id="panes"
        )
        self._focus_of: dict[str, Widget] = {}  # pane name → its widget last focused

    def compose(self) -> ComposeResult:
        yield self.status_strip
        yield self.switcher
        yield KeyBar(id="keys")

    @property
    def pane(self) -> PbxPane:
        return self.panes[self.current_pane]

    def on_mount(self) -> None:
        self._focus_pane()

    def show_pane(self, name: str) -> None:
        """Put pane `name` on show, with fresh data, and the focus where it was on that pane."""
        if name == self.current_pane:
            return
        focused = self.focused
        if focused is not None and self.pane in focused.ancestors:
            self._focus_of[self.current_pane] = focused
        self.current_pane = name
        with self.app.batch_update():
            self.switcher.current = f"pane-{name}"
            self.status_strip.show_pane(name)
            self._focus_pane()
            if cast("ConsoleHost", self.app).ready:
                self.pane.refresh_view()

    def _focus_pane(self) -> None:
        """Focus inside the pane on show: its bindings only work while the focus is there."""
        pane = self.pane
        focused = self.focused
        if focused is not None and pane in focused.ancestors:
            return
        target = self._focus_of.get(self.current_pane)
        if target is None or not target.is_attached or target.disabled:
            target = pane.first_focus()
        if target is not None:
            self.set_focus(target, scroll_visible=False)

    def on_screen_resume(self) -> None:
        """Back from a form, the help or the lock: the pane shows what changed meanwhile."""
        self._focus_pane()
        if cast("ConsoleHost", self.app).ready:
            self.pane.refresh_view()
