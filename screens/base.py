"""What every pane shares: its name, the widget that takes the focus when it is first shown,
and the hook the app calls at its refresh cadence.

A pane is a container inside the one `ConsoleScreen` (screens/console.py), not a screen of its
own: switching panes then only swaps which container is displayed, while the status strip and
the key bar stay put (see that module for what a screen switch cost).

A pane reads the core only through the app it runs in (`ConsoleHost`): its `CoreView`
(core/control/view.py: the same whether the core runs in this process or in a service the
console is attached to), the admin calls and the models the app drains from the bus. It never
opens a socket or a database itself.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, ClassVar, Protocol, cast

from rich.text import Text
from textual.containers import Vertical
from textual.widget import Widget
from textual.widgets import Input, Label

if TYPE_CHECKING:
    from core.control.view import AdminCalls, CoreView
    from screens.state import ConsoleState


class ConsoleHost(Protocol):
    """What a pane may use of the app that hosts it."""

    core: CoreView
    state: ConsoleState
    ready: bool  # the core has started (or is attached); before that the panes show nothing


class PbxPane(Vertical):
    """A pane of the console; `refresh_view` at each refresh while it is on show.

    Its key bindings work while the focus is inside it, which the console screen sees to:
    showing a pane focuses the widget it last had focused, the first time `FIRST_FOCUS`.
    """

    PANE: ClassVar[str] = ""  # the name the number keys and the command palette use
    FIRST_FOCUS: ClassVar[str] = ""  # selector of the widget focused when first shown

    def __init__(self) -> None:
        super().__init__(id=f"pane-{self.PANE}")
        self._label_texts: dict[str, str | Text] = {}  # label id → the text it shows

    def show_text(self, label_id: str, text: str | Text) -> None:
        """Show `text` in the label `#label_id`, if it is not what the label shows already.

        Panes set their titles and counters at every refresh, and each `Label.update` lays out
        the whole screen again; most refreshes change none of them.
        """
        if self._label_texts.get(label_id) != text:
            self._label_texts[label_id] = text
            self.query_one(f"#{label_id}", Label).update(text)

    def first_focus(self) -> Widget | None:
        return self.query_one(self.FIRST_FOCUS) if self.FIRST_FOCUS else None

    @property
    def host(self) -> ConsoleHost:
        return cast("ConsoleHost", self.app)

    @property
    def core(self) -> CoreView:
        return self.host.core

    @property
    def admin(self) -> AdminCalls:
        return self.host.core.admin

    @property
    def state(self) -> ConsoleState:
        return self.host.state

    def refresh_view(self) -> None:
        """Redraw from the models; called by the app at its cadence while the pane is shown."""


class StoreRowsPane(PbxPane):
    """A pane of rows the admin API reads from the database. They are read again every
    `RELOAD_SECONDS` while the pane is shown (changes made with the CLI show up), at once
    after a change made here, and on `r` (`action_reload`)."""

    RELOAD_SECONDS: ClassVar[float] = 5.0

    def __init__(self) -> None:
        super().__init__()
        self._loaded_at = 0.0

    def reload_rows(self, *, when_stale: bool = False) -> None:
        """Read the rows in a worker, one read at a time; with `when_stale`, only when the
        last read is `RELOAD_SECONDS` old."""
        if when_stale and time.monotonic() - self._loaded_at < self.RELOAD_SECONDS:
            return
        self._loaded_at = time.monotonic()
        self.run_worker(self.load(), exclusive=True, group=f"load-{self.PANE}")

    async def load(self) -> None:
        """Read the rows now and show them."""
        self._loaded_at = time.monotonic()
        await self.load_rows()

    async def load_rows(self) -> None:
        raise NotImplementedError

    async def action_reload(self) -> None:
        await self.load()


class FilteredPane(PbxPane):
    """A pane with a filter box over a list: `/` (`action_filter`) goes to the box, Enter in
    it back to the list, `action_unfilter` empties the box and goes back to the list too."""

    FILTER_INPUT: ClassVar[str] = ""  # the id of the filter `Input`
    FILTERED: ClassVar[str] = ""  # selector of the list the filter narrows

    def on_input_submitted(self, event: Input.Submitted) -> None:
        if event.input.id == self.FILTER_INPUT:
            self.query_one(self.FILTERED).focus()

    def action_filter(self) -> None:
        self.query_one(f"#{self.FILTER_INPUT}", Input).focus()

    def action_unfilter(self) -> None:
        self.query_one(f"#{self.FILTER_INPUT}", Input).value = ""
        self.query_one(self.FILTERED).focus()
