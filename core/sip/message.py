"""SIP requests and responses (RFC 3261 §7) and building a response from a request (§8.2.6).

A message is its start line, a `Headers` store and a body of bytes. Typed views (`vias`,
`cseq`, `from_addr`, ...) parse on first use and are cached by the header store, so the route
can ask for them as often as it likes. Every view raises only SipParseError.
"""

from __future__ import annotations

from typing import Final

from core.sip.address import NameAddr, parse_contacts, parse_name_addr
from core.sip.entropy import random_hex
from core.sip.errors import SipParseError
from core.sip.fields import (
    CSeq,
    Via,
    parse_cseq,
    parse_expires,
    parse_max_forwards,
    parse_via,
)
from core.sip.headers import _MISSING, Headers, check_line, column_headers, header_key
from core.sip.uri import Uri

REASON_PHRASES: dict[int, str] = {
    100: "Trying",
    180: "Ringing",
    181: "Call Is Being Forwarded",
    182: "Queued",
    183: "Session Progress",
    200: "OK",
    202: "Accepted",
    301: "Moved Permanently",
    302: "Moved Temporarily",
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    407: "Proxy Authentication Required",
    408: "Request Timeout",
    410: "Gone",
    413: "Request Entity Too Large",
    414: "Request-URI Too Long",
    415: "Unsupported Media Type",
    416: "Unsupported URI Scheme",
    420: "Bad Extension",
    423: "Interval Too Brief",
    480: "Temporarily Unavailable",
    481: "Call/Transaction Does Not Exist",
    482: "Loop Detected",
    483: "Too Many Hops",
    484: "Address Incomplete",
    486: "Busy Here",
    487: "Request Terminated",
    488: "Not Acceptable Here",
    491: "Request Pending",
    500: "Server Internal Error",
    501: "Not Implemented",
    502: "Bad Gateway",
    503: "Service Unavailable",
    504: "Server Time-out",
    505: "Version Not Supported",
    513: "Message Too Large",
    600: "Busy Everywhere",
    603: "Decline",
    604: "Does Not Exist Anywhere",
    606: "Not Acceptable",
}


# The OS's random bytes, read in blocks (core/sip/entropy.py): a system call per tag or
# branch cost more than everything else in making one.
def new_tag() -> str:
    return random_hex(6)


def new_branch() -> str:
    return "z9hG4bK" + random_hex(8)


