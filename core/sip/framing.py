"""Cutting a TCP byte stream into SIP messages (RFC 3261 §18.3) and keep-alives (RFC 5626).

Sans-I/O: `feed(bytes)` returns what became complete. The buffer is bounded: a peer that
streams headers without ever ending them, or announces a huge body, gets a SipParseError
(413) and the transport closes the connection. A head that cannot be framed (no or
conflicting Content-Length) is a 400 for the same reason: the stream cannot be resynchronised.
"""

from __future__ import annotations

from dataclasses import dataclass

from core.sip.errors import SipParseError
from core.sip.fields import parse_content_length
from core.sip.parser import find_blank_line


@dataclass(frozen=True, slots=True)
class KeepAlive:
    """A double-CRLF ping (RFC 5626 §4.4.1): answer with a single CRLF pong."""


KEEPALIVE = KeepAlive()
_CONTENT_LENGTH_NAMES = (b"content-length", b"l")
_PING = b"\r\n\r\n"


class StreamFramer:
    """One per connection: bytes in, whole messages (bytes) and keep-alives out."""

    __slots__ = ("_buffer", "_searched", "max_buffer", "max_message")

    def __init__(self, max_message: int = 65_535, max_buffer: int = 131_072) -> None:
        self._buffer = bytearray()
        # How much of the buffer is known to hold no blank line yet: a peer sending a head a
        # byte at a time must not make every feed rescan it (quadratic work).
        self._searched = 0
        self.max_message = max_message
        self.max_buffer = max_buffer

    @property
    def pending(self) -> int:
        return len(self._buffer)

    def feed(self, data: bytes) -> list[bytes | KeepAlive]:
        """Add bytes; return the messages and keep-alives they completed, in order.

        A cursor walks the buffer and the consumed part is dropped once at the end, so a burst
        of thousands of pings or CRLFs costs linear time, not one memmove each.
        """
        buffer = self._buffer
        if len(buffer) + len(data) > self.max_buffer:
            raise SipParseError("Message Too Large", 413)
        buffer += data
        out: list[bytes | KeepAlive] = []
        length = len(buffer)
        pos = 0
        searched = self._searched
        while pos < length:
            byte = buffer[pos]
            if byte == 10:
                pos += 1  # a stray LF before a start line is ignored, like a CRLF (§7.5)
                continue
            if byte == 13:  # CR: a keep-alive ping, a pong, or padding before a message
                if buffer.startswith(_PING, pos):
                    pos += 4
                    out.append(KEEPALIVE)
                    continue
                if length - pos < 4 and _PING.startswith(buffer[pos:]):
                    break  # maybe the start of a ping: wait for more
                if buffer.startswith(b"\r\n", pos):
                    pos += 2  # a lone CRLF (a pong) carries nothing
                    continue
            found = find_blank_line(buffer, max(searched - 2, pos))
            if found is None:
                if length - pos > self.max_message:
                    raise SipParseError("Message Too Large", 413)
                searched = length
                break
            head_end, body_start = found
            end = body_start + _content_length(bytes(buffer[pos:head_end]))
            if end - pos > self.max_message:
                raise SipParseError("Message Too Large", 413)
            if length < end:
                searched = head_end  # the blank line is found again at once next time
                break
            out.append(bytes(buffer[pos:end]))
            pos = searched = end
        del buffer[:pos]
        self._searched = max(searched - pos, 0)
        return out


def _content_length(head: bytes) -> int:
    """Content-Length from raw header bytes; mandatory on a stream (§20.14).

    Folded lines are joined first (`Content-Length:` CRLF SP `42` is legal), and every
    Content-Length line must agree: framing on one of two different values would leave the
    stream out of step with the peer.
    """
    lengths: set[int] = set()
    lines = head.split(b"\n")
    for index in range(1, len(lines)):
        line = lines[index]
        name, colon, value = line.partition(b":")
        if not colon or name.rstrip(b" \t").lower() not in _CONTENT_LENGTH_NAMES:
            continue
        for continuation in lines[index + 1 :]:
            if not continuation.startswith((b" ", b"\t")):
                break
            value += b" " + continuation
        lengths.add(parse_content_length(value.decode("latin-1").strip()))
    if not lengths:
        raise SipParseError("Missing Content-Length")
    if len(lengths) > 1:
        raise SipParseError("Conflicting Content-Length")
    return lengths.pop()
