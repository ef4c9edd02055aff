"""Bytes → Request/Response (RFC 3261 §7, §18.3), and nothing but SipParseError on bad input.

The parser checks framing and syntax only: start line, header lines, Content-Length against
the body. Whether the headers a request needs are there and sensible is the route's sanity
step (core/security), so that a request missing a CSeq still gets a 400 that says so.
"""

from __future__ import annotations

import re
from typing import Final

from core.sip.errors import SipParseError
from core.sip.fields import is_token, parse_content_length
from core.sip.headers import Headers, column_headers, header_key
from core.sip.message import Message, Request, Response
from core.sip.uri import OtherUri, Uri, parse_uri

# Final: compiled, these are C constants rather than a module-dict look-up on every use.
MAX_HEADER_LINES: Final = 256
MAX_REQUEST_URI: Final = 4_096
_HEADER_NAME: Final = re.compile(r"[A-Za-z0-9\-.!%*_+`'~]+")
# SIP-Version is case-insensitive on receipt (§7.1); the status code is exactly three digits.
_STATUS_LINE: Final = re.compile(
    r"SIP/([0-9]+\.[0-9]+) ([0-9]{3})(?: (.*))?", re.IGNORECASE | re.DOTALL
)
SIP_VERSION: Final = "SIP/2.0"


def find_blank_line(data: bytes | bytearray, start: int = 0) -> tuple[int, int] | None:
    """Where the head ends and the body starts, or None while no blank line has arrived.

    The blank line is the first `\n` followed by `\n` or `\r\n`, whichever comes first, so
    bare-LF heads (as many embedded stacks send) work, and a bare-LF message whose body holds
    a CRLF pair is still cut in the right place. The head end excludes the final line's LF.
    """
    end = data.find(b"\n\r\n", start)
    bare = data.find(b"\n\n", start, end + 1 if end >= 0 else len(data))
    if bare >= 0:
        return bare, bare + 2
    if end >= 0:
        return end, end + 3
    return None


def split_head(data: bytes) -> tuple[bytes, bytes]:
    """Split at the first blank line into the head (without its last line end) and the body."""
    found = find_blank_line(data)
    if found is None:
        raise SipParseError("Missing blank line after headers")
    head_end, body_start = found
    if head_end and data[head_end - 1] == 13:  # the CR of the head's last CRLF
        head_end -= 1
    return data[:head_end], data[body_start:]


def parse_message(
    data: bytes | bytearray | memoryview, *, stream: bool = False
) -> Request | Response:
    """Parse one whole message.

    `stream` is True for TCP, where the framer has already cut the body to Content-Length
    and Content-Length is mandatory (§18.3, §20.14).

    The head is decoded with surrogateescape: bytes that are not UTF-8 (old phones send
    Latin-1 display names) become lone surrogates that encode back to exactly the bytes sent,
    so a forwarded header and a digest over a username stay byte-exact. Code that stores or
    displays header text must encode with surrogateescape or escape such characters.
    """
    raw = data if isinstance(data, bytes) else bytes(data)
    # §7.5: implementations should ignore CRLFs before the start line.
    if raw[:1] in (b"\r", b"\n"):
        raw = raw.lstrip(b"\r\n")
    if not raw:
        raise SipParseError("Empty message")
    found = _crlf_head(raw)
    if found is not None:
        lines, body = found
    else:
        lines, body = _any_head(raw)
    if len(lines) > MAX_HEADER_LINES:
        raise SipParseError("Too many header lines")
    message, uri_error = _start_line(lines)
    if uri_error is not None:
        # The headers parsed, so the request can still be answered (sanity's 400).
        raise SipParseError(uri_error.reason, uri_error.status, message)
    _attach_body(message, body, stream)
    return message