class Message:
    """What requests and responses share: headers, body, and typed views of common headers."""

    __slots__ = ("body", "headers")

    def __init__(self, headers: Headers, body: bytes = b"") -> None:
        self.headers = headers
        self.body = body

    # -- typed views ---------------------------------------------------------------------
    # Each view is cached by the header store, as Headers.view would cache it, but reached
    # without it: compiled, `view` calls the parser it is given generically (and a lambda is
    # a closure object built per call), where these call theirs directly. The views every
    # request reads (Via, CSeq, From, To, Max-Forwards) have an attribute of their own in
    # the store (Headers.via_view, ...; _MISSING until parsed, None for a header absent),
    # so a hit is one attribute read; the others go through keep_view's dict.
    @property
    def call_id(self) -> str | None:
        return self.headers.get("call-id")

    @property
    def cseq(self) -> CSeq | None:
        headers = self.headers
        cached = headers.cseq_view
        if cached is not _MISSING:
            return cached  # type: ignore[no-any-return]
        value = headers.get("cseq")
        cseq = None if value is None else parse_cseq(value)
        headers.cseq_view = cseq
        return cseq

    @property
    def vias(self) -> list[Via]:
        """Every Via element, across lines and commas; the view caches the whole list.

        Each call returns a fresh list, so a caller popping the top Via cannot corrupt the
        cache; the Via objects themselves are frozen and shared.
        """
        vias = self._cached_vias()
        return list(vias) if vias else []

    def _cached_vias(self) -> list[Via] | None:
        """The cached Via list itself (not a copy): only for reading."""
        headers = self.headers
        cached = headers.via_view
        if cached is not _MISSING:
            return cached  # type: ignore[no-any-return]
        return _parse_vias(headers)

    @property
    def top_via(self) -> Via | None:
        # Read from the cached list: the route asks for the top Via several times a request,
        # and copying the whole list each time only to take its first element is waste.
        vias = self._cached_vias()
        return vias[0] if vias else None

    @property
    def routes(self) -> tuple[NameAddr, ...]:
        """Every Route element parsed, top first, across lines and commas; () when there is
        none. Cached: sanity checks that they parse and loose routing then reads the same
        ones, so each is parsed once per message. A bad one raises SipParseError (each ask)."""
        headers = self.headers
        cached = headers.cached_view("route")
        if cached is not None:
            return cached  # type: ignore[no-any-return]
        if headers.get("route") is None:
            headers.keep_view("route", None)
            return ()
        routes = tuple([parse_name_addr(value) for value in headers.values("route")])
        headers.keep_view("route", routes)
        return routes

    @property
    def from_addr(self) -> NameAddr | None:
        headers = self.headers
        cached = headers.from_view
        if cached is not _MISSING:
            return cached  # type: ignore[no-any-return]
        value = headers.get("from")
        address = None if value is None else parse_name_addr(value)
        headers.from_view = address
        return address

    @property
    def to_addr(self) -> NameAddr | None:
        headers = self.headers
        cached = headers.to_view
        if cached is not _MISSING:
            return cached  # type: ignore[no-any-return]
        value = headers.get("to")
        address = None if value is None else parse_name_addr(value)
        headers.to_view = address
        return address

    @property
    def from_tag(self) -> str | None:
        address = self.from_addr
        return address.tag if address else None

    @property
    def to_tag(self) -> str | None:
        address = self.to_addr
        return address.tag if address else None

    @property
    def contacts(self) -> list[NameAddr] | None:
        """Contact addresses; None for `Contact: *`; [] when there is none.

        Cached like the other views (wrapped in a tuple, as None means the wildcard here).
        """
        headers = self.headers
        cached: tuple[list[NameAddr] | None] | None = headers.cached_view("contact")
        if cached is None:
            # One walk of the lines (`values`), not a `get` first to see whether there is any:
            # no element at all reads as [] either way.
            values = headers.values("contact")
            if not values:
                headers.keep_view("contact", None)
                return []
            cached = (parse_contacts(values),)
            headers.keep_view("contact", cached)
        contacts = cached[0]
        return None if contacts is None else list(contacts)

    @property
    def expires(self) -> int | None:
        headers = self.headers
        cached = headers.cached_view("expires")
        if cached is not None:
            return cached  # type: ignore[no-any-return]
        value = headers.get("expires")
        expires = None if value is None else parse_expires(value)
        headers.keep_view("expires", expires)
        return expires

    @property
    def max_forwards(self) -> int | None:
        headers = self.headers
        cached = headers.max_forwards_view
        if cached is not _MISSING:
            return cached  # type: ignore[no-any-return]
        value = headers.get("max-forwards")
        hops = None if value is None else parse_max_forwards(value)
        headers.max_forwards_view = hops
        return hops

    @property
    def user_agent(self) -> str | None:
        return self.headers.get("user-agent")

    def start_line(self) -> str:
        raise NotImplementedError

    def to_bytes(self) -> bytes:
        """Serialise; Content-Length always states the body actually sent (§20.14).

        A message that already says the right length keeps its line as it was (`l: 0` stays
        compact); otherwise one Content-Length line replaces whatever was there.
        """
        headers = self.headers
        body = self.body
        headers.state_length(str(len(body)))
        head = headers.head(self.start_line()).encode("utf-8", "surrogateescape")
        return head + body if body else head


def _parse_vias(headers: Headers) -> list[Via] | None:
    """Every Via element parsed, cached in `headers`; None (cached too) when there is none."""
    items = headers.values("via")
    if not items and headers.get("via") is None:
        headers.via_view = None
        return None
    vias = [parse_via(item) for item in items]
    headers.via_view = vias
    return vias


class Request(Message):
    __slots__ = ("method", "uri", "version")

    def __init__(
        self,
        method: str,
        uri: Uri,
        headers: Headers | None = None,
        body: bytes = b"",
        version: str = "SIP/2.0",
    ) -> None:
        super().__init__(headers if headers is not None else Headers(), body)
        self.method = method
        self.uri = uri
        self.version = version

    def start_line(self) -> str:
        return f"{self.method} {self.uri} {self.version}"

    def __repr__(self) -> str:
        return f"<Request {self.method} {self.uri} call-id={self.call_id!r}>"

    @property
    def is_initial(self) -> bool:
        """Out of dialog: no To-tag (RFC 3261 §12.2 vs §8.1)."""
        return self.to_tag is None


