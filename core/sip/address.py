"""name-addr / addr-spec values: From, To, Contact, Route, Record-Route (RFC 3261 §20.10, §25.1).

`"Alice" <sip:alice@pbx.test;transport=tcp>;tag=1928` and `sip:alice@pbx.test;tag=1928` are
different things: without angle brackets the parameters belong to the header, not the URI.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Final

from core.sip.bounded import make_room
from core.sip.errors import SipParseError
from core.sip.fields import parse_delta_seconds, read_quoted
from core.sip.uri import Uri, format_params, params_hash, parse_params, parse_uri


@dataclass(slots=True, init=False)
class NameAddr:
    # Built for every request, several times over: the __init__ is written out because a
    # frozen dataclass's generated one costs ten times as much per object (measured compiled,
    # 690 ns against 70). Shared through the header cache, so never changed once built.
    uri: Uri
    display_name: str | None
    params: dict[str, str | None]
    raw: str | None = field(compare=False, repr=False)

    def __init__(
        self,
        uri: Uri,
        display_name: str | None = None,
        params: dict[str, str | None] | None = None,
        raw: str | None = None,
    ) -> None:
        self.uri = uri
        self.display_name = display_name
        self.params = {} if params is None else params
        self.raw = raw

    def __str__(self) -> str:
        if self.raw is not None:
            return self.raw
        display = f'"{_escape_quoted(self.display_name)}" ' if self.display_name else ""
        return f"{display}<{self.uri}>{format_params(self.params)}"

    def __hash__(self) -> int:
        return hash((self.uri, self.display_name)) ^ params_hash(self.params)

    @property
    def tag(self) -> str | None:
        return self.params.get("tag")

    @property
    def expires(self) -> int | None:
        """A Contact's `expires` parameter in seconds (RFC 3261 §10.2.1.1), or None if absent.

        Values past 2**32-1 mean 2**32-1, as for the Expires header (§20.19); anything that is
        not delta-seconds raises SipParseError.
        """
        value = self.params.get("expires")
        if value is None:
            return None
        return parse_delta_seconds(value, "Bad Contact expires")

    def param(self, name: str) -> str | None:
        return self.params.get(name.lower())

    def with_params(self, **params: str | None) -> NameAddr:
        merged = dict(self.params)
        merged.update(params)
        return NameAddr(uri=self.uri, display_name=self.display_name, params=merged)


def _escape_quoted(text: str) -> str:
    return text.replace("\\", "\\\\").replace('"', '\\"')


def parse_name_addr(text: str) -> NameAddr:
    """Parse a From/To/Contact/Route element; malformed → SipParseError.

    The display name is a quoted-string, unquoted tokens, or nothing (`caller<sip:...>` is
    fine, RFC 4475 §3.1.1.6). A `<` is only the start of a name-addr when what comes before
    it could be a display name: in `sip:a@b;p="<x>"` it sits in a parameter of an addr-spec.
    """
    raw = text.strip()
    if not raw:
        raise SipParseError("Empty address")
    common = common_name_addr(raw)
    if common is not None:
        return common
    return _any_name_addr(raw)


def _any_name_addr(raw: str) -> NameAddr:
    """Any name-addr or addr-spec, `raw` stripped and not empty."""
    display: str | None = None
    rest = raw
    if raw[0] == '"':
        display, end = read_quoted(raw, 0)
        rest = raw[end:].lstrip()
        if not rest.startswith("<"):
            raise SipParseError("Bad name-addr")
    else:
        lt = raw.find("<")
        if lt > 0 and not _is_display_prefix(raw[:lt]):
            lt = -1
        if lt >= 0:
            display = raw[:lt].strip() or None
            rest = raw[lt:]
    if rest[0] == "<":
        gt = rest.find(">")
        if gt < 0:
            raise SipParseError("Missing '>' in address")
        uri = parse_uri(rest[1:gt].strip())
        tail = rest[gt + 1 :].strip()
        if tail and tail[0] != ";":
            raise SipParseError("Bad address parameters")
        params = parse_params(tail[1:], after_semicolon=True) if tail else {}
    else:
        # addr-spec: the URI ends at the first ';' and what follows are header params (§20).
        uri_text, semicolon, param_text = rest.partition(";")
        if "?" in uri_text or "," in uri_text:
            raise SipParseError("Bad addr-spec")
        uri = parse_uri(uri_text.strip())
        params = parse_params(param_text, after_semicolon=bool(semicolon))
    return NameAddr(uri=uri, display_name=display, params=params, raw=raw)


# The `<uri>` or `"Name" <uri>` part of common-shaped values already read, by its text up to
# and including the `>`: the URI parsed and the display name. Phones send the same From and To
# addresses (and Contact) request after request, differing only in the tag, so a value whose
# part before the first `>` is known skips the reading of that part (finds, slices, the URI
# look-up). Only parts that `common_name_addr` read in full are kept, and only those whose
# `>` is the first in the value (a quoted name holding `>` is read the long way each time),
# so a hit stands for exactly what that reading would make of the same text. Bounded.
#
# A value that is that part alone (To and Contact, most often) is answered with the kept
# NameAddr itself: equal to a fresh reading, and shared like any cached view (never changed).
_KNOWN_PARTS: Final[dict[str, NameAddr]] = {}
_KNOWN_PARTS_LIMIT: Final = 4_096
_KNOWN_PART_LENGTH: Final = 200


def common_name_addr(raw: str) -> NameAddr | None:
    """`<uri>` or `"Name" <uri>` with no parameters, or `tag=` alone, read with a few finds
    (what phones send in From, To and Contact); None for any other shape, which
    `_any_name_addr` then reads: where this one answers (or raises), it answers as that one
    would. Public for checks that only need to know a common value is well-formed
    (core/security/sanity.py): they fall back to `parse_name_addr` on None.

    `raw` is stripped and not empty. A quoted name is taken as it stands only when it holds
    no backslash (no quoted-pair to unescape), so its closing quote is the next `"`.
    """
    first = raw.find(">")
    if first < 0:
        return None  # every shape read here has its `>`
    if first < _KNOWN_PART_LENGTH:
        # The whole value when it ends at the `>` (a To or Contact without parameters): a
        # look-up of the value itself, no slice of it.
        whole = first + 1 == len(raw)
        known = _KNOWN_PARTS.get(raw if whole else raw[: first + 1])
        if known is not None:
            if whole:
                return known
            params = _tail_params(raw, first)
            if params is None:
                return None
            return NameAddr(uri=known.uri, display_name=known.display_name, params=params, raw=raw)
    display: str | None = None
    if raw[0] == '"':
        close = raw.find('"', 1)
        if close < 0 or raw.find("\\", 1, close) >= 0:
            return None
        display = raw[1:close]
        lt = raw.find("<", close + 1)
        if lt != close + 1 and (lt != close + 2 or raw[close + 1] != " "):
            return None
    elif raw[0] == "<":
        lt = 0
    else:
        return None
    gt = raw.find(">", lt)
    if gt < 0:
        return None
    params = _tail_params(raw, gt)
    if params is None:
        return None
    uri = parse_uri(raw[lt + 1 : gt].strip())
    if gt == first and first < _KNOWN_PART_LENGTH:
        part = raw if gt + 1 == len(raw) else raw[: gt + 1]
        make_room(_KNOWN_PARTS, _KNOWN_PARTS_LIMIT)
        _KNOWN_PARTS[part] = NameAddr(uri=uri, display_name=display, params={}, raw=part)
    return NameAddr(uri=uri, display_name=display, params=params, raw=raw)


def _tail_params(raw: str, gt: int) -> dict[str, str | None] | None:
    """The parameters after the `>` at `gt` when they are none or `;tag=` alone, else None.

    The tail is empty, or `;tag=` (a bounded find, as a compiled startswith given a start is
    a generic method call) then a value with no `;` and no quote. The value is sliced once and
    searched with `in` (compiled, a direct call, where each find with a start is a generic
    one): `;tag=` itself holds neither character, so this is what finds from `gt + 2` said.
    """
    if gt + 1 == len(raw):
        return {}
    if raw.find(";tag=", gt + 1, gt + 6) == gt + 1:
        tag = raw[gt + 6 :]
        if ";" not in tag and '"' not in tag:
            return {"tag": tag.strip()}  # what parse_params makes of a lone `tag=...`
    return None


def _is_display_prefix(text: str) -> bool:
    """Could `text` (everything before a `<`) be an unquoted display name?

    A display name never holds `;`: when one turns up before the `<`, the text is an
    addr-spec and the `<` sits in a quoted parameter value (`;+sip.instance="<urn:...>"`).
    """
    return ";" not in text


def parse_contacts(values: list[str]) -> list[NameAddr] | None:
    """Contact values → addresses, or None for the wildcard `*` (RFC 3261 §10.2.2).

    `*` must stand alone: mixed with addresses it is malformed.
    """
    for value in values:
        if value.strip() == "*":
            if len(values) != 1:
                raise SipParseError("Contact '*' mixed with addresses")
            return None
    return [parse_name_addr(value) for value in values]
