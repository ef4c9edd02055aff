"""The ladder (call flow) diagram of one dialog, sngrep-style, and the raw message view.

Each party (an address as the packets show it) gets a vertical lane; each message is one
line with an arrow from its sender's lane to its receiver's, labelled with the method or the
status. The lines are a `LineTable`'s rows, so only the visible ones are rendered and the
cursor picks the message whose raw text the pane shows.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

from rich.text import Text

from core.printable import printable
from screens.dialogs import Dialog, TrafficMessage, format_address
from screens.widgets.line_table import LineTable

TIME_WIDTH = 13  # "12:34:56.789 "
MIN_SPACING = 12
MAX_SPACING = 48


def _clock(at: float) -> str:
    return time.strftime("%H:%M:%S", time.localtime(at)) + f".{int((at % 1) * 1000):03d}"


def message_style(message: TrafficMessage) -> str:
    if not message.parsed:
        return "magenta"
    if message.is_request:
        return "bold cyan"
    status = message.status
    if status < 200:
        return "yellow"
    if status < 300:
        return "bold green"
    if status in (401, 407):
        return "dark_orange"
    return "bold red"


def parties_of(messages: Sequence[TrafficMessage]) -> list[str]:
    """Every address in order of first appearance, the sender of the first message leftmost."""
    parties: dict[str, None] = {}
    for message in messages:
        parties.setdefault(format_address(message.source))
        parties.setdefault(format_address(message.destination))
    return list(parties)


def lane_positions(party_count: int, width: int) -> list[int]:
    """Column of each lane inside a ladder `width` characters wide (may overflow if narrow)."""
    area = max(width - TIME_WIDTH, 0)
    if party_count <= 1:
        return [max(area // 2, 1)]
    # Lanes as far apart as the width allows (labels need room), then centred.
    spacing = (area - 4) // (party_count - 1)
    spacing = max(MIN_SPACING, min(MAX_SPACING, spacing))
    margin = max(2, (area - spacing * (party_count - 1)) // 2)
    return [margin + index * spacing for index in range(party_count)]


def ladder_header(parties: Sequence[str], positions: Sequence[int]) -> Text:
    """The party addresses centred over their lanes."""
    width = TIME_WIDTH + (positions[-1] if positions else 0) + 24
    line = [" "] * width
    spacing = positions[1] - positions[0] if len(positions) > 1 else 40
    for party, position in zip(parties, positions, strict=True):
        label = party if len(party) < spacing else party[: spacing - 2] + "…"
        start = max(0, TIME_WIDTH + position - len(label) // 2)
        line[start : start + len(label)] = label
    return Text("".join(line).rstrip(), style="bold")


def ladder_line(message: TrafficMessage, lanes: dict[str, int], positions: Sequence[int]) -> Text:
    """One message as an arrow between two lanes, with its time in front."""
    sender = lanes[format_address(message.source)]
    receiver = lanes[format_address(message.destination)]
    length = positions[-1] + 2
    chars = [" "] * length
    for position in positions:
        chars[position] = "│"
    text = Text(_clock(message.traffic.at) + " ", style="dim")
    style = message_style(message)
    label = message.label
    low, high = sorted((positions[sender], positions[receiver]))
    if low == high:
        # A message to itself (a loop): mark the lane and write the label beside it.
        tail = f"⟲ {label}"
        chars[low + 1 : low + 1 + len(tail)] = tail
        lane_part = Text("".join(chars))
        lane_part.stylize(style, low + 1, low + 1 + len(tail))
        return text + lane_part
    for index in range(low + 1, high):
        chars[index] = "─"
    if sender < receiver:
        chars[high - 1] = "►"
    else:
        chars[low + 1] = "◄"
    room = high - low - 5
    if room > 0:
        shown = label if len(label) <= room else label[: max(room - 1, 1)] + "…"
        shown = f" {shown} "
        start = low + 1 + (high - low - 1 - len(shown)) // 2
        chars[start : start + len(shown)] = shown
    lane_part = Text("".join(chars), style="dim")
    lane_part.stylize(style, low + 1, high)
    return text + lane_part


def raw_message(message: TrafficMessage) -> Text:
    """The message as sent, start line and header names highlighted, with where it went."""
    event = message.traffic
    arrow = f"{format_address(message.source)} → {format_address(message.destination)}"
    text = Text(
        f"{_clock(event.at)}  {event.transport.upper()}  {arrow}  {len(event.data)} bytes\n\n",
        style="dim",
    )
    # Control characters (ESC above all) shown as escapes, never sent to the terminal.
    body = printable(event.data.decode("utf-8", "replace").replace("\r\n", "\n"), one_line=False)
    head, blank, rest = body.partition("\n\n")
    lines = head.split("\n")
    text.append(lines[0] + "\n", style=message_style(message))
    for line in lines[1:]:
        name, colon, value = line.partition(":")
        if colon and name and name[0] not in " \t":
            text.append(name, style="bold")
            text.append(colon + value + "\n")
        else:
            text.append(line + "\n")
    if blank:
        text.append("\n" + rest)
    return text


class LadderTable(LineTable):
    """The ladder of the dialog on show; row keys are message indexes within the dialog."""

    def __init__(self, **kwargs: object) -> None:
        super().__init__([("flow", "", 40)], padding=0, zebra_stripes=False, **kwargs)
        self.dialog: Dialog | None = None
        self._shown: tuple[str, int, int] | None = None  # (call-id, revision, width)

    def message_at(self, row: int) -> TrafficMessage | None:
        dialog = self.dialog
        if dialog is None or not 0 <= row < len(dialog.messages):
            return None
        return dialog.messages[row]

    @property
    def selected_message(self) -> TrafficMessage | None:
        return self.message_at(self.cursor_row)

    def show(self, dialog: Dialog | None) -> bool:
        """Draw `dialog`, or nothing; redraws only when the dialog or the width changed."""
        width = max(self.scrollable_content_region.width - 1, 40)
        key = (dialog.call_id, dialog.revision, width) if dialog else None
        if key == self._shown:
            return False
        same_dialog = dialog is not None and self.dialog is dialog
        row = self.cursor_row if same_dialog else 0
        self.dialog = dialog
        self._shown = key
        if dialog is None:
            self.set_columns([("flow", "", width)])
            self.sync({})
            return True
        messages = list(dialog.messages)
        parties = parties_of(messages)
        positions = lane_positions(len(parties), width)
        lanes = {party: index for index, party in enumerate(parties)}
        header = ladder_header(parties, positions)
        lines = [ladder_line(message, lanes, positions) for message in messages]
        # A fixed width (the view's, unless a line is wider) keeps the list's size steady
        # from one dialog to the next, so following live traffic never re-lays out the pane.
        widest = max((line.cell_len for line in lines), default=0)
        self.set_columns([("flow", header, max(width, widest, header.cell_len))])
        self.sync({str(index): (line,) for index, line in enumerate(lines)})
        if messages:
            self.move_cursor(row=min(row, len(messages) - 1))
        return True

    def on_resize(self) -> None:
        # Textual also runs LineTable.on_resize (handlers run down the class tree).
        if self.dialog is not None:
            self.show(self.dialog)