def _crlf_head(raw: bytes) -> tuple[list[str], bytes] | None:
    """The head's lines and the body of a message whose every line ends in CRLF, as nearly
    all do, in one cut and one split; None for anything else (a bare LF or CR in the head),
    which `_any_head` then reads.

    Same result as `_any_head`: when no line split at CRLF up to the first CRLFCRLF holds
    a CR or LF, every LF before it is part of a CRLF, so no earlier `\n\n` or `\n\r\n`
    exists (its LF would follow a CR, making an earlier CRLFCRLF), and that CRLFCRLF is
    where `find_blank_line` cuts too.

    The whole datagram is decoded and cut as text: compiled, str.find is a native call where
    bytes.partition (and bytes.find) is a generic method call costing more than the decoding
    of a body. Decoding with surrogateescape maps every byte of the head to the same
    bytes again, so the body starts where the encoded head ends; when no byte was part of a
    multi-byte character (the text as long as the bytes, as a desk phone's messages are),
    that is at the same index.
    """
    text = raw.decode("utf-8", "surrogateescape")
    end = text.find("\r\n\r\n")  # not partition: the rest (the body) need not be copied
    if end < 0:
        return None
    head = text[:end]
    lines = head.split("\r\n")
    joined = "".join(lines)  # one copy searched twice costs less than two searches a line
    if "\n" in joined or "\r" in joined:
        return None
    if len(text) == len(raw):
        head_length = len(head)
    else:
        head_length = len(head.encode("utf-8", "surrogateescape"))
    return lines, raw[head_length + 4 :]


def _any_head(raw: bytes) -> tuple[list[str], bytes]:
    """The head's lines and the body, the head ending at the first blank line, with LF,
    CRLF or a mix of both as line ends."""
    head_bytes, body = split_head(raw)
    head = head_bytes.decode("utf-8", "surrogateescape")
    if "\r" in head:
        head = head.replace("\r\n", "\n")
        if "\r" in head:
            # A CR alone is not a line end, and no header value may hold one (§25.1).
            raise SipParseError("Bare CR in message head")
    return head.split("\n"), body


def _start_line(lines: list[str]) -> tuple[Request | Response, SipParseError | None]:
    """The message the start line (lines[0]) begins, with the header lines after it, and
    the error of a Request-URI that did not parse (reported once the headers are read, so
    that a 400 can be built).

    The start line is checked before the headers are read, so its errors come first; the
    message is built once both are read, with its store, rather than with an empty one
    replaced at once."""
    line = lines[0]
    # A method holds no "/": a request line is known by its fourth character, without upper().
    if line[3:4] == "/" and line[:4].upper() == "SIP/":
        match = _STATUS_LINE.fullmatch(line)
        if not match:
            raise SipParseError("Bad status line")
        if match.group(1) != "2.0":
            raise SipParseError("Version Not Supported", 505)
        status = int(match.group(2))
        if not 100 <= status <= 699:
            raise SipParseError("Bad status code")
        reason = match.group(3) or ""
        return Response(status, reason, _header_lines(lines)), None
    parts = line.split(" ")
    if len(parts) != 3:
        raise SipParseError("Bad request line")
    method, uri_text, version = parts
    if not is_token(method):
        raise SipParseError("Bad method")
    if version != SIP_VERSION:
        upper = version.upper()
        if upper != SIP_VERSION:
            if upper.startswith("SIP/"):
                raise SipParseError("Version Not Supported", 505)
            raise SipParseError("Bad SIP version")
    if len(uri_text) > MAX_REQUEST_URI:
        raise SipParseError("Request-URI Too Long", 414)
    uri: Uri
    uri_error: SipParseError | None
    try:
        uri = parse_uri(uri_text)
        uri_error = None
    except SipParseError as error:
        uri = OtherUri("invalid", uri_text)
        uri_error = error
    return Request(method, uri, _header_lines(lines)), uri_error


# Header names already validated, mapped to their keys: most lines skip the name regex.
# Bounded, like the header_key cache, against peers that invent names.
_KEYS_OF_VALID_NAMES: Final[dict[str, str]] = {}
_KNOWN_NAMES_LIMIT: Final = 1_024
# (`name: `, name, key) of the line at each index of a recent message (index 0, the start
# line, holds a placeholder no line starts with).
_NAMES_SEEN: Final[list[tuple[str, str, str]]] = [("\n", "", "")]
_SEEN_NAME_LENGTH: Final = 64


