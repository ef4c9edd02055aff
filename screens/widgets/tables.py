"""The table of every pane but Traffic's list: keyed rows, updated by diff at the cadence.

Panes hand `sync` the rows they want, in order, at the console's cadence (dolphie's way).
It is a `LineTable` (screens/widgets/line_table.py), which renders a row into one strip when
its cells change and per frame only crops and styles the strips on screen. Not a Textual
DataTable, which throws away every rendered cell whenever any cell changes or the
table gains or loses the focus (its caches are keyed by an update count and cleared on each
restyle), then renders each visible cell again at ~0.5 ms a cell: with a feed of a hundred
rows, showing the Security pane cost ~60 ms more than with this table, and a countdown column
re-rendered the whole visible table every second.

A column is as wide as its widest cell so far (it only grows; a wider column changes the
table's scrollable width, never the screen's layout), or fixed when the spec gives a width.
Enter, or a click on the row under the cursor, posts `Selected` for that row.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import ClassVar

from rich.cells import cell_len
from rich.text import Text
from textual.binding import Binding, BindingType

from screens.widgets.line_table import Cell, Column, LineTable

# (key, label) for a column as wide as its widest cell, (key, label, width) for a fixed one.
ColumnSpec = tuple[str, str] | tuple[str, str, int]


def _width(cell: Cell) -> int:
    return cell.cell_len if isinstance(cell, Text) else cell_len(cell)


class KeyedTable(LineTable):
    """A row-cursor table with `sync(rows)`; `selected_key` is the row under the cursor."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("enter", "select_row", "Open", show=False),
    ]

    def __init__(self, columns: Sequence[ColumnSpec], **kwargs: object) -> None:
        """`columns` in order; see `ColumnSpec`."""
        self._fixed = [len(spec) > 2 for spec in columns]
        super().__init__(
            [
                (spec[0], spec[1], spec[2] if len(spec) > 2 else cell_len(spec[1]))  # type: ignore[misc]
                for spec in columns
            ],
            cursor_recolours=True,
            **kwargs,
        )

    def sync(self, rows: Mapping[str, Sequence[Cell]]) -> bool:
        """Make the table show `rows` (key → cells) in the given order; True if anything changed."""
        wanted = {key: tuple(cells) for key, cells in rows.items()}
        self._widen(wanted)
        return super().sync(wanted)

    def _widen(self, rows: Mapping[str, tuple[Cell, ...]]) -> None:
        """Grow the auto-width columns to the widest new or changed cell."""
        widths = [width for _key, _label, width in self.columns]
        shown = self._rows
        for key, cells in rows.items():
            before = shown.get(key)
            if before == cells:
                continue
            for index, cell in enumerate(cells):
                if self._fixed[index] or (before is not None and before[index] == cell):
                    continue
                width = _width(cell)
                if width > widths[index]:
                    widths[index] = width
        columns: list[Column] = [
            (key, label, width)
            for (key, label, _old), width in zip(self.columns, widths, strict=True)
        ]
        self.set_columns(columns)

    def action_select_row(self) -> None:
        key = self.selected_key
        if key is not None:
            self.post_message(self.Selected(self, key))
