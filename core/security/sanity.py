"""Is this request well-formed enough to act on? Kamailio's sanity module, check by check.

The parser (core/sip/parser.py) has already rejected a bad request line, an unsupported SIP
version, malformed header lines, a bad or conflicting Content-Length and a body shorter than
it. What is left is whether the headers a request needs are present and make sense, which is
this module. Kamailio's check numbers, for readers who know `sanity_check("17895", "7")`:

| Kamailio check             | here                                                          |
|----------------------------|---------------------------------------------------------------|
| 1 R-URI SIP version        | parser (505)                                                  |
| 2 R-URI scheme             | sip/sips/tel accepted, any other scheme → 416                 |
| 4 required headers         | Via, From, To, Call-ID, CSeq → 400 "Missing From", ...        |
|                            | (no Via: dropped, as no response could be routed)             |
| 32 CSeq method             | equal to the request method, ACK and CANCEL included          |
|                            | (RFC 3261 §17.1.1.3, §9.1) → 400 "Bad CSeq method"            |
| 64 CSeq value              | 32-bit unsigned (§20.16; the parser) → 400 "Bad CSeq number"  |
| 128 Content-Length         | parser; here: present on TCP (§20.14, §18.3)                  |
| 256 Expires value          | delta-seconds → 400 "Bad Expires"                             |
| 512 Proxy-Require          | we support no proxy extensions → 420 with Unsupported         |
|                            | (§16.3 step 5); not for ACK/CANCEL, where it is ignored       |
| 1024 parse URIs            | R-URI (parser), From, To, Contact → 400 "Bad From header", ...|
|                            | R-URI without headers or broken escapes, Route entries parse  |
|                            | (RFC 4475 §3.1.2.11, §3.1.2.15) → 400 before any challenge    |
| 4096 duplicated tags       | 400 "Duplicate From tag" / "Duplicate To tag"                 |
| 16384 first Via            | every Via parses, top one is SIP/2.0 and has a branch         |
|                            | (§8.1.1.7) → 400 "Bad Via" / "Missing Via branch"             |
| 2048/8192 digest           | not here: the auth step parses credentials once and answers   |
|                            | malformed ones itself, rather than parsing them twice         |

Beyond Kamailio: single-valued headers may appear once (§7.3.1: only list headers repeat),
Call-ID must be one word (§25.1), and From must carry a tag (§8.1.1.3). The tag rule applies
to every request: ACK and CANCEL copy From from their INVITE, which needed the tag too. Only
RFC 2543 equipment omits it, and such an INVITE is refused here before it can start anything
an ACK or CANCEL would refer to.

Max-Forwards is checked first (`check_max_forwards`): missing is fixed, not refused.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Final

from core.sip import OtherUri, Request, SipParseError, SipUri
from core.sip.address import NameAddr, common_name_addr
from core.sip.fields import is_token
from core.sip.headers import split_list

_BAD_ESCAPE = re.compile(r"%(?![0-9A-Fa-f]{2})")

DEFAULT_MAX_FORWARDS = 70  # RFC 3261 §16.6 step 3, §8.1.1.6

# Headers that hold one value (RFC 3261 §7.3.1): a second line makes the request ambiguous.
# Keyed by every spelling, compact forms included (§7.3.3), lower case.
_SINGLE_VALUED: dict[str, str] = {
    "call-id": "Call-ID",
    "i": "Call-ID",
    "cseq": "CSeq",
    "from": "From",
    "f": "From",
    "to": "To",
    "t": "To",
    "max-forwards": "Max-Forwards",
    "expires": "Expires",
}
# What `check_request` needs to know of the header names, gathered in one walk over the
# lookup keys (one dict look-up per line instead of building a set of them): which optional
# headers are present, and whether a single-valued one repeats. Each single-valued header has
# its own bit, shared by its compact form, so a repeat is a bit already seen.
_ROUTE: Final = 1
_CONTENT_LENGTH: Final = 2
_PROXY_REQUIRE: Final = 4
_EXPIRES: Final = 8
_SINGLE_BITS: Final = 8 | 16 | 32 | 64 | 128 | 256  # Expires and the five below
_NAME_BITS: Final[dict[str, int]] = {
    "route": _ROUTE,
    "content-length": _CONTENT_LENGTH,
    "proxy-require": _PROXY_REQUIRE,
    "expires": _EXPIRES,
    "call-id": 16,
    "i": 16,
    "cseq": 32,
    "from": 64,
    "f": 64,
    "to": 128,
    "t": 128,
    "max-forwards": 256,
}
# Methods whose route reads the parsed Contact list (the registrar; a new call's media
# decision): for them the check parses it through the cached view. Any other method's Contact
# is only checked to be well-formed, which for one common-shaped value needs no list or view.
_CONTACTS_READ: Final = ("REGISTER", "INVITE")
# Max-Forwards as nearly every phone sends it: known good without parsing (§8.1.1.6).
_USUAL_MAX_FORWARDS: Final = "70"
# Proxy-Require option tags this server implements as a proxy: none.
SUPPORTED_PROXY_EXTENSIONS: frozenset[str] = frozenset()


@dataclass(frozen=True, slots=True)
class SanityFailure:
    """Why a request is refused: the status, reason phrase and extra headers to answer with.

    The caller drops instead of answering when the request is an ACK, or has no Via that a
    response could be routed by (RFC 3261 §8.2.6.2, §18.2.2).
    """

    status: int
    reason: str
    headers: tuple[tuple[str, str], ...] = ()


def check_max_forwards(request: Request) -> SanityFailure | None:
    """RFC 3261 §16.3 step 3: refuse at 0 with 483; add `Max-Forwards: 70` when missing.

    An OPTIONS at 0 also gets 483. §16.3 lets a proxy answer it as the final recipient
    instead (a MAY), but 483 is always correct and is what Kamailio does.

    The usual `70` is seen to be fine as text: a request answered here never reads the
    number, and one forwarded parses it where it decrements it.
    """
    if request.headers.get("max-forwards") == _USUAL_MAX_FORWARDS:
        return None
    try:
        hops = request.max_forwards
    except SipParseError:
        return SanityFailure(400, "Bad Max-Forwards")
    if hops is None:
        request.headers.add("Max-Forwards", str(DEFAULT_MAX_FORWARDS))
        return None
    if hops == 0:
        return SanityFailure(483, "Too Many Hops")
    return None


def check_request(request: Request, *, reliable: bool) -> SanityFailure | None:
    """The first thing wrong with `request`, or None. `reliable`: it came over TCP/TLS.

    Presence is asked of the typed views (cached: the route reads the same ones later), so
    a good request costs each header one parse. The header names are walked once: checks
    of a header the request does not carry (Route, Expires, Proxy-Require, most often) are
    skipped without scanning the header list for it, and the single-valued headers are only
    listed when one of them repeats.
    """
    if isinstance(request.uri, OtherUri):
        return SanityFailure(416, "Unsupported URI Scheme")
    keys = request.headers.lookup_keys()
    seen = 0
    repeated = 0
    for key in keys:
        bit = _NAME_BITS.get(key, 0)
        repeated |= bit & seen
        seen |= bit
    failure = (
        _request_uri(request)
        or _vias(request)
        or _addresses(request)
        or (_routes(request) if seen & _ROUTE else None)
        or _call_id(request)
        or _cseq(request)
        or (_single_valued_headers(keys) if repeated & _SINGLE_BITS else None)
        or (_expires(request) if seen & _EXPIRES else None)
    )
    if failure is not None:
        return failure
    if reliable and not seen & _CONTENT_LENGTH:
        # §18.3 / §20.14: on a stream the length is the only framing, so it MUST be present.
        return SanityFailure(400, "Missing Content-Length")
    return _proxy_require(request) if seen & _PROXY_REQUIRE else None


def _request_uri(request: Request) -> SanityFailure | None:
    """RFC 3261 §19.1.1's table: a Request-URI carries no headers (RFC 4475 §3.1.2.11);
    its user and password are written with well-formed escapes (§25.1 `escaped`)."""
    uri = request.uri
    if not isinstance(uri, SipUri):
        return None
    if uri.headers is not None:
        return SanityFailure(400, "Bad Request-URI")
    for part in (uri.user, uri.password):
        if part is not None and "%" in part and _BAD_ESCAPE.search(part):
            return SanityFailure(400, "Bad Request-URI")
    return None


def _routes(request: Request) -> SanityFailure | None:
    """Route is read by loose routing (§16.4) before any challenge: it must parse."""
    try:
        request.routes  # noqa: B018 - parsing is the check; the proxy reads the cached view
    except SipParseError:
        return SanityFailure(400, "Bad Route header")
    return None


def _display_name_ok(address: NameAddr) -> bool:
    """An unquoted display name is tokens and blanks only (§25.1 `display-name`); a comma
    or other separator outside quotes is RFC 4475 §3.1.2.15's malformed From."""
    raw = address.raw or ""
    if not raw or raw[0] == "<" or raw[0] == '"':
        return True  # no display name, or a quoted one: what the reading below concludes
    cut = raw.find("<")
    if cut <= 0:
        return True
    display = raw[:cut].strip()
    if not display or display.startswith('"'):
        return True
    # Non-ASCII letters unquoted are let through: phones do send them, and they are no
    # separator a parser could misread.
    return all(is_token(word) or not word.isascii() for word in display.split())