class Response(Message):
    __slots__ = ("reason", "status", "version")

    def __init__(
        self,
        status: int,
        reason: str | None = None,
        headers: Headers | None = None,
        body: bytes = b"",
        version: str = "SIP/2.0",
    ) -> None:
        super().__init__(headers if headers is not None else Headers(), body)
        self.status = status
        self.reason = reason if reason is not None else REASON_PHRASES.get(status, "Unknown")
        self.version = version

    def start_line(self) -> str:
        return f"{self.version} {self.status} {self.reason}"

    def __repr__(self) -> str:
        return f"<Response {self.status} {self.reason} call-id={self.call_id!r}>"

    @property
    def is_provisional(self) -> bool:
        return self.status < 200

    @property
    def is_final(self) -> bool:
        return self.status >= 200


def make_response(
    request: Request,
    status: int,
    reason: str | None = None,
    *,
    to_tag: str | None = None,
    extra: list[tuple[str, str]] | None = None,
    body: bytes = b"",
    keyed: list[tuple[str, str, str]] | None = None,
) -> Response:
    """A response to `request` as a UAS builds it (RFC 3261 §8.2.6).

    Via (all of them, in order), From, Call-ID and CSeq are copied; To too, with `to_tag`
    added unless the request already had a To-tag or the response is 100 Trying (§8.2.6.2).
    A 100 Trying also copies Timestamp (§8.2.6.1). Header values are copied as text, so a
    request with a malformed (but present) header can still be answered with a 400.
    `keyed`: lines of our own, already checked and keyed (`keyed_lines`), added before `extra`.
    """
    # The copied values come from a Headers store, which never holds a CR or LF, and the
    # names are fixed: the lines are built keyed, skipping add()'s check and key lookup.
    source = request.headers
    vias = source.get_all("via")
    keys = ["via"] * len(vias)
    names = ["Via"] * len(vias)
    values = vias
    from_value = source.get("from")
    if from_value is not None:
        keys.append("from")
        names.append("From")
        values.append(from_value)
    to_value = source.get("to")
    if to_value is not None:
        keys.append("to")
        names.append("To")
        values.append(_tagged_to(request, to_value, status, to_tag))
    call_id = source.get("call-id")
    if call_id is not None:
        keys.append("call-id")
        names.append("Call-ID")
        values.append(call_id)
    cseq = source.get("cseq")
    if cseq is not None:
        keys.append("cseq")
        names.append("CSeq")
        values.append(cseq)
    if status == 100:
        timestamp = source.get("timestamp")
        if timestamp is not None:
            keys.append("timestamp")
            names.append("Timestamp")
            values.append(timestamp)
    if keyed:
        for key, name, value in keyed:
            keys.append(key)
            names.append(name)
            values.append(value)
    headers = column_headers(keys, names, values)
    if extra:
        for name, value in extra:
            headers.add(name, value)
    return Response(status, reason, headers, body)


def _tagged_to(request: Request, to_value: str, status: int, to_tag: str | None) -> str:
    """The To of a response: `to_tag` added unless the request had one or this is a 100."""
    if to_tag and status > 100 and not _has_tag(request):
        # A malformed To (being answered with a 400) may end in ';': don't make it ';;'.
        to_value = f"{to_value.rstrip(' ;')};tag={to_tag}"
        check_line("To", to_value)  # the tag is the caller's text
    return to_value


def answer_tail(keyed: list[tuple[str, str, str]]) -> str:
    """The end of a bodiless answer after the copied headers: `keyed` (our own lines, from
    `keyed_lines`), Content-Length and the blank line, exactly as `to_bytes` would write
    them after `make_response(keyed=keyed)`. Built once per distinct `keyed`."""
    headers = Headers._from_keyed(list(keyed))
    headers.state_length("0")
    return headers.serialise() + "\r\n"


