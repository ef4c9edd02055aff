"""Typed views of the header values the route reads: Via, CSeq, Max-Forwards, Expires, auth.

Each parser takes the raw value and returns a small frozen dataclass or an int; every failure
is a SipParseError whose reason a 400 can quote.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Final

from core.sip.bounded import make_room
from core.sip.errors import SipParseError
from core.sip.hostport import format_host, is_digits, is_hostname, parse_host, parse_hostport
from core.sip.uri import QUOTED_STRING, format_params, params_hash, parse_params

_TOKEN: Final = re.compile(r"[A-Za-z0-9\-.!%*_+`'~]+")
MAGIC_COOKIE = "z9hG4bK"  # RFC 3261 §8.1.1.7
# sent-protocol LWS sent-by *( SEMI via-params ), with SWS allowed around each SLASH (§25.1).
# Possessive quantifiers throughout: the engine never backtracks, so matching is linear.
_VIA = re.compile(
    r"\s*+([^\s/;]++)\s*+/\s*+([^\s/;]++)\s*+/\s*+([^\s/;]++)\s++([^;]*+)(?:;(.*))?",
    re.DOTALL,
)
# The sent-protocol and sent-by nearly every Via has, spelled exactly as `str(Via)` prints
# them: `SIP/2.0/UDP`, one space, a host name, IPv4 or bracketed IPv6 address, and a port
# without leading zeros. Possessive, so linear. The host is only the characters of one here
# (the full grammar is a slow pattern to run): one that could break the grammar is checked
# by _canonical_head.
_CANONICAL_HEAD = re.compile(
    r"SIP/2\.0/([A-Z]++) ([A-Za-z0-9.\-]++|\[[0-9A-Fa-f:.]++\])(?::([1-9][0-9]{0,4}+))?"
)
# Those heads already read: each client sends the same one in every request, and responses
# carry the ones we stamped and pushed. Text → (transport, host, port); bounded all the same,
# in entries and in key length. One entry per phone (about 300 bytes held), so sized for
# ~4,000 busy ones: with fewer entries than phones sending at once nearly every Via missed
# (core/sip/bounded.py); more would spend memory on phones that send once a minute.
_HEADS: dict[str, tuple[str, str, int | None]] = {}
_HEADS_LIMIT: Final = 4_096
_CACHED_HEAD_LENGTH: Final = 96  # a numeric sent-by fits; a very long host name is not kept
_AROUND_COLON = re.compile(r"\s*:\s*")
_QUOTED_PAIR = re.compile(r"\\(.)", re.DOTALL)
_AUTH_SCHEME = re.compile(r"\s*([^\s,]+)\s*")
_MAX_DELTA_SECONDS: Final = 2**32 - 1  # §20.19: larger values mean this
_MAX_CSEQ: Final = 2**32 - 1  # §20.16: a 32-bit unsigned integer


# The tokens nearly every message holds (methods, transports): a set look-up, where
# isascii() is a generic method call when compiled.
_COMMON_TOKENS: Final = frozenset(
    ["INVITE", "ACK", "BYE", "CANCEL", "OPTIONS", "REGISTER", "PRACK", "SUBSCRIBE", "NOTIFY",
     "PUBLISH", "INFO", "REFER", "MESSAGE", "UPDATE", "UDP", "TCP", "TLS", "WS", "WSS", "2.0"]
)  # fmt: skip


def is_token(text: str) -> bool:
    if text in _COMMON_TOKENS:
        return True
    # Letters and digits only (a method, a transport), as nearly every token is: no regex.
    if text.isalnum() and text.isascii():
        return True
    return _TOKEN.fullmatch(text) is not None


def read_quoted(text: str, start: int) -> tuple[str, int]:
    """Read a quoted-string at text[start] == '"'; returns (unescaped value, index after it)."""
    match = QUOTED_STRING.match(text, start)
    if match is None:
        raise SipParseError("Unterminated quoted string")
    value = match.group(1)
    if "\\" in value:
        value = _QUOTED_PAIR.sub(r"\1", value)
    return value, match.end()


def _small_int(text: str, max_digits: int) -> int | None:
    """ASCII digits as an int, or None when they are not digits or have too many of them.

    Leading zeros are allowed and do not count (RFC 4475 §3.1.1.1 sends Max-Forwards 0068);
    the digit cap keeps int() away from its 4,300-digit limit and from huge numbers.
    """
    length = len(text)
    if 0 < length <= max_digits:
        # Read digit by digit (a CSeq number, a Max-Forwards, a port): compiled, a few
        # native steps, where is_digits and int() are generic calls. Any character that is
        # not an ASCII digit leaves the loop for the checks below.
        value = 0
        for index in range(length):
            digit = ord(text[index]) - 48
            if digit < 0 or digit > 9:
                break
            value = value * 10 + digit
        else:
            return value
    if len(text) <= max_digits and is_digits(text):
        return int(text)  # no more digits than allowed, leading zeros or not: the same int
    if not is_digits(text):
        return None
    significant = text.lstrip("0")
    if len(significant) > max_digits:
        return None
    return int(significant) if significant else 0


@dataclass(slots=True, init=False)
class Via:
    """One Via element: `SIP/2.0/UDP host:port;branch=z9hG4bK...;rport`."""

    # Built for every request, several times over: the __init__ is written out because a
    # frozen dataclass's generated one costs ten times as much per object (measured compiled,
    # 690 ns against 70). Shared through the header cache, so never changed once built.
    transport: str
    host: str
    port: int | None
    params: dict[str, str | None]
    protocol: str
    # Exactly what __str__ would print, when that is known without printing: the element
    # as received when it was already in that form (parse_via's fast path), or the stamped
    # text stamp_via wrote. Never anything else, so str() is the same either way.
    text: str | None = field(compare=False, repr=False)

    def __init__(
        self,
        transport: str,
        host: str,
        port: int | None = None,
        params: dict[str, str | None] | None = None,
        protocol: str = "SIP/2.0",
        text: str | None = None,
    ) -> None:
        self.transport = transport
        self.host = host
        self.port = port
        self.params = {} if params is None else params
        self.protocol = protocol
        self.text = text

    def __str__(self) -> str:
        if self.text is not None:
            return self.text
        port = "" if self.port is None else f":{self.port}"
        params = format_params(self.params)
        return f"{self.protocol}/{self.transport} {format_host(self.host)}{port}{params}"

    def __hash__(self) -> int:
        return hash((self.transport, self.host, self.port, self.protocol)) ^ params_hash(
            self.params
        )

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
        port = _small_int(value, 5) if value else None
        return port if port is not None and 0 < port < 65536 else None

    @property
    def wants_rport(self) -> bool:
        return "rport" in self.params

    @property
    def maddr(self) -> str | None:
        return self.params.get("maddr")

    @property
    def ttl(self) -> int | None:
        value = self.params.get("ttl")
        ttl = _small_int(value, 3) if value else None
        return ttl if ttl is not None and ttl <= 255 else None

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
    """One Via element (the list split is done by Headers.values).

    `SIP / 2.0 / UDP host : 5060 ; branch = z9hG4bK1` is as valid as the compact spelling
    (RFC 4475 §3.1.1.1), so whitespace is allowed wherever the grammar has SWS or LWS.
    An element spelled as Via prints it (nearly all of them) takes a look-up of its sent-by
    and a walk over its parameters; anything else, and anything that would fail, goes through
    the general parser.
    """
    semi = text.find(";")
    head = text if semi < 0 else text[:semi]
    known = _HEADS.get(head)
    if known is None:
        known = _canonical_head(head)
        if known is None:
            return _parse_via_general(text)
    params: dict[str, str | None] = {}
    if semi >= 0 and not _read_plain_params(text, semi + 1, params):
        return _parse_via_general(text)
    transport, host, port = known
    return Via(transport, host, port, params, "SIP/2.0", text)


def _read_plain_params(text: str, start: int, params: dict[str, str | None]) -> bool:
    """Read the parameters after text[start - 1] == ";" into `params`, as parse_params
    would, when that needs nothing stripped, lower-cased or unquoted: no whitespace or `"`
    anywhere, every name lower case, none empty or repeated (a repeated one prints once:
    not as received). False as soon as one is not so (the general parser then decides).

    Walked with find rather than split and partition: the parameters are read where they
    stand, one slice per name and value, without the lists and tuples of the split.
    """
    if '"' in text:
        return False
    length = len(text)
    while True:
        end = text.find(";", start)
        if end < 0:
            end = length
        equals = text.find("=", start, end)
        if equals < 0:
            name = text[start:end]
            value: str | None = None
        else:
            name = text[start:equals]
            value = text[equals + 1 : end]
            if value and not _unspaced(value):
                return False
        # The names nearly every Via has need no case or whitespace check, and are kept
        # as the constants (interned, their hash known) rather than as the slices.
        if name == "branch":
            name = "branch"
        elif name == "rport":
            name = "rport"
        elif name == "received":
            name = "received"
        elif not name or name.lower() != name or not _unspaced(name):
            return False
        if name in params:
            return False
        params[name] = value
        if end == length:
            return True
        start = end + 1


def _unspaced(word: str) -> bool:
    """`word` (not empty) holds no whitespace, as str.split() and str.strip() see it.

    isalnum() first: letters and digits (a branch, a port) are not whitespace, and the
    check allocates nothing."""
    if word.isalnum():
        return True
    words = word.split()
    return len(words) == 1 and len(words[0]) == len(word)


def _canonical_head(head: str) -> tuple[str, str, int | None] | None:
    """`SIP/2.0/UDP host:port` as str(Via) prints it → (transport, host, port), remembered;
    None for any other spelling, valid or not (the general parser then decides)."""
    match = _CANONICAL_HEAD.fullmatch(head)
    if match is None:
        return None
    transport, host, port_text = match.groups()
    if host[0] == "[":
        try:
            host = parse_host(host)
        except SipParseError:
            return None
    elif ("-" in host or ".." in host or host[0] == ".") and not is_hostname(host):
        return None
    port = None if port_text is None else int(port_text)
    if port is not None and port > 65535:
        return None
    known = (transport, host, port)
    if len(head) <= _CACHED_HEAD_LENGTH:
        make_room(_HEADS, _HEADS_LIMIT)
        _HEADS[head] = known
    return known


def _parse_via_general(text: str) -> Via:
    """Any Via element the grammar allows, in any spelling; SipParseError otherwise."""
    match = _VIA.fullmatch(text)
    if match is None:
        raise SipParseError("Bad Via")
    name, version, transport, sent_by, param_text = match.groups()
    if name.upper() != "SIP" or not is_token(version) or not is_token(transport):
        raise SipParseError("Bad Via")
    sent_by = sent_by.strip()
    if ":" in sent_by and (" " in sent_by or "\t" in sent_by):
        sent_by = _AROUND_COLON.sub(":", sent_by)  # host [ COLON port ], COLON = SWS ":" SWS
    host, port = parse_hostport(sent_by)
    params = parse_params(param_text, after_semicolon=True) if param_text is not None else {}
    return Via(transport.upper(), host, port, params, f"{name}/{version}")


@dataclass(slots=True, init=False)
class CSeq:
    # Built for every request, several times over: the __init__ is written out because a
    # frozen dataclass's generated one costs ten times as much per object (measured compiled,
    # 690 ns against 70). Shared through the header cache, so never changed once built.
    number: int
    method: str

    def __init__(self, number: int, method: str) -> None:
        self.number = number
        self.method = method

    def __str__(self) -> str:
        return f"{self.number} {self.method}"

    def __hash__(self) -> int:
        return hash((self.number, self.method))


def parse_cseq(text: str) -> CSeq:
    """`CSeq: 4711 INVITE`: a 32-bit unsigned number (§20.16) and a method token.

    Digits, one space and a method every phone sends read by one find and two slices: the
    number holds only digits and the method is a known token, so neither holds whitespace
    and splitting would have cut the same two words. Anything else, valid or not, is split.
    """
    known = _KNOWN_CSEQS.get(text)
    if known is not None:
        return known
    space = text.find(" ")
    if space > 0:
        method = text[space + 1 :]
        if method in _COMMON_TOKENS:
            number = _small_int(text[:space], 10)
            if number is not None and number <= _MAX_CSEQ:
                cseq = CSeq(number, method)
                make_room(_KNOWN_CSEQS, _KNOWN_CSEQS_LIMIT)
                _KNOWN_CSEQS[text] = cseq
                return cseq
    return _parse_cseq_general(text)


# CSeq values read by the short path above, by their text: phones count from 1 (or a small
# random start) and every one sends `1 REGISTER`, `2 REGISTER`, `1 INVITE`..., so most values
# have been read before. Only the short path's own results are kept (at most ten digits and a
# known method, so the keys are short), and a CSeq is never changed once built: a hit is what
# reading the text again would make. Bounded like the other text caches.
_KNOWN_CSEQS: Final[dict[str, CSeq]] = {}
_KNOWN_CSEQS_LIMIT: Final = 4_096


def _parse_cseq_general(text: str) -> CSeq:
    """Any CSeq value, in any spelling; SipParseError otherwise."""
    parts = text.split()
    if len(parts) != 2:
        raise SipParseError("Bad CSeq")
    number_text, method = parts
    number = _small_int(number_text, 10)
    if number is None or number > _MAX_CSEQ:
        raise SipParseError("Bad CSeq number")
    if not is_token(method):
        raise SipParseError("Bad CSeq method")
    return CSeq(number, method)


def parse_max_forwards(text: str) -> int:
    """0..255 (§20.22); leading zeros are fine."""
    hops = _small_int(text.strip(), 3)
    if hops is None or hops > 255:
        raise SipParseError("Bad Max-Forwards")
    return hops


def parse_delta_seconds(text: str, reason: str = "Bad Expires") -> int:
    """delta-seconds; values over 2**32-1 mean 2**32-1, however many digits (§20.19)."""
    text = text.strip()
    if not is_digits(text):
        raise SipParseError(reason)
    seconds = _small_int(text, 10)
    return _MAX_DELTA_SECONDS if seconds is None else min(seconds, _MAX_DELTA_SECONDS)


def parse_expires(text: str) -> int:
    """The Expires header: delta-seconds (§20.19).

    A phone asks for the same few periods every time (`3600`, `60`, `0`): a value already
    read is looked up by its text. Only values that read without error and are short are
    kept (an int is never changed, and the same text reads to the same number).
    """
    known = _KNOWN_EXPIRES.get(text)
    if known is not None:
        return known
    seconds = parse_delta_seconds(text, "Bad Expires")
    if len(text) <= _KNOWN_EXPIRES_LENGTH:
        make_room(_KNOWN_EXPIRES, _KNOWN_EXPIRES_LIMIT)
        _KNOWN_EXPIRES[text] = seconds
    return seconds


_KNOWN_EXPIRES: Final[dict[str, int]] = {}
_KNOWN_EXPIRES_LIMIT: Final = 1_024
_KNOWN_EXPIRES_LENGTH: Final = 16


def parse_content_length(text: str) -> int:
    """Octets of body (§20.14); at most nine significant digits, far past any message limit."""
    length = _small_int(text.strip(), 9)
    if length is None:
        raise SipParseError("Bad Content-Length")
    return length


@dataclass(slots=True, init=False)
class AuthParams:
    """`Digest username="alice", realm="pbx.test", ...` — scheme and lower-cased params."""

    scheme: str
    params: dict[str, str]

    # Written-out __init__: a frozen dataclass's generated one costs six times as much.
    def __init__(self, scheme: str, params: dict[str, str]) -> None:
        self.scheme = scheme
        self.params = params

    def __hash__(self) -> int:
        return hash(self.scheme) ^ params_hash(self.params)  # type: ignore[arg-type]

    def get(self, name: str) -> str | None:
        return self.params.get(name.lower())


def parse_auth(text: str) -> AuthParams:
    """Authorization / WWW-Authenticate / Proxy-* values (RFC 3261 §25.1, RFC 7616 §3.4).

    `Digest realm="a", nonce="b"` and Zoiper's `Digest realm="a",nonce="b"` are the same; a
    parameter given twice is malformed (RFC 7616 §3.4: each may appear once).
    """
    match = _AUTH_SCHEME.match(text)
    scheme = match.group(1) if match else ""
    if not is_token(scheme):
        raise SipParseError("Bad authentication header")
    rest = text
    index = match.end() if match else 0
    length = len(rest)
    params: dict[str, str] = {}
    while index < length:
        while index < length and rest[index] in " \t,":
            index += 1
        if index >= length:
            break
        eq = rest.find("=", index)
        if eq < 0:
            raise SipParseError("Bad authentication parameter")
        name = rest[index:eq].strip().lower()
        if not is_token(name):
            raise SipParseError("Bad authentication parameter")
        index = eq + 1
        while index < length and rest[index] in " \t":
            index += 1
        if index < length and rest[index] == '"':
            value, index = read_quoted(rest, index)
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
