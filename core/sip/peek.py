"""A header's value read straight from a raw message, without the parser.

For the decisions taken before a message is parsed, or without parsing it at all: which
worker process owns a datagram (core/cluster/affinity.py) and the console's traffic list
(screens/dialogs.py). The usual spelling is found with one `bytes.find` (C speed); only a
message that writes the name otherwise (any case, white space before the colon, RFC 3261
§7.3.1; the compact form, §7.3.3) pays for a regular expression.
"""

from __future__ import annotations

import re

HEAD_LIMIT = 8_192  # a message with no blank line is read this far


def message_head(data: bytes) -> bytes:
    """The start line and headers: everything before the blank line."""
    end = data.find(b"\r\n\r\n")
    if end < 0:
        end = data.find(b"\n\n")
    return data[: end if end >= 0 else min(len(data), HEAD_LIMIT)]


class HeaderPeek:
    """Finds one header's first value in a message head."""

    __slots__ = ("_pattern", "_usual")

    def __init__(self, usual: str, names: str) -> None:
        """`usual`: the name as it is nearly always written ("Call-ID"); `names`: every
        spelling as a regex alternative ("call-id|i")."""
        self._usual = b"\n" + usual.encode() + b":"
        self._pattern = re.compile(
            rb"^(?:" + names.encode() + rb")[ \t]*:[ \t]*([^\r\n]*)", re.IGNORECASE | re.MULTILINE
        )

    def value(self, head: bytes) -> bytes | None:
        """The value, white space stripped; None when the header is missing."""
        start = head.find(self._usual)
        if start >= 0:
            start += len(self._usual)
            end = head.find(b"\n", start)
            value = head[start:] if end < 0 else head[start:end]
        else:
            # Not on the start line: a request URI may hold "i:" or "to:".
            match = self._pattern.search(head, head.find(b"\n") + 1 or len(head))
            if match is None:
                return None
            value = match.group(1)
        return value.strip()
