"""name-addr / addr-spec values: From, To, Contact, Route, Record-Route (RFC 3261 §20.10, §25.1).

`"Alice" <sip:alice@pbx.test;transport=tcp>;tag=1928` and `sip:alice@pbx.test;tag=1928` are
different things: without angle brackets the parameters belong to the header, not the URI.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from core.sip.errors import SipParseError
from core.sip.uri import Uri, format_params, parse_params, parse_uri


@dataclass(frozen=True, slots=True)
class NameAddr:
    uri: Uri
    display_name: str | None = None
    params: dict[str, str | None] = field(default_factory=dict)
    raw: str | None = field(default=None, compare=False, repr=False)

    def __str__(self) -> str:
        if self.raw is not None:
            return self.raw
        display = f'"{_escape_quoted(self.display_name)}" ' if self.display_name else ""
        return f"{display}<{self.uri}>{format_params(self.params)}"

    @property
    def tag(self) -> str | None:
        return self.params.get("tag")

    def param(self, name: str) -> str | None:
        return self.params.get(name.lower())

    def with_params(self, **params: str | None) -> NameAddr:
        merged = dict(self.params)
        merged.update(params)
        return NameAddr(uri=self.uri, display_name=self.display_name, params=merged)


def _escape_quoted(text: str) -> str:
    return text.replace("\\", "\\\\").replace('"', '\\"')


def _read_quoted(text: str, start: int) -> tuple[str, int]:
    """Read a quoted-string starting at text[start] == '"'; returns (value, index after it)."""
    chars: list[str] = []
    index = start + 1
    while index < len(text):
        char = text[index]
        if char == "\\" and index + 1 < len(text):
            chars.append(text[index + 1])
            index += 2
            continue
        if char == '"':
            return "".join(chars), index + 1
        chars.append(char)
        index += 1
    raise SipParseError("Unterminated quoted string")


def parse_name_addr(text: str) -> NameAddr:
    """Parse a From/To/Contact/Route element; malformed → SipParseError."""
    raw = text
    text = text.strip()
    if not text:
        raise SipParseError("Empty address")
    display: str | None = None
    rest = text
    if text.startswith('"'):
        display, end = _read_quoted(text, 0)
        rest = text[end:].lstrip()
        if not rest.startswith("<"):
            raise SipParseError("Bad name-addr")
    elif "<" in text:
        lt = text.index("<")
        display = text[:lt].strip() or None
        rest = text[lt:]
    if rest.startswith("<"):
        gt = rest.find(">")
        if gt < 0:
            raise SipParseError("Missing '>' in address")
        uri = parse_uri(rest[1:gt].strip())
        tail = rest[gt + 1 :].strip()
        if tail and not tail.startswith(";"):
            raise SipParseError("Bad address parameters")
        params = parse_params(tail[1:]) if tail else {}
    else:
        # addr-spec: the URI ends at the first ';' and what follows are header params.
        uri_text, _, param_text = rest.partition(";")
        if "?" in uri_text or "," in uri_text:
            raise SipParseError("Bad addr-spec")
        uri = parse_uri(uri_text.strip())
        params = parse_params(param_text)
    return NameAddr(uri=uri, display_name=display, params=params, raw=raw.strip())


def parse_contacts(values: list[str]) -> list[NameAddr] | None:
    """Contact values → addresses, or None for the wildcard `*` (RFC 3261 §10.2.2).

    `*` must stand alone: mixed with addresses it is malformed.
    """
    if any(value.strip() == "*" for value in values):
        if len(values) != 1:
            raise SipParseError("Contact '*' mixed with addresses")
        return None
    return [parse_name_addr(value) for value in values]
