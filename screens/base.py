"""What every pane shares: the status strip on top, the footer of keys below, and the hook the
app calls at its refresh cadence.

A pane reads the core only through the app it runs in (`ConsoleHost`): the `Pbx` object,
its admin API and the models the app drains from the bus. It never opens a socket or a
database itself.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar, Protocol, cast

from textual.app import ComposeResult
from textual.screen import Screen
from textual.widgets import Footer

from screens.widgets.status_strip import StatusStrip

if TYPE_CHECKING:
    from core.admin import AdminApi
    from core.pbx import Pbx
    from screens.state import ConsoleState


class ConsoleHost(Protocol):
    """What a pane may use of the app that hosts it."""

    pbx: Pbx
    state: ConsoleState
    ready: bool  # the Pbx has started; before that the panes show nothing


class PbxScreen(Screen[None]):
    """A pane of the console: status strip, body, footer; `refresh_view` at each refresh."""

    PANE: ClassVar[str] = ""

    def compose(self) -> ComposeResult:
        yield StatusStrip(self.PANE)
        yield from self.compose_body()
        yield Footer(show_command_palette=False)

    def compose_body(self) -> ComposeResult:
        yield from ()

    @property
    def host(self) -> ConsoleHost:
        return cast("ConsoleHost", self.app)

    @property
    def pbx(self) -> Pbx:
        return self.host.pbx

    @property
    def admin(self) -> AdminApi:
        return self.host.pbx.admin

    @property
    def state(self) -> ConsoleState:
        return self.host.state

    def refresh_view(self) -> None:
        """Redraw from the models; called by the app at its cadence while the pane is shown."""

    def on_screen_resume(self) -> None:
        if self.host.ready:
            self.refresh_view()
