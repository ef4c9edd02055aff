"""The line of keys at the bottom of the console: what each key does where the focus is now.

It replaces Textual's `Footer`, which mounts one widget per key and remounts them all whenever
the bindings change, i.e. on every pane switch and every focus change: measured at 120x36, that
was half of the ~150 ms a pane switch took (new widgets styled, laid out and rendered one by
one). This bar is one widget drawing one line of text; a change of bindings only marks it
stale, and the next frame renders the line again. A click on a key presses that key, as the
Footer did.
"""

from __future__ import annotations

from typing import ClassVar, NamedTuple

from rich.style import Style
from rich.text import Text
from textual import events
from textual.screen import Screen
from textual.widget import Widget


class ShownKey(NamedTuple):
    """A key as the bar shows it, and the cells it takes."""

    key: str  # the key to simulate on a click (the first of the binding's keys)
    label: str  # the key as shown (`App.get_key_display`)
    description: str
    enabled: bool


class KeyBar(Widget):
    """The bindings of the screen's focus chain that have `show=True`, one entry per action."""

    COMPONENT_CLASSES: ClassVar[set[str]] = {
        "key-bar--key",
        "key-bar--description",
        "key-bar--disabled",
    }
    DEFAULT_CSS = """
    KeyBar {
        dock: bottom;
        height: 1;
        width: 1fr;
        color: $footer-foreground;
        background: $footer-background;
        & > .key-bar--key {
            color: $footer-key-foreground;
            background: $footer-key-background;
            text-style: bold;
        }
        & > .key-bar--description {
            color: $footer-description-foreground;
            background: $footer-description-background;
        }
        & > .key-bar--disabled { text-style: dim; }
    }
    """

    def __init__(self, **kwargs: object) -> None:
        super().__init__(**kwargs)  # type: ignore[arg-type]
        self._keys: list[ShownKey] | None = None  # None: to be read from the bindings
        self._spans: list[tuple[int, int, ShownKey]] = []  # (first cell, end cell, key)
        self._styles: dict[str, Style] = {}  # component class → style, until restyled

    def on_mount(self) -> None:
        self.screen.bindings_updated_signal.subscribe(self, self._bindings_changed)

    def on_unmount(self) -> None:
        self.screen.bindings_updated_signal.unsubscribe(self)

    def _bindings_changed(self, screen: Screen[object]) -> None:
        # Published several times per focus change: only mark the line stale, render once.
        if screen is self.screen:
            self._keys = None
            self.refresh()

    @property
    def keys(self) -> list[ShownKey]:
        """The keys shown, in the order of the bindings."""
        if self._keys is None:
            self._keys = self._read_keys()
        return self._keys

    def _read_keys(self) -> list[ShownKey]:
        shown: dict[str, ShownKey] = {}
        for active in self.screen.active_bindings.values():
            binding = active.binding
            # "u,delete" is one binding under two keys: show it once, under its first key.
            if binding.show and binding.action not in shown:
                label = self.app.get_key_display(binding)
                shown[binding.action] = ShownKey(
                    binding.key, label, binding.description, active.enabled
                )
        return list(shown.values())

    def notify_style_update(self) -> None:
        self._styles = {}
        super().notify_style_update()

    def _style(self, component: str) -> Style:
        style = self._styles.get(component)
        if style is None:
            style = self._styles[component] = self.get_component_rich_style(component)
        return style

    def render(self) -> Text:
        text = Text(no_wrap=True, overflow="crop", end="")
        spans: list[tuple[int, int, ShownKey]] = []
        for shown in self.keys:
            start = text.cell_len
            dim = Style() if shown.enabled else self._style("key-bar--disabled")
            text.append(f" {shown.label} ", self._style("key-bar--key") + dim)
            if shown.description:
                text.append(f"{shown.description} ", self._style("key-bar--description") + dim)
            spans.append((start, text.cell_len, shown))
        self._spans = spans
        return text

    def on_click(self, event: events.Click) -> None:
        for start, end, shown in self._spans:
            if start <= event.x < end:
                event.stop()
                if shown.enabled:
                    self.app.simulate_key(shown.key)
                else:
                    self.app.bell()
                return
