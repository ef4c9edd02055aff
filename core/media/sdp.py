"""SDP (RFC 8866) read and rewritten line by line, for media anchoring; sans-I/O.

A relay needs few facts from an offer or answer: the connection address of each media stream,
its port, its RTCP port (RFC 3605 `a=rtcp`), whether RTCP shares the RTP port (RFC 5761
`a=rtcp-mux`) and its direction (RFC 3264 §5.1, hold in §8.4). To anchor a call it changes as
few lines as it can: `c=` and the `o=` address to the relay's, each `m=` port to the relay port
(a port of 0 is a refused stream and stays 0, RFC 3264 §6), `a=rtcp` to the relay's RTCP port.
ICE candidates (RFC 8839) would let the phones route around the relay, so they go. Every other
line stays byte for byte, line endings included: general-purpose SDP libraries re-serialise
what they parse and drop or coerce the lines they do not model (crypto suites, fmtp, vendor
attributes), which breaks calls in ways nobody can see.

Input is hostile (it arrives in any INVITE): anything this module cannot make sense of raises
`SdpError`, and the caller forwards the body untouched, or refuses the call; nothing else is
raised. Sizes are bounded (`MAX_SDP_BYTES`, `MAX_MEDIA`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

MAX_SDP_BYTES = 16_384  # far beyond any phone's offer; SIP over UDP caps a body lower still
MAX_MEDIA = 16  # m= lines we relay; an offer with more is refused, not half-anchored
DIRECTIONS = ("sendrecv", "sendonly", "recvonly", "inactive")
_DIRECTION_VALUES = (b"sendrecv", b"sendonly", b"recvonly", b"inactive")
# RFC 8839 §5: the ICE attributes; with a relay in the path they would only leak addresses.
_ICE_ATTRIBUTES = (
    b"a=candidate:",
    b"a=remote-candidates:",
    b"a=end-of-candidates",
    b"a=ice-",
)
_LINE = re.compile(rb"[^\r\n]*(?:\r\n|\n|\r)?")
_PORT = re.compile(rb"[0-9]{1,5}")


class SdpError(ValueError):
    """The body is not SDP this module can anchor; the message says why."""


@dataclass(frozen=True, slots=True)
class MediaSection:
    """One `m=` line and what the relay needs of its attributes.

    `address` is the stream's connection address (its own `c=` or the session's), "" when
    there is none; `rtcp_port` is the `a=rtcp` port or `port + 1` (RFC 3550 §11).
    """

    kind: str  # audio, video, image, application ...
    port: int  # 0: the stream is refused or disabled
    proto: str  # RTP/AVP, RTP/SAVP, UDP/TLS/RTP/SAVPF, udptl ...
    address: str
    rtcp_port: int
    rtcp_mux: bool
    direction: str  # one of DIRECTIONS, session default applied
    # The RTP clock of the first format (its a=rtpmap, RFC 8866 §6.6), for RTCP jitter in ms;
    # 8000 (every static audio payload type's) when there is none, 90000 for video.
    clock_rate: int = 8000

    @property
    def on_hold(self) -> bool:
        """RFC 3264 §8.4, and the older RFC 2543 way: a zero connection address."""
        return self.direction != "sendrecv" or self.address in ("0.0.0.0", "::")


@dataclass(frozen=True, slots=True)
class SessionDescription:
    """What `parse` found: the media sections in order, and the origin's address."""

    origin_address: str
    media: tuple[MediaSection, ...]


def _lines(body: bytes) -> list[bytes]:
    """The body split into lines that keep their endings, so joining them gives it back."""
    if len(body) > MAX_SDP_BYTES:
        raise SdpError("SDP body too large")
    lines = [line for line in _LINE.findall(body) if line]
    if not lines or not lines[0].startswith(b"v="):
        raise SdpError("SDP must start with v=")
    return lines


def _content(line: bytes) -> bytes:
    return line.rstrip(b"\r\n")


def _ending(line: bytes) -> bytes:
    return line[len(line.rstrip(b"\r\n")) :]


def _text(value: bytes) -> str:
    try:
        return value.decode("ascii")
    except UnicodeDecodeError:
        raise SdpError("non-ASCII in an SDP field the relay reads") from None


def _port(value: bytes) -> int:
    if _PORT.fullmatch(value) is None:
        raise SdpError("bad port")
    port = int(value)
    if port > 65_535:
        raise SdpError("port out of range")
    return port


def _connection_address(content: bytes) -> str:
    """`c=IN IP4 192.0.2.1` (RFC 8866 §5.7): the address; a TTL or count suffix is dropped."""
    fields = content[2:].split(b" ")
    if len(fields) != 3 or fields[0] != b"IN" or fields[1] not in (b"IP4", b"IP6"):
        raise SdpError("bad c= line")
    address = _text(fields[2]).split("/", 1)[0]
    if not address:
        raise SdpError("bad c= address")
    return address


def _origin_address(content: bytes) -> str:
    """`o=user sess-id sess-version IN IP4 address` (RFC 8866 §5.2)."""
    fields = content[2:].split(b" ")
    if len(fields) != 6 or fields[3] != b"IN":
        raise SdpError("bad o= line")
    return _text(fields[5])