def _header_lines(lines: list[str]) -> Headers:
    """The lines after the start line (lines[0]), unfolded, in order, each keyed for lookup."""
    # The three lists are made at their full length (copies of the lines, the cheapest
    # list of that length to make) and filled in place: appending grew each of them three
    # or four times a message. Only an empty line or a continuation leaves them longer than
    # the lines kept, and they are cut to length at the end.
    count = len(lines) - 1
    keys = lines[1:]
    names = lines[1:]
    values = lines[1:]
    kept = 0
    known = _KEYS_OF_VALID_NAMES
    seen = _NAMES_SEEN
    seen_count = len(seen)
    for index in range(1, len(lines)):
        line = lines[index]
        if index < seen_count:
            # A phone sends the same names in the same order every time: a line that
            # starts as the last one in its place did is keyed without cutting its name.
            prefix, name, key = seen[index]
            if line.startswith(prefix):
                keys[kept] = key
                names[kept] = name
                values[kept] = line[len(prefix) :].strip(" \t")
                kept += 1
                continue
        colon = line.find(":")
        if colon > 0:
            # Nearly every other line: a name already validated (so not a continuation,
            # which starts with whitespace), keyed by one look-up.
            name = line[:colon]
            found = known.get(name)
            if found is not None:
                keys[kept] = found
                names[kept] = name
                values[kept] = line[colon + 1 :].strip(" \t")
                kept += 1
                _remember_name(seen, index, name, found)
                continue
        if not line:
            continue
        first = line[0]
        if first == " " or first == "\t":
            # Line folding (§7.3.1): a continuation joins the previous value with one space.
            if not kept:
                raise SipParseError("Continuation before first header")
            values[kept - 1] = f"{values[kept - 1]} {line.strip()}".strip()
            continue
        if colon < 0:
            raise SipParseError("Malformed header line")
        name = line[:colon]
        stripped = name.rstrip(" \t")
        if not _HEADER_NAME.fullmatch(stripped):
            raise SipParseError("Malformed header line")
        key = header_key(stripped)
        if stripped == name and len(known) < _KNOWN_NAMES_LIMIT:
            known[name] = key  # only names that need no rstrip, so a hit needs no work
        keys[kept] = key
        names[kept] = stripped
        values[kept] = line[colon + 1 :].strip(" \t")
        kept += 1
    if kept < count:
        del keys[kept:]
        del names[kept:]
        del values[kept:]
    return column_headers(keys, names, values)


def _remember_name(seen: list[tuple[str, str, str]], index: int, name: str, key: str) -> None:
    """Note a validated name as the one at line `index`, for the next message's first try.

    Any validated name will do: a later line starting with `name: ` has that name (a name
    holds no colon), whatever this message held. Long names are not kept, so the list stays
    small whatever a peer sends.
    """
    if len(name) > _SEEN_NAME_LENGTH:
        return
    entry = (name + ": ", name, key)
    if index < len(seen):
        seen[index] = entry
    elif index == len(seen):
        seen.append(entry)


def _attach_body(message: Message, body: bytes, stream: bool) -> None:
    length_values = message.headers.get_all("content-length")
    if not length_values:
        if stream and body:
            raise SipParseError("Missing Content-Length", 400, message)
        message.body = body
        return
    lengths: list[int] | None = None
    try:
        if len(length_values) == 1:
            # Nearly every message: one value, no list of lengths to build and compare.
            length = parse_content_length(length_values[0])
        else:
            lengths = [parse_content_length(value) for value in length_values]
            length = lengths[0]
    except SipParseError as error:
        raise SipParseError(error.reason, 400, message) from None
    if lengths is not None and lengths.count(length) != len(lengths):
        raise SipParseError("Conflicting Content-Length", 400, message)
    if length > len(body):
        raise SipParseError("Content-Length larger than body", 400, message)
    # §18.3: over UDP, bytes past Content-Length are discarded.
    message.body = body[:length]