def _single_valued_headers(keys: list[str]) -> SanityFailure | None:
    """`keys`: the stored lookup keys, already lower case with compact forms expanded. Only
    asked when some name repeats (a second Via or Route line, most often)."""
    seen: set[str] = set()
    for key in keys:
        single = _SINGLE_VALUED.get(key)
        if single is not None:
            if single in seen:
                return SanityFailure(400, f"Duplicate {single} header")
            seen.add(single)
    return None


def _cseq(request: Request) -> SanityFailure | None:
    try:
        cseq = request.cseq
    except SipParseError as error:
        return SanityFailure(400, error.reason)
    if cseq is None:
        return SanityFailure(400, "Missing CSeq")
    # §8.1.1.5 (method), §17.1.1.3 (ACK), §9.1 (CANCEL): always the request's own method,
    # compared case-sensitively like the method itself (§7.1).
    if cseq.method != request.method:
        return SanityFailure(400, "Bad CSeq method")
    return None


def _call_id(request: Request) -> SanityFailure | None:
    call_id = request.call_id
    if call_id is None:
        return SanityFailure(400, "Missing Call-ID")
    # callid = word [ "@" word ] (§25.1): one word, never blank or spaced (the parser has
    # stripped the ends and a header line holds no CR or LF, so only inner blanks remain).
    if not call_id or " " in call_id or "\t" in call_id:
        return SanityFailure(400, "Bad Call-ID")
    return None