def response_bytes(
    request: Request, status: int, reason: str | None, to_tag: str | None, tail: str
) -> bytes:
    """`make_response(request, status, reason, to_tag=to_tag, keyed=keyed).to_bytes()` for a
    bodiless answer, `tail` being `answer_tail(keyed)`: the same bytes, written straight from
    the request's header values without building a Headers store or a Response."""
    source = request.headers
    # One walk over the store's own keys and values (not a get() per header, each walking
    # the keys again): the lines copied, the first of each but every Via.
    keys = source._keys
    values = source._values
    via: str | None = None
    vias = 0
    from_value: str | None = None
    to_value: str | None = None
    call_id: str | None = None
    cseq: str | None = None
    for index, key in enumerate(keys):
        # By length first: most lines (Contact, Max-Forwards, User-Agent, ...) are then
        # passed over without a string compare.
        size = len(key)
        if size == 3:
            if key == "via":
                vias += 1
                if via is None:
                    via = values[index]
        elif size == 4:
            if key == "from":
                if from_value is None:
                    from_value = values[index]
            elif key == "cseq" and cseq is None:
                cseq = values[index]
        elif size == 2:
            if key == "to" and to_value is None:
                to_value = values[index]
        elif size == 7 and key == "call-id" and call_id is None:
            call_id = values[index]
    if (
        vias == 1
        and via is not None
        and from_value is not None
        and to_value is not None
        and call_id is not None
        and cseq is not None
        and status != 100
    ):
        # What nearly every request gives: written in one piece, the status line and the
        # Via name pre-printed per status, the To-tag written in place (`_tagged_to`).
        if reason is None:
            head = _STATUS_HEADS.get(status)
            if head is None:
                head = f"SIP/2.0 {status} {REASON_PHRASES.get(status, 'Unknown')}\r\nVia: "
                if len(_STATUS_HEADS) < _STATUS_HEADS_LIMIT:
                    _STATUS_HEADS[status] = head
        else:
            head = f"SIP/2.0 {status} {reason}\r\nVia: "
        tag_part = ""
        tag = ""
        if to_tag and status > 100 and not _has_tag(request):
            if "\r" in to_tag or "\n" in to_tag:
                # A stored value holds no CR or LF: only the tag (the caller's text) can.
                check_line("To", f"{to_value};tag={to_tag}")
            to_value = to_value.rstrip(" ;")
            tag_part = ";tag="
            tag = to_tag
        text = (
            f"{head}{via}\r\nFrom: {from_value}\r\nTo: {to_value}{tag_part}{tag}\r\n"
            f"Call-ID: {call_id}\r\nCSeq: {cseq}\r\n{tail}"
        )
    else:
        text = _response_text(request, status, reason, to_tag, tail)
    try:
        # Strict UTF-8, the encoder's shortest way in; a lone surrogate (a byte of the
        # request that was not UTF-8) takes the general one.
        return text.encode()
    except UnicodeEncodeError:
        return text.encode("utf-8", "surrogateescape")


# The status line and Via name of `response_bytes`, per status answered with its standard
# reason phrase: a handful of statuses in practice, bounded as the status is the caller's.
_STATUS_HEADS: Final[dict[int, str]] = {}
_STATUS_HEADS_LIMIT: Final = 64


def _response_text(
    request: Request, status: int, reason: str | None, to_tag: str | None, tail: str
) -> str:
    """`response_bytes` as text, for any request: several Vias, a missing line, a 100."""
    source = request.headers
    if reason is None:
        reason = REASON_PHRASES.get(status, "Unknown")
    parts = [f"SIP/2.0 {status} {reason}\r\n"]
    for value in source.get_all("via"):
        parts.append(f"Via: {value}\r\n")
    from_value = source.get("from")
    if from_value is not None:
        parts.append(f"From: {from_value}\r\n")
    to_value = source.get("to")
    if to_value is not None:
        parts.append(f"To: {_tagged_to(request, to_value, status, to_tag)}\r\n")
    call_id = source.get("call-id")
    if call_id is not None:
        parts.append(f"Call-ID: {call_id}\r\n")
    cseq = source.get("cseq")
    if cseq is not None:
        parts.append(f"CSeq: {cseq}\r\n")
    if status == 100:
        timestamp = source.get("timestamp")
        if timestamp is not None:
            parts.append(f"Timestamp: {timestamp}\r\n")
    parts.append(tail)
    return "".join(parts)


def keyed_lines(extra: list[tuple[str, str]]) -> list[tuple[str, str, str]]:
    """(name, value) lines checked once and keyed, for `make_response(keyed=...)`: the
    headers a server adds to many answers (Server, Allow, ...) need no work per answer."""
    lines: list[tuple[str, str, str]] = []
    for name, value in extra:
        check_line(name, value)
        lines.append((header_key(name), name, value))
    return lines


def _has_tag(request: Request) -> bool:
    """Does the request's To carry a tag? Asked of the cached view the route has already
    parsed; a To too broken to parse (being answered with a 400) is searched as text."""
    try:
        return request.to_tag is not None
    except SipParseError:
        return ";tag=" in (request.headers.get("to") or "").lower()
