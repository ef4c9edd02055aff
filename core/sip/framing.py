"""Cutting a TCP byte stream into SIP messages (RFC 3261 §18.3) and keep-alives (RFC 5626).

Sans-I/O: `feed(bytes)` returns what became complete. The buffer is bounded: a peer that
streams headers without ever ending them, or announces a huge body, gets a SipParseError
(413) and the transport closes the connection.
"""

from __future__ import annotations

from dataclasses import dataclass

from core.sip.errors import SipParseError
from core.sip.fields import parse_content_length


@dataclass(frozen=True, slots=True)
class KeepAlive:
    """A double-CRLF ping (RFC 5626 §4.4.1): answer with a single CRLF pong."""


KEEPALIVE = KeepAlive()
_CONTENT_LENGTH_NAMES = (b"content-length", b"l")


class StreamFramer:
    __slots__ = ("_buffer", "max_buffer", "max_message")

    def __init__(self, max_message: int = 65_535, max_buffer: int = 131_072) -> None:
        self._buffer = bytearray()
        self.max_message = max_message
        self.max_buffer = max_buffer

    @property
    def pending(self) -> int:
        return len(self._buffer)

    def feed(self, data: bytes) -> list[bytes | KeepAlive]:
        if len(self._buffer) + len(data) > self.max_buffer:
            raise SipParseError("Message Too Large", 413)
        self._buffer += data
        out: list[bytes | KeepAlive] = []
        while self._buffer:
            if self._buffer.startswith(b"\r\n\r\n"):
                del self._buffer[:4]
                out.append(KEEPALIVE)
                continue
            if self._buffer.startswith(b"\r\n"):
                # A lone CRLF (a pong, or padding before a start line) carries nothing.
                if len(self._buffer) < 4 and b"\r\n\r\n".startswith(bytes(self._buffer)):
                    break
                del self._buffer[:2]
                continue
            end = self._buffer.find(b"\r\n\r\n")
            if end < 0:
                if len(self._buffer) > self.max_message:
                    raise SipParseError("Message Too Large", 413)
                break
            length = _content_length(bytes(self._buffer[:end]))
            total = end + 4 + length
            if total > self.max_message:
                raise SipParseError("Message Too Large", 413)
            if len(self._buffer) < total:
                break
            out.append(bytes(self._buffer[:total]))
            del self._buffer[:total]
        return out


def _content_length(head: bytes) -> int:
    """Content-Length from raw header bytes; mandatory on a stream (§20.14)."""
    for line in head.split(b"\r\n")[1:]:
        name, colon, value = line.partition(b":")
        if colon and name.strip().lower() in _CONTENT_LENGTH_NAMES:
            return parse_content_length(value.decode("latin-1"))
    raise SipParseError("Missing Content-Length")
