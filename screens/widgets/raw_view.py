"""A scrollable view of one text (the raw SIP message) that never re-lays out the screen.

A `Static` inside a scroll container takes its height from its content, so every new text
makes Textual lay out and repaint the whole pane. Following live traffic shows a new message
at every refresh, so this view renders the text into lines itself, sets only its own
scrollable size and draws just the lines on screen (Textual's line API).
"""

from __future__ import annotations

from rich.segment import Segment
from rich.style import Style
from rich.text import Text
from textual.geometry import Size
from textual.scroll_view import ScrollView
from textual.strip import Strip

from core.printable import printable


class RawView(ScrollView, can_focus=True):
    """Shows `text`, wrapped to the view's width; `show` replaces it and scrolls to the top."""

    # The vertical scrollbar's room is kept whether it shows or not, so the width the text is
    # wrapped to never changes under it; lines are wrapped, so there is nothing to scroll across.
    DEFAULT_CSS = """
    RawView { height: 1fr; overflow-x: hidden; scrollbar-gutter: stable; }
    """

    def __init__(self, **kwargs: object) -> None:
        super().__init__(**kwargs)  # type: ignore[arg-type]
        self.text = Text()
        self._lines: list[Strip] = []
        self._width = 0  # the width `_lines` were wrapped to
        # `rich_style` walks the DOM on every read; a line needs it twice, a frame ~20 times.
        self._style: Style | None = None

    @property
    def plain(self) -> str:
        """The text on show, without styles."""
        return self.text.plain

    def show(self, text: Text | str) -> None:
        self.text = Text(printable(text, one_line=False)) if isinstance(text, str) else text
        self._wrap(self.scrollable_content_region.width)
        self.scroll_to(0, 0, animate=False)
        self.refresh()

    def _wrap(self, width: int) -> None:
        self._width = width
        if width <= 0 or not self.text:
            self._lines = []
        else:
            console = self.app.console
            options = console.options.update_width(width)
            self._lines = [
                Strip(segments, Segment.get_line_length(segments))
                for segments in console.render_lines(self.text, options, pad=False)
            ]
        self.virtual_size = Size(width, len(self._lines))

    def on_resize(self) -> None:
        width = self.scrollable_content_region.width
        if width != self._width:
            self._wrap(width)
            self.refresh()

    def notify_style_update(self) -> None:
        self._style = None
        super().notify_style_update()

    def render_line(self, y: int) -> Strip:
        scroll_x, scroll_y = self.scroll_offset
        width = self.scrollable_content_region.width
        style = self._style
        if style is None:
            style = self._style = self.rich_style
        index = scroll_y + y
        if index >= len(self._lines):
            return Strip.blank(width, style)
        return self._lines[index].crop_extend(scroll_x, scroll_x + width, style).apply_style(style)
