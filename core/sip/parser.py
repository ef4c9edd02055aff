"""Bytes → Request/Response (RFC 3261 §7, §18.3), and nothing but SipParseError on bad input.

The parser checks framing and syntax only: start line, header lines, Content-Length against
the body. Whether the headers a request needs are there and sensible is the route's sanity
step (core/security), so that a request missing a CSeq still gets a 400 that says so.
"""

from __future__ import annotations

import re

from core.sip.errors import SipParseError
from core.sip.fields import is_token, parse_content_length
from core.sip.headers import Headers, header_key
from core.sip.message import Message, Request, Response
from core.sip.uri import parse_uri

MAX_HEADER_LINES = 256
MAX_REQUEST_URI = 4_096
_HEADER_NAME = re.compile(r"^[A-Za-z0-9\-.!%*_+`'~]+$")
_STATUS_LINE = re.compile(r"^SIP/(\d+\.\d+) (\d{3}) ?(.*)$")


def split_head(data: bytes) -> tuple[bytes, bytes]:
    """Split at the blank line; tolerates bare LF line ends as many embedded stacks send."""
    end = data.find(b"\r\n\r\n")
    if end >= 0:
        return data[:end], data[end + 4 :]
    end = data.find(b"\n\n")
    if end >= 0:
        return data[:end], data[end + 2 :]
    raise SipParseError("Missing blank line after headers")


def parse_message(data: bytes, *, stream: bool = False) -> Request | Response:
    """Parse one whole message.

    `stream` is True for TCP, where the framer has already cut the body to Content-Length
    and Content-Length is mandatory (§18.3, §20.14).
    """
    # §7.5: implementations should ignore CRLFs before the start line.
    data = data.lstrip(b"\r\n")
    if not data:
        raise SipParseError("Empty message")
    head_bytes, body = split_head(data)
    head = head_bytes.decode("utf-8", "surrogateescape")
    lines = head.replace("\r\n", "\n").split("\n")
    if len(lines) > MAX_HEADER_LINES:
        raise SipParseError("Too many header lines")
    message = _start_line(lines[0])
    message.headers = _header_lines(lines[1:])
    _attach_body(message, body, stream)
    return message


def _start_line(line: str) -> Message:
    if line.startswith("SIP/"):
        match = _STATUS_LINE.match(line)
        if not match:
            raise SipParseError("Bad status line")
        if match.group(1) != "2.0":
            raise SipParseError("Version Not Supported", 505)
        status = int(match.group(2))
        if not 100 <= status <= 699:
            raise SipParseError("Bad status code")
        return Response(status, match.group(3))
    parts = line.split(" ")
    if len(parts) != 3:
        raise SipParseError("Bad request line")
    method, uri_text, version = parts
    if not is_token(method):
        raise SipParseError("Bad method")
    if version != "SIP/2.0":
        if version.upper().startswith("SIP/") and version.upper() != "SIP/2.0":
            raise SipParseError("Version Not Supported", 505)
        raise SipParseError("Bad SIP version")
    if len(uri_text) > MAX_REQUEST_URI:
        raise SipParseError("Request-URI Too Long", 414)
    return Request(method, parse_uri(uri_text))


def _header_lines(lines: list[str]) -> Headers:
    keyed: list[tuple[str, str, str]] = []
    for line in lines:
        if not line:
            continue
        if line[0] in " \t":
            # Line folding (§7.3.1): a continuation joins the previous value with one space.
            if not keyed:
                raise SipParseError("Continuation before first header")
            key, name, value = keyed[-1]
            keyed[-1] = (key, name, f"{value} {line.strip()}".strip())
            continue
        name, colon, value = line.partition(":")
        name = name.rstrip(" \t")
        if not colon or not name or not _HEADER_NAME.match(name):
            raise SipParseError("Malformed header line")
        keyed.append((header_key(name), name, value.strip(" \t")))
    return Headers._from_keyed(keyed)


def _attach_body(message: Message, body: bytes, stream: bool) -> None:
    length_values = message.headers.get_all("content-length")
    if not length_values:
        if stream and body:
            raise SipParseError("Missing Content-Length", 400, message)
        message.body = body
        return
    try:
        lengths = {parse_content_length(value) for value in length_values}
    except SipParseError as error:
        raise SipParseError(error.reason, 400, message) from None
    if len(lengths) != 1:
        raise SipParseError("Conflicting Content-Length", 400, message)
    length = lengths.pop()
    if length > len(body):
        raise SipParseError("Content-Length larger than body", 400, message)
    # §18.3: over UDP, bytes past Content-Length are discarded.
    message.body = body[:length]
