"""SIP, SIPS and tel URIs (RFC 3261 §19.1, RFC 3966), parsed once and printed back as received.

A parsed URI keeps its original text, so a proxy forwards exactly what it got; `replace()`
makes a changed copy that is printed from its parts. User parts are unescaped on parse
(`%40` → `@`) and escaped again when printed from parts.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, field
from urllib.parse import quote, unquote

from core.sip.errors import SipParseError

_HOSTNAME = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9\-]*[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9\-]*[A-Za-z0-9])?)*\.?$")
_TOKEN_CHARS = re.compile(r"^[A-Za-z0-9\-.!%*_+`'~\[\]:/&$]*$")
# user = 1*( unreserved / escaped / user-unreserved ), RFC 3261 §25.1
_USER_SAFE = "-_.!~*'()&=+$,;?/"
_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+\-.]*$")


def format_host(host: str) -> str:
    """A host as it appears in a URI or Via: IPv6 addresses in brackets."""
    return f"[{host}]" if ":" in host else host


def parse_host(text: str) -> str:
    """Validate a host (name, IPv4, or bracketed IPv6); returns it without brackets."""
    if not text:
        raise SipParseError("Empty host")
    if text.startswith("["):
        if not text.endswith("]"):
            raise SipParseError("Bad IPv6 reference")
        inner = text[1:-1]
        try:
            ipaddress.IPv6Address(inner.split("%", 1)[0])
        except ValueError:
            raise SipParseError("Bad IPv6 reference") from None
        return inner
    if not _HOSTNAME.match(text):
        raise SipParseError("Bad host")
    return text


def parse_hostport(text: str) -> tuple[str, int | None]:
    """`host[:port]` with IPv6 references; port 1..65535."""
    if text.startswith("["):
        end = text.find("]")
        if end < 0:
            raise SipParseError("Bad IPv6 reference")
        host = parse_host(text[: end + 1])
        rest = text[end + 1 :]
        if not rest:
            return host, None
        if not rest.startswith(":"):
            raise SipParseError("Bad host:port")
        return host, parse_port(rest[1:])
    host_text, sep, port_text = text.partition(":")
    host = parse_host(host_text)
    return host, (parse_port(port_text) if sep else None)


def parse_port(text: str) -> int:
    if not text.isdigit() or len(text) > 5:
        raise SipParseError("Bad port")
    port = int(text)
    if not 0 < port < 65536:
        raise SipParseError("Bad port")
    return port


def parse_params(text: str) -> dict[str, str | None]:
    """`;a=b;c` (without the leading `;`) → {"a": "b", "c": None}; names lower-cased."""
    params: dict[str, str | None] = {}
    if not text:
        return params
    for part in text.split(";"):
        part = part.strip()
        if not part:
            continue
        name, sep, value = part.partition("=")
        name = name.strip().lower()
        if not name:
            raise SipParseError("Bad parameter")
        params[name] = value.strip() if sep else None
    return params


def format_params(params: dict[str, str | None]) -> str:
    return "".join(f";{name}" if value is None else f";{name}={value}" for name, value in params.items())


@dataclass(frozen=True, slots=True)
class SipUri:
    """sip: or sips: URI. `host` has no brackets; `params` keys are lower case."""

    scheme: str = "sip"
    user: str | None = None
    password: str | None = None
    host: str = ""
    port: int | None = None
    params: dict[str, str | None] = field(default_factory=dict)
    headers: str | None = None  # the part after `?`, kept as text
    raw: str | None = field(default=None, compare=False, repr=False)

    def __str__(self) -> str:
        if self.raw is not None:
            return self.raw
        text = self.scheme + ":"
        if self.user is not None:
            text += quote(self.user, safe=_USER_SAFE)
            if self.password is not None:
                text += ":" + quote(self.password, safe=_USER_SAFE)
            text += "@"
        text += format_host(self.host)
        if self.port is not None:
            text += f":{self.port}"
        text += format_params(self.params)
        if self.headers:
            text += "?" + self.headers
        return text

    def replace(self, **changes: object) -> SipUri:
        """A copy with some parts changed, printed from its parts."""
        values = {
            "scheme": self.scheme,
            "user": self.user,
            "password": self.password,
            "host": self.host,
            "port": self.port,
            "params": dict(self.params),
            "headers": self.headers,
        }
        values.update(changes)
        return SipUri(**values)  # type: ignore[arg-type]

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
        user = "" if self.user is None else quote(self.user, safe=_USER_SAFE) + "@"
        return f"sip:{user}{format_host(self.host).lower()}"


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

    @property
    def user(self) -> str:
        return self.number


@dataclass(frozen=True, slots=True)
class OtherUri:
    """Any other absolute URI (mailto:, http:, urn:): kept as text; a proxy answers 416."""

    scheme: str
    rest: str

    def __str__(self) -> str:
        return f"{self.scheme}:{self.rest}"

    @property
    def user(self) -> None:
        return None


Uri = SipUri | TelUri | OtherUri


def parse_uri(text: str) -> Uri:
    """Parse any URI; a malformed sip:/sips:/tel: URI raises SipParseError."""
    scheme, sep, rest = text.partition(":")
    if not sep or not _SCHEME.match(scheme):
        raise SipParseError("Bad URI")
    lower = scheme.lower()
    if lower in ("sip", "sips"):
        return _parse_sip(lower, rest, text)
    if lower == "tel":
        number, _, params = rest.partition(";")
        if not number or any(c.isspace() for c in number):
            raise SipParseError("Bad tel URI")
        return TelUri(number=number, params=parse_params(params), raw=text)
    if not rest or any(c.isspace() for c in rest):
        raise SipParseError("Bad URI")
    return OtherUri(lower, rest)


def _parse_sip(scheme: str, rest: str, raw: str) -> SipUri:
    if not rest or any(c in rest for c in " \t\r\n<>\""):
        raise SipParseError("Bad SIP URI")
    rest, _, headers = rest.partition("?")
    user: str | None = None
    password: str | None = None
    at = rest.rfind("@")
    if at >= 0:
        userinfo, rest = rest[:at], rest[at + 1 :]
        user_text, colon, password_text = userinfo.partition(":")
        if not user_text:
            raise SipParseError("Bad SIP URI user")
        try:
            user = unquote(user_text, errors="strict")
            password = unquote(password_text, errors="strict") if colon else None
        except UnicodeDecodeError:
            raise SipParseError("Bad SIP URI user") from None
    hostport, _, param_text = rest.partition(";")
    host, port = parse_hostport(hostport)
    return SipUri(
        scheme=scheme,
        user=user,
        password=password,
        host=host,
        port=port,
        params=parse_params(param_text),
        headers=headers or None,
        raw=raw,
    )
