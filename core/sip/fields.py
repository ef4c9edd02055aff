"""Typed views of the header values the route reads: Via, CSeq, Max-Forwards, Expires, auth.

Each parser takes the raw value and returns a small frozen dataclass or an int; every failure
is a SipParseError whose reason a 400 can quote.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from core.sip.errors import SipParseError
from core.sip.uri import format_host, format_params, parse_hostport, parse_params

_TOKEN = re.compile(r"^[A-Za-z0-9\-.!%*_+`'~]+$")
MAGIC_COOKIE = "z9hG4bK"  # RFC 3261 §8.1.1.7


def is_token(text: str) -> bool:
    return bool(_TOKEN.match(text))


@dataclass(frozen=True, slots=True)
class Via:
    """One Via element: `SIP/2.0/UDP host:port;branch=z9hG4bK...;rport`."""

    transport: str
    host: str
    port: int | None = None
    params: dict[str, str | None] = field(default_factory=dict)
    protocol: str = "SIP/2.0"

    def __str__(self) -> str:
        port = "" if self.port is None else f":{self.port}"
        return f"{self.protocol}/{self.transport} {format_host(self.host)}{port}{format_params(self.params)}"

    @property
    def branch(self) -> str | None:
        return self.params.get("branch")

    @property
    def received(self) -> str | None:
        return self.params.get("received")

    @property
    def rport(self) -> int | None:
        """The rport value a server filled in, or None (absent, or asked for but empty)."""
        value = self.params.get("rport")
        return int(value) if value and value.isdigit() else None

    @property
    def wants_rport(self) -> bool:
        return "rport" in self.params

    @property
    def maddr(self) -> str | None:
        return self.params.get("maddr")

    @property
    def ttl(self) -> int | None:
        value = self.params.get("ttl")
        return int(value) if value and value.isdigit() else None

    @property
    def sent_by(self) -> tuple[str, int | None]:
        return self.host, self.port

    @property
    def is_rfc3261_branch(self) -> bool:
        branch = self.branch
        return branch is not None and branch.startswith(MAGIC_COOKIE)

    def with_params(self, **params: str | None) -> Via:
        merged = dict(self.params)
        merged.update(params)
        return Via(self.transport, self.host, self.port, merged, self.protocol)


def parse_via(text: str) -> Via:
    """One Via element (the list split is done by Headers.values)."""
    text = text.strip()
    proto, _, rest = text.partition(" ")
    rest = rest.strip()
    parts = [part.strip() for part in proto.split("/")]
    if len(parts) != 3 or not rest:
        # Tolerate "SIP / 2.0 / UDP host" spacing allowed by the grammar (LWS around SLASH).
        collapsed = re.sub(r"\s*/\s*", "/", text)
        proto, _, rest = collapsed.partition(" ")
        parts = proto.split("/")
        rest = rest.strip()
        if len(parts) != 3 or not rest:
            raise SipParseError("Bad Via")
    name, version, transport = parts
    if name.upper() != "SIP" or not version or not is_token(transport):
        raise SipParseError("Bad Via")
    sent_by, _, param_text = rest.partition(";")
    host, port = parse_hostport(sent_by.strip())
    params = parse_params(param_text)
    return Via(transport.upper(), host, port, params, f"{name}/{version}")


@dataclass(frozen=True, slots=True)
class CSeq:
    number: int
    method: str

    def __str__(self) -> str:
        return f"{self.number} {self.method}"


def parse_cseq(text: str) -> CSeq:
    """`CSeq: 4711 INVITE`: a 32-bit number (RFC 3261 §8.1.1.5) and a method token."""
    parts = text.split()
    if len(parts) != 2:
        raise SipParseError("Bad CSeq")
    number_text, method = parts
    if not number_text.isdigit() or len(number_text) > 10:
        raise SipParseError("Bad CSeq number")
    number = int(number_text)
    if number >= 2**31:
        raise SipParseError("Bad CSeq number")
    if not is_token(method):
        raise SipParseError("Bad CSeq method")
    return CSeq(number, method)


def parse_max_forwards(text: str) -> int:
    text = text.strip()
    if not text.isdigit() or len(text) > 3 or int(text) > 255:
        raise SipParseError("Bad Max-Forwards")
    return int(text)


def parse_expires(text: str) -> int:
    """Delta-seconds; RFC 3261 §20.19 says values over 2**32-1 mean 2**32-1."""
    text = text.strip()
    if not text.isdigit():
        raise SipParseError("Bad Expires")
    return min(int(text), 2**32 - 1)


def parse_content_length(text: str) -> int:
    text = text.strip()
    if not text.isdigit() or len(text) > 9:
        raise SipParseError("Bad Content-Length")
    return int(text)


@dataclass(frozen=True, slots=True)
class AuthParams:
    """`Digest username="alice", realm="pbx.test", ...` — scheme and lower-cased params."""

    scheme: str
    params: dict[str, str]

    def get(self, name: str) -> str | None:
        return self.params.get(name.lower())


def parse_auth(text: str) -> AuthParams:
    """Authorization / WWW-Authenticate / Proxy-* values (RFC 3261 §25.1, RFC 7616 §3.4)."""
    text = text.strip()
    scheme, _, rest = text.partition(" ")
    if not scheme or not is_token(scheme):
        raise SipParseError("Bad authentication header")
    params: dict[str, str] = {}
    index = 0
    length = len(rest)
    while index < length:
        while index < length and rest[index] in " \t,":
            index += 1
        if index >= length:
            break
        eq = rest.find("=", index)
        if eq < 0:
            raise SipParseError("Bad authentication parameter")
        name = rest[index:eq].strip().lower()
        if not name or not is_token(name):
            raise SipParseError("Bad authentication parameter")
        index = eq + 1
        while index < length and rest[index] in " \t":
            index += 1
        if index < length and rest[index] == '"':
            chars: list[str] = []
            index += 1
            while index < length and rest[index] != '"':
                if rest[index] == "\\" and index + 1 < length:
                    index += 1
                chars.append(rest[index])
                index += 1
            if index >= length:
                raise SipParseError("Unterminated quoted string")
            index += 1
            value = "".join(chars)
        else:
            end = rest.find(",", index)
            end = length if end < 0 else end
            value = rest[index:end].strip()
            index = end
        if name in params:
            raise SipParseError("Repeated authentication parameter")
        params[name] = value
    return AuthParams(scheme, params)


def format_auth(scheme: str, params: list[tuple[str, str, bool]]) -> str:
    """Print an auth header from (name, value, quoted) triples, in the order given."""
    parts = []
    for name, value, quoted in params:
        if quoted:
            escaped = value.replace("\\", "\\\\").replace('"', '\\"')
            parts.append(f'{name}="{escaped}"')
        else:
            parts.append(f"{name}={value}")
    return f"{scheme} " + ", ".join(parts)