def _vias(request: Request) -> SanityFailure | None:
    try:
        top = request.top_via
    except SipParseError:
        return SanityFailure(400, "Bad Via")
    if top is None:
        return SanityFailure(400, "Missing Via")
    if top.protocol.upper() != "SIP/2.0":
        return SanityFailure(400, "Bad Via protocol")
    if not top.branch:
        return SanityFailure(400, "Missing Via branch")
    return None


def _addresses(request: Request) -> SanityFailure | None:
    try:
        sender = request.from_addr
    except SipParseError:
        return SanityFailure(400, "Bad From header")
    if sender is None:
        return SanityFailure(400, "Missing From")
    try:
        recipient = request.to_addr
    except SipParseError:
        return SanityFailure(400, "Bad To header")
    if recipient is None:
        return SanityFailure(400, "Missing To")
    if not _display_name_ok(sender):
        return SanityFailure(400, "Bad From header")
    if not _display_name_ok(recipient):
        return SanityFailure(400, "Bad To header")
    if not sender.tag:
        return SanityFailure(400, "Missing From tag")
    # §7.3.1: a parameter name appears at most once; the parsed view would keep just one tag.
    if _has_duplicate_tag(sender.raw or ""):
        return SanityFailure(400, "Duplicate From tag")
    if _has_duplicate_tag(recipient.raw or ""):
        return SanityFailure(400, "Duplicate To tag")
    return _contacts(request)


def _contacts(request: Request) -> SanityFailure | None:
    """Contact parses, and is no `*` outside a REGISTER (§10.2.2: "all my bindings")."""
    if request.method not in _CONTACTS_READ:
        common = _common_contact(request)
        if common is not None:
            return None if common else SanityFailure(400, "Bad Contact")
    try:
        contacts = request.contacts
    except SipParseError:
        return SanityFailure(400, "Bad Contact")
    if contacts is None and request.method != "REGISTER":
        return SanityFailure(400, "Bad Contact")
    return None


def _common_contact(request: Request) -> bool | None:
    """Is the Contact well-formed, decided without building the parsed list: for one line
    holding one address of a common shape (what `request.contacts` would read as a list of
    exactly that address). None for anything else, which the full reading then decides."""
    values = request.headers.get_all("contact")
    if len(values) != 1:
        return None
    value = values[0]
    if "," in value:
        return None  # a list, or a comma in a quote or URI: Headers.values splits it
    text = value.strip()
    if not text or text == "*":
        return None
    try:
        return True if common_name_addr(text) is not None else None
    except SipParseError:
        return False


def _has_duplicate_tag(address: str) -> bool:
    """Does a From/To value carry `tag` twice among its header (not URI) parameters?"""
    # Fewer than two `;` where the header parameters are (after the `>` of a name-addr, after
    # the first `;` of an addr-spec) leave room for one parameter at most: decided by counting
    # in place, without the lower-cased copy below.
    end_of_uri = address.rfind(">")
    if end_of_uri >= 0:
        if address.count(";", end_of_uri + 1) < 2:
            return False
    else:
        first = address.find(";")
        if first < 0 or address.find(";", first + 1) < 0:
            return False
    if address.lower().count("tag") < 2:
        return False  # the common case, decided without splitting anything
    end_of_uri = address.rfind(">")
    if end_of_uri >= 0:
        header_params = address[end_of_uri + 1 :]  # name-addr: after the <URI>
    else:
        header_params = address.partition(";")[2]  # addr-spec: after the first ';'
        header_params = ";" + header_params if header_params else ""
    tags = sum(
        1
        for param in header_params.split(";")[1:]
        if param.partition("=")[0].strip().lower() == "tag"
    )
    return tags > 1


def _expires(request: Request) -> SanityFailure | None:
    try:
        request.expires  # noqa: B018 - parsing is the check
    except SipParseError:
        return SanityFailure(400, "Bad Expires")
    return None


def _proxy_require(request: Request) -> SanityFailure | None:
    # §8.2.2.3: Require/Proxy-Require are ignored in CANCEL and in an ACK for a non-2xx.
    if request.method in ("ACK", "CANCEL"):
        return None
    values = request.headers.get_all("proxy-require")
    if not values:
        return None
    unsupported = [
        tag
        for value in values
        for tag in split_list(value)
        if tag.lower() not in SUPPORTED_PROXY_EXTENSIONS
    ]
    if not unsupported:
        return None
    return SanityFailure(420, "Bad Extension", headers=(("Unsupported", ", ".join(unsupported)),))
