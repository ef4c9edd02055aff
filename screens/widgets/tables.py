"""A DataTable whose rows are keyed and updated by diff, never rebuilt per event.

Screens hand `sync` the rows they want, in order, at the console's cadence; the table adds
what is new, removes what is gone and rewrites only the cells that changed, so a busy pane
repaints a few cells a tick instead of the whole table (dolphie's way). Textual's
`DataTable.remove_row` re-indexes every row on each call, so when more than a few rows go at
once (a live list sliding under a flood) one clear-and-refill is far cheaper than the diff.

A column may have a fixed width: its cells never change the table's width, so an update
never forces a layout of the screen (a live list's columns should be fixed).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from rich.text import Text
from textual.widgets import DataTable

Cell = str | Text
# (key, label) for a column as wide as its widest cell, (key, label, width) for a fixed one.
ColumnSpec = tuple[str, str] | tuple[str, str, int]
# Removing more rows than this in one sync rebuilds the table instead (see the module doc).
REBUILD_AFTER_REMOVALS = 8


class KeyedTable(DataTable[Cell]):
    """A row-cursor DataTable with `sync(rows)`; `selected_key` is the row under the cursor."""

    DEFAULT_CSS = """
    KeyedTable { height: 1fr; }
    """

    def __init__(self, columns: Sequence[ColumnSpec], **kwargs: object) -> None:
        """`columns` in order; see `ColumnSpec`."""
        super().__init__(cursor_type="row", zebra_stripes=True, **kwargs)  # type: ignore[arg-type]
        self._columns: list[tuple[str, str, int | None]] = [
            (spec[0], spec[1], spec[2] if len(spec) > 2 else None)  # type: ignore[misc]
            for spec in columns
        ]
        self._column_keys = [key for key, _label, _width in self._columns]
        self._cells: dict[str, tuple[Cell, ...]] = {}

    def on_mount(self) -> None:
        for key, label, width in self._columns:
            self.add_column(label, key=key, width=width)

    @property
    def keys(self) -> list[str]:
        return list(self._cells)

    @property
    def selected_key(self) -> str | None:
        if not self._cells or not self.is_valid_row_index(self.cursor_row):
            return None
        return str(self.coordinate_to_cell_key(self.cursor_coordinate).row_key.value)

    def sync(self, rows: Mapping[str, Sequence[Cell]]) -> bool:
        """Make the table show `rows` (key → cells) in the given order; True if anything changed."""
        wanted = {key: tuple(cells) for key, cells in rows.items()}
        current = self._cells
        if list(wanted) == list(current) and all(wanted[k] == current[k] for k in wanted):
            return False
        gone = [key for key in current if key not in wanted]
        kept = [key for key in wanted if key in current]
        new = [key for key in wanted if key not in current]
        # Appending keeps the order only when every new row belongs after every kept one.
        in_order = [key for key in current if key in wanted] == kept and list(wanted) == kept + new
        if not in_order or len(gone) > REBUILD_AFTER_REMOVALS:
            self._rebuild(wanted)
            return True
        for key in gone:
            self.remove_row(key)
            del current[key]
        for key in kept:
            old, cells = current[key], wanted[key]
            if old != cells:
                for column, (before, after) in enumerate(zip(old, cells, strict=True)):
                    if before != after:
                        self.update_cell(key, self._column_keys[column], after)
                current[key] = cells
        for key in new:
            self.add_row(*wanted[key], key=key)
            current[key] = wanted[key]
        return True

    def _rebuild(self, wanted: dict[str, tuple[Cell, ...]]) -> None:
        selected = self.selected_key
        self.clear()
        self._cells = {}
        for key, cells in wanted.items():
            self.add_row(*cells, key=key)
            self._cells[key] = cells
        if selected is not None and selected in wanted:
            self.move_cursor(row=self.get_row_index(selected), animate=False)

    def select_key(self, key: str) -> None:
        if key in self._cells:
            self.move_cursor(row=self.get_row_index(key), animate=False)
