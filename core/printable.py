"""Wire text made safe to show: control characters as visible escapes.

Anything a packet carries (a User-Agent, a Contact, a whole raw message) may hold ESC and
other control bytes. Written to a terminal as they are, they move the cursor, recolour or
retitle it, or hide text (an old trick against people reading logs); Unicode's bidirectional
overrides reorder what the reader sees. Every place that shows wire text passes it through
`printable` first, and never treats it as Rich/Textual markup (a Text or `markup=False`).
"""

from __future__ import annotations

import re

# C0 controls but tab and newline, DEL, C1 controls, and the bidirectional formatting
# characters (embeddings, overrides and isolates: U+202A-U+202E, U+2066-U+2069).
_UNSAFE = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")
_UNSAFE_ON_ONE_LINE = re.compile("[\x00-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")


def _escape(match: re.Match[str]) -> str:
    code = ord(match.group())
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def printable(text: str, *, one_line: bool = True) -> str:
    """`text` with every unsafe character written as `\\x1b` / `\\u202e`. `one_line` False
    keeps newlines and tabs (a raw message shown as lines)."""
    pattern = _UNSAFE_ON_ONE_LINE if one_line else _UNSAFE
    if pattern.search(text) is None:
        return text  # the common case: one scan, no copy
    return pattern.sub(_escape, text)
