"""A keyed list of fixed-width rows that draws only the lines on screen (Textual's line API).

Textual's DataTable renders each visible cell on its own (about half a millisecond a cell)
and re-indexes every row when one is removed, so a live list that slides under a flood costs
the shared event loop tens of milliseconds a draw. This list keeps its rows as a plain ordered
mapping, renders a row into one `Strip` the first time it is on screen (and again only when
its cells change) and, per frame, just crops and styles the strips of the visible lines. Its
columns are fixed, so an update never re-lays out the screen; only its scrollable size
changes.

The cursor follows its row's key: rows removed above it or added below it leave it on the
same entry. Up/down/home/end/page keys move it, a click selects, a click on the row already
under the cursor (Enter is the screen's) asks for the row to be opened.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import ClassVar

from rich.segment import Segment
from rich.style import Style
from rich.text import Text
from textual import events
from textual.binding import Binding, BindingType
from textual.geometry import Size
from textual.message import Message
from textual.scroll_view import ScrollView
from textual.strip import Strip

from core.printable import printable

Cell = str | Text
# (key, label, width): every column is as wide as it says, cells are cut to fit.
Column = tuple[str, Cell, int]


class LineTable(ScrollView, can_focus=True):
    """Rows keyed by string with a row cursor; `sync(rows)` sets them, `selected_key` reads it."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("up", "cursor_up", "Up", show=False),
        Binding("down", "cursor_down", "Down", show=False),
        Binding("home", "cursor_home", "First", show=False),
        Binding("end", "cursor_end", "Last", show=False),
        Binding("pageup", "page_up", "Page up", show=False),
        Binding("pagedown", "page_down", "Page down", show=False),
    ]
    COMPONENT_CLASSES: ClassVar[set[str]] = {
        "line-table--header",
        "line-table--even-row",
        "line-table--cursor",
    }
    DEFAULT_CSS = """
    LineTable {
        height: 1fr;
        background: $surface;
        color: $foreground;
        &:focus {
            background-tint: $foreground 5%;
            & > .line-table--cursor {
                background: $block-cursor-background;
                color: $block-cursor-foreground;
                text-style: $block-cursor-text-style;
            }
        }
        &:dark > .line-table--even-row { background: $surface-darken-1 40%; }
        & > .line-table--header { text-style: bold; background: $panel; color: $foreground; }
        & > .line-table--even-row { background: $surface-lighten-1 50%; }
        & > .line-table--cursor {
            background: $block-cursor-blurred-background;
            color: $block-cursor-blurred-foreground;
            text-style: $block-cursor-blurred-text-style;
        }
    }
    """

    class _RowMessage(Message):
        """About row `key` of `table`; `control` is the table, for `@on` selectors."""

        def __init__(self, table: LineTable, key: str | None) -> None:
            super().__init__()
            self.table = table
            self.key = key

        @property
        def control(self) -> LineTable:
            return self.table

    class Highlighted(_RowMessage):
        """The cursor is on a different row (`key`), or on none."""

    class Selected(_RowMessage):
        """The row under the cursor (`key`) was clicked again: open it."""

    def __init__(
        self,
        columns: Sequence[Column],
        *,
        padding: int = 1,
        zebra_stripes: bool = True,
        cursor_recolours: bool = False,
        **kwargs: object,
    ) -> None:
        """`padding`: blank cells either side of each column (DataTable draws one).
        `cursor_recolours`: the cursor's colours win over the cells' own, as in a DataTable;
        otherwise coloured cells (a dialog's state, a ladder's arrows) keep theirs."""
        super().__init__(**kwargs)  # type: ignore[arg-type]
        self.padding = padding
        self.zebra_stripes = zebra_stripes
        self.cursor_recolours = cursor_recolours
        self.columns: list[Column] = []
        self._rows: dict[str, tuple[Cell, ...]] = {}
        self._order: list[str] = []
        self._strips: dict[str, tuple[tuple[Cell, ...], Strip]] = {}  # key → (cells, strip)
        self._header: Strip | None = None
        self._cursor = 0
        # Component class ("" for the widget's own) → rich style, until restyled: `rich_style`
        # walks the DOM on every read, and a frame would read it once a line.
        self._styles: dict[str, Style] = {}
        self._highlighted: str | None = None  # the key the last Highlighted message named
        self._line_width = 0
        self.set_columns(columns)

    # -- the model -------------------------------------------------------------------------
    def set_columns(self, columns: Sequence[Column]) -> None:
        """Replace the columns (labels or widths); every row is drawn afresh."""
        columns = list(columns)
        if columns == self.columns:
            return
        self.columns = columns
        self._header = None
        self._strips = {}
        self._line_width = sum(width + 2 * self.padding for _key, _label, width in columns)
        if self.is_mounted:
            self.virtual_size = Size(self._line_width, len(self._order) + 1)
            self.refresh()

    @property
    def keys(self) -> list[str]:
        return list(self._order)

    @property
    def row_count(self) -> int:
        return len(self._order)

    @property
    def cursor_row(self) -> int:
        return self._cursor

    @property
    def selected_key(self) -> str | None:
        return self._order[self._cursor] if self._order else None

    def cells(self, key: str) -> tuple[Cell, ...]:
        return self._rows[key]

    def sync(self, rows: Mapping[str, Sequence[Cell]]) -> bool:
        """Show `rows` (key → cells) in the given order; True if anything changed.

        The cursor stays on its key while that row is listed, else on the same index.
        """
        wanted = {key: tuple(cells) for key, cells in rows.items()}
        if wanted == self._rows and list(wanted) == self._order:
            return False
        selected = self.selected_key
        self._rows = wanted
        self._order = list(wanted)
        if len(self._strips) > 2 * len(wanted):
            self._strips = {key: value for key, value in self._strips.items() if key in wanted}
        if selected in wanted:
            self._cursor = self._order.index(selected)  # type: ignore[arg-type]
        else:
            self._cursor = max(0, min(self._cursor, len(self._order) - 1))
        self.virtual_size = Size(self._line_width, len(self._order) + 1)
        self._scroll_to_cursor()
        self.refresh()
        self._announce()
        return True

    def move_cursor(self, *, row: int, animate: bool = False) -> None:
        """Put the cursor on `row` (clamped to the list)."""
        del animate  # the list jumps; kept for DataTable's call shape
        if not self._order:
            return
        row = max(0, min(row, len(self._order) - 1))
        if row != self._cursor:
            self._cursor = row
            self.refresh()
        self._scroll_to_cursor()
        self._announce()

    def select_key(self, key: str) -> None:
        if key in self._rows:
            self.move_cursor(row=self._order.index(key))

    def _announce(self) -> None:
        key = self.selected_key
        if key != self._highlighted:
            self._highlighted = key
            self.post_message(self.Highlighted(self, key))

    def _page(self) -> int:
        return max(self.scrollable_content_region.height - 1, 1)  # less the header line

    def _scroll_to_cursor(self) -> None:
        top = round(self.scroll_offset.y)
        page = self._page()
        if self._cursor < top:
            self.scroll_to(y=self._cursor, animate=False, immediate=True)
        elif self._cursor >= top + page:
            self.scroll_to(y=self._cursor - page + 1, animate=False, immediate=True)

    # -- keys and mouse --------------------------------------------------------------------
    def action_cursor_up(self) -> None:
        self.move_cursor(row=self._cursor - 1)

    def action_cursor_down(self) -> None:
        self.move_cursor(row=self._cursor + 1)

    def action_cursor_home(self) -> None:
        self.move_cursor(row=0)

    def action_cursor_end(self) -> None:
        self.move_cursor(row=len(self._order) - 1)

    def action_page_up(self) -> None:
        self.move_cursor(row=self._cursor - self._page())

    def action_page_down(self) -> None:
        self.move_cursor(row=self._cursor + self._page())

    def on_click(self, event: events.Click) -> None:
        offset = event.get_content_offset(self)
        if offset is None or offset.y < 1:
            return  # the header, or the border
        row = round(self.scroll_offset.y) + offset.y - 1
        if not 0 <= row < len(self._order):
            return
        event.stop()
        if row == self._cursor:
            self.post_message(self.Selected(self, self._order[row]))
        else:
            self.move_cursor(row=row)

    def on_resize(self) -> None:
        self._scroll_to_cursor()

    # -- drawing ---------------------------------------------------------------------------
    def notify_style_update(self) -> None:
        self._styles = {}
        self._header = None
        super().notify_style_update()

    def _style(self, component: str) -> Style:
        style = self._styles.get(component)
        if style is None:
            style = self.rich_style
            if component:
                style += self.get_component_rich_style(component)
            self._styles[component] = style
        return style

    def _line(self, cells: Sequence[Cell], style: Style | None = None) -> Strip:
        text = Text(no_wrap=True, overflow="crop", end="", style=style or "")
        pad = " " * self.padding
        for cell, (_key, _label, width) in zip(cells, self.columns, strict=False):
            part = _safe(cell)
            part.truncate(width, overflow="ellipsis", pad=True)
            text.append(pad)
            text.append_text(part)
            text.append(pad)
        segments = list(text.render(self.app.console))
        return Strip(segments, Segment.get_line_length(segments))

    def _row_strip(self, key: str) -> Strip:
        cells = self._rows[key]
        cached = self._strips.get(key)
        if cached is None or cached[0] != cells:
            cached = (cells, self._line(cells))
            self._strips[key] = cached
        return cached[1]

    def render_line(self, y: int) -> Strip:
        scroll_x, scroll_y = self.scroll_offset
        width = self.scrollable_content_region.width
        base = self._style("")
        if y == 0:
            if self._header is None:
                self._header = self._line([label for _key, label, _width in self.columns])
            style = self._style("line-table--header")
            return self._header.crop_extend(scroll_x, scroll_x + width, None).apply_style(style)
        index = round(scroll_y) + y - 1
        if index >= len(self._order):
            return Strip.blank(width, base)
        strip = self._row_strip(self._order[index]).crop_extend(scroll_x, scroll_x + width, None)
        if index == self._cursor:
            cursor = self._style("line-table--cursor")
            if self.cursor_recolours:
                return Strip(Segment.apply_style(strip, cursor, cursor), strip.cell_length)
            return strip.apply_style(cursor)
        if index % 2 and self.zebra_stripes:
            return strip.apply_style(self._style("line-table--even-row"))
        return strip.apply_style(base)


def _safe(cell: Cell) -> Text:
    """A cell as Text (never parsed as markup), control characters shown as escapes: cells
    carry wire text (users, User-Agents, Contacts) that must not reach the terminal raw."""
    if isinstance(cell, Text):
        plain = cell.plain
        safe = printable(plain)
        if safe is plain:
            return cell.copy()
        return Text(safe, style=cell.style)
    return Text(printable(cell))
