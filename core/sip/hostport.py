"""`host` and `hostport` (RFC 3261 §25.1): the one grammar for a host, a port and
`host[:port]` with IPv6 in brackets.

The SIP parser reads Request-URIs and Via sent-by with it; the console, the CLI and the config
read gateways and listen addresses with it too (`core.trunks.gateways.parse_gateway`,
`pbxtui.config.parse_listen`), so a host the route would refuse in a header is never accepted
from an operator either. Errors are `SipParseError`s, whose reason is the 400's reason phrase.
"""

from __future__ import annotations

import ipaddress
import re

from core.sip.errors import SipParseError

# RFC 3261 §25.1 hostname, written so the engine never backtracks (possessive quantifiers):
# a label is runs of letters and digits joined by hyphens, labels are joined by dots. An
# IPv4 address matches it too. A backtracking form of the same grammar costs quadratic time
# on a long host, which a 64 KiB datagram could turn into a CPU sink.
_LABEL = r"[A-Za-z0-9]++(?:-++[A-Za-z0-9]++)*+"
_HOSTNAME = re.compile(rf"{_LABEL}(?:\.{_LABEL})*+\.?")


def is_digits(text: str) -> bool:
    """ASCII digits only: str.isdigit() also accepts "²" and "٣", which int() then rejects."""
    return text.isascii() and text.isdigit()


def format_host(host: str) -> str:
    """A host as it appears in a URI or Via: IPv6 addresses in brackets."""
    return f"[{host}]" if ":" in host else host


def format_hostport(host: str, port: int | None) -> str:
    """`host[:port]` as `parse_hostport` reads it back."""
    return format_host(host) if port is None else f"{format_host(host)}:{port}"


def is_hostname(text: str) -> bool:
    """A host name or IPv4 address by the §25.1 grammar (no brackets, no port)."""
    return _HOSTNAME.fullmatch(text) is not None


def parse_host(text: str) -> str:
    """Validate a host (name, IPv4, or bracketed IPv6); returns it without brackets."""
    if not text:
        raise SipParseError("Empty host")
    if text[0] == "[":
        if text[-1] != "]":
            raise SipParseError("Bad IPv6 reference")
        inner = text[1:-1]
        address, _, zone = inner.partition("%")
        try:
            ipaddress.IPv6Address(address)
        except ValueError:
            raise SipParseError("Bad IPv6 reference") from None
        if "%" in inner and not (zone and zone.isascii() and zone.isalnum()):
            raise SipParseError("Bad IPv6 reference")
        return inner
    if not _HOSTNAME.fullmatch(text):
        raise SipParseError("Bad host")
    return text


def parse_hostport(text: str, *, zero_port: bool = False) -> tuple[str, int | None]:
    """`host[:port]` with IPv6 references → (host without brackets, port or None).

    The port is 1-65535; `zero_port` also allows 0, which only a listening socket may ask
    for ("any free port").
    """
    if text.startswith("["):
        end = text.find("]")
        if end < 0:
            raise SipParseError("Bad IPv6 reference")
        host = parse_host(text[: end + 1])
        rest = text[end + 1 :]
        if not rest:
            return host, None
        if rest[0] != ":":
            raise SipParseError("Bad host:port")
        return host, parse_port(rest[1:], zero=zero_port)
    host_text, sep, port_text = text.partition(":")
    host = parse_host(host_text)
    return host, (parse_port(port_text, zero=zero_port) if sep else None)


def parse_port(text: str, *, zero: bool = False) -> int:
    """`port = 1*DIGIT`, as a number 1-65535 (0-65535 with `zero`)."""
    if not is_digits(text) or len(text) > 5:
        raise SipParseError("Bad port")
    port = int(text)
    if not (0 if zero else 1) <= port < 65536:
        raise SipParseError("Bad port")
    return port