def _media_fields(content: bytes) -> tuple[str, int, str, bytes]:
    """`m=audio 49170 RTP/AVP 0 8` (RFC 8866 §5.14): kind, port, proto, first format. A
    `port/count` form is refused: it asks for a range of ports a relay would have to mirror
    (layered encodings)."""
    fields = content[2:].split(b" ")
    if len(fields) < 4 or not fields[0] or not fields[2]:
        raise SdpError("bad m= line")
    return _text(fields[0]), _port(fields[1]), _text(fields[2]), fields[3]


def _rtpmap_rate(content: bytes, first_format: bytes) -> int | None:
    """`a=rtpmap:111 opus/48000/2` → 48000 when 111 is the first format; else None."""
    fmt, _space, encoding = content[9:].partition(b" ")
    if fmt != first_format:
        return None
    rate = encoding.split(b"/")
    if len(rate) < 2 or not rate[1].isdigit() or len(rate[1]) > 7:
        return None
    return int(rate[1]) or None


def _rtcp_port(content: bytes) -> int:
    """`a=rtcp:53020` or `a=rtcp:53020 IN IP4 192.0.2.1` (RFC 3605 §2.1)."""
    return _port(content[7:].split(b" ", 1)[0])


def _is_ice(content: bytes) -> bool:
    return content.startswith(_ICE_ATTRIBUTES)


def parse(body: bytes) -> SessionDescription:
    """The media sections of `body`. Raises `SdpError` for anything it cannot read."""
    lines = _lines(body)
    origin = ""
    session_address = ""
    session_direction = "sendrecv"
    sections: list[list[bytes]] = []
    for line in lines:
        content = _content(line)
        if content.startswith(b"m="):
            if len(sections) >= MAX_MEDIA:
                raise SdpError("too many media streams")
            sections.append([content])
        elif sections:
            sections[-1].append(content)
        elif content.startswith(b"o="):
            origin = _origin_address(content)
        elif content.startswith(b"c="):
            session_address = _connection_address(content)
        elif content.startswith(b"a=") and content[2:] in _DIRECTION_VALUES:
            session_direction = _text(content[2:])
    media = []
    for section in sections:
        kind, port, proto, first_format = _media_fields(section[0])
        clock_rate = 90_000 if kind == "video" else 8_000
        address = session_address
        rtcp_port = port + 1 if port else 0
        rtcp_mux = False
        direction = session_direction
        for content in section[1:]:
            if content.startswith(b"c="):
                address = _connection_address(content)
            elif content.startswith(b"a=rtcp:"):
                rtcp_port = _rtcp_port(content)
            elif content == b"a=rtcp-mux":
                rtcp_mux = True
            elif content.startswith(b"a=rtpmap:"):
                clock_rate = _rtpmap_rate(content, first_format) or clock_rate
            elif content.startswith(b"a=") and content[2:] in _DIRECTION_VALUES:
                direction = _text(content[2:])
        media.append(
            MediaSection(kind, port, proto, address, rtcp_port, rtcp_mux, direction, clock_rate)
        )
    return SessionDescription(origin, tuple(media))


def _address_line(prefix: bytes, address: str) -> bytes:
    family = b"IP6" if ":" in address else b"IP4"
    return prefix + b"IN " + family + b" " + address.encode("ascii")


def _rewrite_origin(content: bytes, address: str) -> bytes:
    fields = content.split(b" ")
    if len(fields) != 6:
        raise SdpError("bad o= line")
    fields[4] = b"IP6" if ":" in address else b"IP4"
    fields[5] = address.encode("ascii")
    return b" ".join(fields)


def _rewrite_connection(content: bytes, address: str) -> bytes:
    """The relay's address, except a hold address (0.0.0.0 / ::) that is passed on as it is:
    it tells the other side not to send (RFC 3264 §8.4)."""
    if _connection_address(content) in ("0.0.0.0", "::"):
        return content
    return _address_line(b"c=", address)


def rewrite(body: bytes, address: str, ports: list[int]) -> bytes:
    """`body` with the relay's `address` and `ports` (one per `m=` line, in order; the RTCP
    port is the next one up) in place of the phone's, ICE lines removed, the rest untouched.

    An `m=` line with port 0 keeps it (RFC 3264 §6) whatever `ports` says. A session-level
    `c=` is rewritten like the media-level ones. Raises `SdpError` when `body` cannot be read
    or `ports` does not match its streams.
    """
    description = parse(body)
    if len(ports) != len(description.media):
        raise SdpError("one port per media stream is needed")
    out: list[bytes] = []
    index = -1
    for line in _lines(body):
        content = _content(line)
        ending = _ending(line)
        if _is_ice(content):
            continue
        if content.startswith(b"m="):
            index += 1
            media = description.media[index]
            if media.port:
                fields = content.split(b" ")
                fields[1] = str(ports[index]).encode("ascii")
                content = b" ".join(fields)
        elif content.startswith(b"o="):
            content = _rewrite_origin(content, address)
        elif content.startswith(b"c="):
            content = _rewrite_connection(content, address)
        elif content.startswith(b"a=rtcp:") and index >= 0:
            media = description.media[index]
            if media.port:
                # RFC 5761 §5.1.3: a=rtcp equal to the RTP port says RTCP is multiplexed.
                rtcp = ports[index] if media.rtcp_port == media.port else ports[index] + 1
                content = b"a=rtcp:" + str(rtcp).encode("ascii")
                if b" " in _content(line)[7:]:
                    content = _address_line(content + b" ", address)
        out.append(content + ending)
    return b"".join(out)
