"""SIP, SIPS and tel URIs (RFC 3261 §19.1, RFC 3966), parsed once and printed back as received.

A parsed URI keeps its original text, so a proxy forwards exactly what it got; `replace()`
makes a changed copy that is printed from its parts. User parts are unescaped on parse
(`%40` → `@`) and escaped again when printed from parts.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Final
from urllib.parse import quote, unquote

from core.sip.bounded import make_room
from core.sip.errors import SipParseError
from core.sip.headers import split_outside_quotes
from core.sip.hostport import format_host, parse_hostport

# user = 1*( unreserved / escaped / user-unreserved ), RFC 3261 §25.1
_USER_SAFE = "-_.!~*'()&=+$,;?/"
# password = *( unreserved / escaped / "&" / "=" / "+" / "$" / "," )
_PASSWORD_SAFE = "-_.!~*'()&=+$,"
_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+\-.]*")
_NOT_IN_SIP_URI = re.compile(r'[\s<>"]')
# quoted-string = DQUOTE *(qdtext / quoted-pair) DQUOTE, §25.1; possessive, so no backtracking.
QUOTED_STRING = re.compile(r'"((?:[^"\\]++|\\.)*+)"', re.DOTALL)


def parse_params(text: str, *, after_semicolon: bool = False) -> dict[str, str | None]:
    """`a=b;c` (without the leading `;`) → {"a": "b", "c": None}; names lower-cased.

    `after_semicolon` says a `;` came before `text`, so an empty `text` is an empty parameter.

    Whitespace around `;` and `=` is allowed (SEMI and EQUAL are SWS-padded, §25.1). An empty
    parameter is malformed (RFC 4475 §3.1.2.1 answers `;;` with 400), a trailing `;` too: code
    that appends `;tag=x` to a header value it accepted must not produce `;;tag=x`. A quoted
    value may hold `;`; a `"` anywhere else (gen-value = token / host / quoted-string) is
    malformed, as it would swallow whatever is printed after it once more parameters are added.
    """
    params: dict[str, str | None] = {}
    if not text:
        if after_semicolon:
            raise SipParseError("Empty parameter")
        return params
    quoted = '"' in text
    if not quoted or ("\\" not in text and ";" not in "".join(text.split('"')[1::2])):
        parts = text.split(";")  # no `;` inside a quoted value, so a plain split is exact
    else:
        parts = split_outside_quotes(text, _PARAM_SPECIALS, ";")
    for part in parts:
        name, sep, value = part.partition("=")
        name = name.strip().lower()
        if not name:
            raise SipParseError("Empty parameter" if not sep else "Bad parameter")
        if sep:
            value = value.strip()
            if quoted and '"' in value and not QUOTED_STRING.fullmatch(value):
                raise SipParseError("Bad parameter")
        if quoted and '"' in name:
            raise SipParseError("Bad parameter")
        params[name] = value if sep else None
    return params


_PARAM_SPECIALS = re.compile(r'["\\;]')  # what split_outside_quotes visits in params


def format_params(params: dict[str, str | None]) -> str:
    return "".join(
        f";{name}" if value is None else f";{name}={value}" for name, value in params.items()
    )


def params_hash(params: dict[str, str | None]) -> int:
    """Hash of a parameter dict, so the frozen dataclasses holding one stay hashable."""
    return hash(frozenset(params.items()))


@dataclass(slots=True, init=False)
class SipUri:
    """sip: or sips: URI. `host` has no brackets; `params` keys are lower case."""

    # Built for every request, several times over: the __init__ is written out because a
    # frozen dataclass's generated one costs ten times as much per object (measured compiled,
    # 690 ns against 70). Shared through the header cache, so never changed once built.
    scheme: str
    user: str | None
    password: str | None
    host: str
    port: int | None
    params: dict[str, str | None]
    headers: str | None  # the part after `?`, kept as text
    raw: str | None = field(compare=False, repr=False)

    def __init__(
        self,
        scheme: str = "sip",
        user: str | None = None,
        password: str | None = None,
        host: str = "",
        port: int | None = None,
        params: dict[str, str | None] | None = None,
        headers: str | None = None,
        raw: str | None = None,
    ) -> None:
        self.scheme = scheme
        self.user = user
        self.password = password
        self.host = host
        self.port = port
        self.params = {} if params is None else params
        self.headers = headers
        self.raw = raw

    def __str__(self) -> str:
        if self.raw is not None:
            return self.raw
        text = self.scheme + ":"
        if self.user is not None:
            text += _escape(self.user, _USER_SAFE)
            if self.password is not None:
                text += ":" + _escape(self.password, _PASSWORD_SAFE)
            text += "@"
        text += format_host(self.host)
        if self.port is not None:
            text += f":{self.port}"
        text += format_params(self.params)
        if self.headers:
            text += "?" + self.headers
        return text

    def __hash__(self) -> int:
        return hash(
            (self.scheme, self.user, self.password, self.host, self.port, self.headers)
        ) ^ params_hash(self.params)

    def replace(self, **changes: Any) -> SipUri:
        """A copy with some parts changed, printed from its parts."""
        values: dict[str, Any] = {
            "scheme": self.scheme,
            "user": self.user,
            "password": self.password,
            "host": self.host,
            "port": self.port,
            "params": dict(self.params),
            "headers": self.headers,
        }
        values.update(changes)
        return SipUri(**values)

    @property
    def secure(self) -> bool:
        return self.scheme == "sips"

    @property
    def transport(self) -> str | None:
        value = self.params.get("transport")
        return value.lower() if value else None

    @property
    def hostport(self) -> str:
        host = format_host(self.host)
        return host if self.port is None else f"{host}:{self.port}"

    def param(self, name: str) -> str | None:
        return self.params.get(name.lower())

    def has_param(self, name: str) -> bool:
        return name.lower() in self.params

    @property
    def aor(self) -> str:
        """Address-of-record form: `sip:user@host` without port or params (RFC 3261 §10.3)."""
        user = "" if self.user is None else _escape(self.user, _USER_SAFE) + "@"
        return f"sip:{user}{format_host(self.host).lower()}"


def _unescape(text: str) -> str:
    return unquote(text, errors="surrogateescape")


def _escape(text: str, safe: str) -> str:
    """%-escape for printing from parts; a lone surrogate goes out as the byte it stood for."""
    return quote(text, safe=safe, errors="surrogateescape")


@dataclass(frozen=True, slots=True)
class TelUri:
    """tel: URI (RFC 3966): a number and parameters."""

    number: str
    params: dict[str, str | None] = field(default_factory=dict)
    raw: str | None = field(default=None, compare=False, repr=False)

    scheme = "tel"

    def __str__(self) -> str:
        if self.raw is not None:
            return self.raw
        return f"tel:{self.number}{format_params(self.params)}"

    def __hash__(self) -> int:
        return hash(self.number) ^ params_hash(self.params)

    @property
    def user(self) -> str:
        return self.number


@dataclass(frozen=True, slots=True)
class OtherUri:
    """Any other absolute URI (mailto:, http:, urn:): kept as text; a proxy answers 416.

    `scheme` is lower case; `raw` keeps the text as received so it prints back unchanged.
    """

    scheme: str
    rest: str
    raw: str | None = field(default=None, compare=False, repr=False)

    def __str__(self) -> str:
        if self.raw is not None:
            return self.raw
        return f"{self.scheme}:{self.rest}"

    @property
    def user(self) -> None:
        return None


Uri = SipUri | TelUri | OtherUri


def target_host(uri: SipUri) -> str:
    """The host a SIP URI sends to (RFC 3261 §19.1.1): its maddr over its host. maddr's
    grammar is `host`, so an IPv6 maddr is written in brackets (`maddr=[::1]`): returned
    without them, as `uri.host` is, so it is judged and dialled as an address, not a name."""
    maddr = uri.param("maddr")
    if not maddr:
        return uri.host
    if len(maddr) > 2 and maddr[0] == "[" and maddr[-1] == "]":
        return maddr[1:-1]
    return maddr


# URIs parsed so far, by their text. The same few recur in every request from a phone (the
# Request-URI, its own address in From and Contact, the To of a REGISTER), and a URI is never
# changed once built, so one object serves them all. Bounded in entries and in key length;
# the oldest entries go first, so a peer inventing URIs only churns it. About two entries per
# phone (its address of record, its Contact), some 560 bytes each held: sized for ~2,000 busy
# phones (2.3 MB at most). Larger, it holds a copy of every binding's URIs and breaks the
# memory budget for 10,000 phones (bench/register: +9 MiB at 32,768 entries, +2 at 8,192);
# a phone registering once a minute gains nothing from a hit, only a load test hammering
# the same phones does.
_PARSED_URIS: dict[str, Uri] = {}
_PARSED_URIS_LIMIT: Final = 4_096
_CACHED_URI_LENGTH: Final = 200


def parse_uri(text: str) -> Uri:
    """Parse any URI; a malformed sip:/sips:/tel: URI raises SipParseError."""
    cached = _PARSED_URIS.get(text)
    if cached is not None:
        return cached
    uri = _parse_uri(text)
    if len(text) <= _CACHED_URI_LENGTH:
        make_room(_PARSED_URIS, _PARSED_URIS_LIMIT)
        _PARSED_URIS[text] = uri
    return uri


def _parse_uri(text: str) -> Uri:
    scheme, sep, rest = text.partition(":")
    if not sep or not _SCHEME.fullmatch(scheme):
        raise SipParseError("Bad URI")
    lower = scheme.lower()
    if lower == "sip" or lower == "sips":
        return _parse_sip(lower, rest, text)
    if not rest or _NOT_IN_SIP_URI.search(rest):
        raise SipParseError("Bad tel URI" if lower == "tel" else "Bad URI")
    if lower == "tel":
        number, semicolon, params = rest.partition(";")
        if not number:
            raise SipParseError("Bad tel URI")
        return TelUri(number, parse_params(params, after_semicolon=bool(semicolon)), text)
    return OtherUri(lower, rest, raw=text)


def _parse_sip(scheme: str, rest: str, raw: str) -> SipUri:
    """sip:[user[:password]@]host[:port][;params][?headers] (RFC 3261 §19.1.1).

    The first `@` ends the userinfo: `@` is not allowed unescaped anywhere else in a valid
    URI, while `;`, `?`, `/` and `:` may appear in the user part (RFC 4475 §3.1.1.2 and
    §3.1.1.10), so the userinfo is cut off before looking for params and headers.
    """
    if not rest or _NOT_IN_SIP_URI.search(rest):
        raise SipParseError("Bad SIP URI")
    user: str | None = None
    password: str | None = None
    at = rest.find("@")
    if at >= 0:
        userinfo, rest = rest[:at], rest[at + 1 :]
        user_text, colon, password_text = userinfo.partition(":")
        if not user_text:
            raise SipParseError("Bad SIP URI user")
        # An escaped octet that is not UTF-8 unescapes to the same lone surrogate the raw
        # octet decodes to, so `m%FC` and a raw Latin-1 `m\xfc` are one user (§19.1.4).
        user = _unescape(user_text) if "%" in user_text else user_text
        if colon:
            password = _unescape(password_text)
    rest, _, headers = rest.partition("?")
    hostport, semicolon, param_text = rest.partition(";")
    host, port = parse_hostport(hostport)
    return SipUri(
        scheme=scheme,
        user=user,
        password=password,
        host=host,
        port=port,
        params=parse_params(param_text, after_semicolon=bool(semicolon)),
        headers=headers or None,
        raw=raw,
    )
