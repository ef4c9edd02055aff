"""The marks a proxy leaves on a request and reads back: Via branch, Record-Route, Route.

RFC 3261 §16 in the pieces the proxy needs for every forwarded request:

- §16.3 step 4 / §16.6 step 8, loop detection. Our Via branch is `z9hG4bK<hash>.<n>`, where the
  hash covers what identifies the request as we received it: Request-URI, From and To tags,
  Call-ID, CSeq number and the top Via. When a request comes back carrying a Via of ours, the
  Via just below it is the top Via it had then; if the hash over it and the current
  Request-URI matches, the request has looped (482). A different Request-URI is a spiral
  (e.g. forwarded to another user), which is allowed.
- §16.6 step 4, Record-Route: `<sip:OUR-ADDRESS;lr>`, `transport=tcp` or `transport=tls`
  when the hop is TCP or TLS, and `<sips:...>` when the Request-URI is a SIPS URI. When the
  two sides of the call reach us differently (UDP on one, TLS on the other, or two addresses)
  we record-route twice, one entry per side (RFC 5658), so each phone's route set names the
  interface it can reach (Kamailio's double Record-Route). Each entry carries a token, a MAC
  of the dialog's identifiers, its two ends and an expiry (`RecordRouter`): the Route header
  is not an open relay, and a token is no key to anywhere outside its dialog.
- §16.4, loose routing: Route entries naming us are removed from the top; a Request-URI that is
  one of our Record-Route URIs means the previous hop was a strict router (RFC 2543), and the
  real Request-URI is the last Route entry.
- §16.6 steps 6-7 / §16.12: the next hop is the first remaining Route entry (a strict router
  there gets the Request-URI rewritten to it) or else the Request-URI.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import re
import time
from collections.abc import Callable
from typing import Final

from core.net.flow import Flow
from core.net.identity import ServerIdentity
from core.registrar.location import contact_flow
from core.sip.address import parse_name_addr
from core.sip.errors import SipParseError
from core.sip.fields import MAGIC_COOKIE, Via
from core.sip.headers import Headers
from core.sip.hostport import format_hostport, parse_hostport
from core.sip.message import Request
from core.sip.uri import SipUri, Uri

ROUTE_TOKEN_PARAM = "pbx"  # our Record-Route URIs carry ;pbx=<token>
DEFAULT_MAX_FORWARDS = 70  # §8.1.1.6


class RecordRouter:
    """Builds our Record-Route entries and recognises them when they come back as Route.

    The token in each entry (`;pbx=<expiry>-<mac>`) is a keyed MAC over the dialog's Call-ID,
    the caller's tag, the addresses of its two ends and an expiry: it lets an in-dialog
    request be relayed after a restart (when the call table is empty) only within that
    dialog, between those two addresses, until the call could not still be up. Seeing one
    provisional response therefore gives no one a way to send requests anywhere else.
    """

    __slots__ = ("_clock", "_keyed", "lifetime")

    def __init__(
        self, secret: bytes, lifetime: float = 86_400.0, clock: Callable[[], float] = time.time
    ) -> None:
        # A key of its own, derived from the server secret it is given; keyed once, each
        # token copies this state (a keyed start hashes a whole key block).
        key = hashlib.blake2b(b"pbxtui record-route", key=secret[:64]).digest()
        self._keyed = hashlib.blake2b(key=key, digest_size=8)
        self.lifetime = lifetime
        self._clock = clock  # wall time, the Pbx's clock: tokens outlive a restart

    def token(
        self, call_id: str | None, caller_tag: str | None, ends: tuple[str, str], expires: int
    ) -> str:
        """The token for a dialog: a keyed BLAKE2b (C calls, unlike the hmac module's)."""
        first, second = ends
        # The two ends in order, as sorted() would put them, without building a list.
        low, high = (second, first) if second < first else (first, second)
        data = f"{call_id or ''}\x00{caller_tag or ''}\x00{low}\x00{high}\x00{expires}"
        mac = self._keyed.copy()
        mac.update(data.encode("utf-8", "surrogateescape"))
        return f"{expires:x}-{mac.hexdigest()}"

    def verify(self, token: str, request: Request, ends: tuple[str, str], now: float) -> bool:
        """Was `token` made for this request's dialog (either tag may be the caller's, as the
        callee's requests carry it in To) between these two addresses, and not expired?"""
        expires_hex, _, mac = token.partition("-")
        if not mac or not 0 < len(expires_hex) <= 12:
            return False
        try:
            expires = int(expires_hex, 16)
        except ValueError:
            return False
        if expires < now:
            return False
        call_id = request.call_id
        for tag in (request.from_tag, request.to_tag):
            expected = self.token(call_id, tag, ends, expires)
            if tag and hmac.compare_digest(expected.encode(), token.encode("utf-8", "replace")):
                return True
        return False

    def uri(self, identity: ServerIdentity, flow: Flow, token: str, secure: bool = False) -> str:
        """Our Record-Route URI for the side of the call reached over `flow`.

        A SIPS request gets a sips: entry (§16.6 step 4), which means TLS by itself
        (RFC 5630 §3.1). Otherwise a TLS hop is marked with transport=tls: RFC 3261 §26.2.2
        deprecates that parameter for asking for SIPS, but as the mark of one hop over TLS it is
        what phones and proxies read, and a sips: entry would make every later hop, the UDP
        phone's too, TLS only."""
        if secure and flow.transport == "tls":
            return f"sips:{identity.hostport(flow)};lr;{ROUTE_TOKEN_PARAM}={token}"
        transport = f";transport={flow.transport}" if flow.transport in ("tcp", "tls") else ""
        return f"sip:{identity.hostport(flow)}{transport};lr;{ROUTE_TOKEN_PARAM}={token}"

    def record(
        self,
        headers: Headers,
        identity: ServerIdentity,
        inbound: Flow,
        outbound: Flow,
        call_id: str | None,
        caller_tag: str | None,
        secure: bool = False,
    ) -> None:
        """Push our Record-Route (twice when the two sides reach us differently).

        The callee's route set is the list as it arrives, top first, so the entry facing the
        callee goes on top; the caller reverses the list, so the inbound one is its first.
        """
        expires = int(self._clock() + self.lifetime)
        ends = (inbound.remote[0], outbound.remote[0])
        token = self.token(call_id, caller_tag, ends, expires)
        inbound_uri = self.uri(identity, inbound, token, secure)
        outbound_uri = self.uri(identity, outbound, token, secure)
        headers.prepend("Record-Route", f"<{inbound_uri}>")
        if outbound_uri != inbound_uri:
            headers.prepend("Record-Route", f"<{outbound_uri}>")

    def is_ours(self, identity: ServerIdentity, uri: Uri) -> bool:
        """A URI naming us with no user part: one of our Record-Route entries (or our address)."""
        return isinstance(uri, SipUri) and uri.user is None and identity.is_us(uri)

    def consume(self, request: Request, identity: ServerIdentity) -> str | None:
        """§16.4: undo a strict router's rewrite, then pop the Route entries naming us.

        Returns the token of the first entry we removed that carries one (to be verified with
        `verify` once the destination is known), else None; entries naming us without one are
        removed too, since they address us. Raises SipParseError for a bad Route value.

        The Route entries are read from the request's parsed view (`Request.routes`), which
        sanity has already filled: none is parsed again. When one does not parse, the entries
        are read one by one as far as routing needs them (`_consume_each`), so the error
        comes at the same point, after the same removals.
        """
        try:
            parsed = request.routes
        except SipParseError:
            return self._consume_each(request, identity)
        if not parsed:
            return None
        headers = request.headers
        token: str | None = None
        uri = request.uri
        count = len(parsed)
        # A SipUri's parameter names are kept lower-case (`SipUri.param`), as ours is.
        if self.is_ours(identity, uri):
            strict_token = uri.params.get(ROUTE_TOKEN_PARAM)  # type: ignore[union-attr]
            if strict_token is not None:
                token = strict_token
                request.uri = parsed[-1].uri
                _remove_last_route(headers, headers.values("route"))
                count -= 1
        for index in range(count):
            route_uri = parsed[index].uri
            if not self.is_ours(identity, route_uri):
                break
            if token is None:
                token = route_uri.params.get(ROUTE_TOKEN_PARAM)  # type: ignore[union-attr]
            headers.pop_first_value("route")
        return token

    def _consume_each(self, request: Request, identity: ServerIdentity) -> str | None:
        """`consume` parsing each Route entry only when it reaches it: for a Route list with
        a bad entry, which raises where the entry is first needed."""
        headers = request.headers
        routes = headers.values("route")
        if not routes:
            return None
        token: str | None = None
        uri = request.uri
        if self.is_ours(identity, uri) and uri.param(ROUTE_TOKEN_PARAM) is not None:  # type: ignore[union-attr]
            token = uri.param(ROUTE_TOKEN_PARAM)  # type: ignore[union-attr]
            request.uri = parse_name_addr(routes[-1]).uri
            _remove_last_route(headers, routes)
            routes = routes[:-1]
        for value in routes:
            route_uri = parse_name_addr(value).uri
            if not self.is_ours(identity, route_uri):
                break
            if token is None:
                token = route_uri.param(ROUTE_TOKEN_PARAM)  # type: ignore[union-attr]
            headers.pop_first_value("route")
        return token

    def beyond_us(
        self, record_route: tuple[str, ...], identity: ServerIdentity
    ) -> tuple[tuple[str, ...], tuple[str, ...]]:
        """A dialog's Record-Route entries beyond ours, as Route sets from us: towards the
        callee (the entries above ours, reversed) and towards the caller (those below ours),
        per §12.1.1 / §12.1.2. Empty when ours is not there or an entry does not parse.
        The list is the one the dialog's answer carried through us: our entries in it are
        those naming us with a token."""
        ours = []
        for index, value in enumerate(record_route):
            try:
                uri = parse_name_addr(value).uri
            except SipParseError:
                return (), ()
            if self.is_ours(identity, uri) and uri.param(ROUTE_TOKEN_PARAM) is not None:  # type: ignore[union-attr]
                ours.append(index)
        if not ours:
            return (), ()
        return tuple(reversed(record_route[: ours[0]])), record_route[ours[-1] + 1 :]


def _remove_last_route(headers: Headers, routes: list[str]) -> None:
    headers.remove("route")
    if len(routes) > 1:
        headers.add("Route", ", ".join(routes[:-1]))


def next_hop(request: Request) -> Uri:
    """Where the request goes next (§16.6 steps 6-7, §16.12): the first Route entry, or the
    Request-URI. A first Route entry without `lr` is a strict router: it becomes the
    Request-URI and the old Request-URI goes to the end of the Route set (§12.2.1.1)."""
    headers = request.headers
    routes = headers.values("route")
    if not routes:
        return request.uri
    first = parse_name_addr(routes[0]).uri
    if isinstance(first, SipUri) and first.has_param("lr"):
        return first
    headers.remove("route")
    rest = [*routes[1:], f"<{request.uri}>"]
    headers.add("Route", ", ".join(rest))
    request.uri = first
    return first


def flow_for_uri(uri: Uri, identity: ServerIdentity, arrived: Flow) -> Flow | None:
    """A flow towards the host a SIP URI names (no DNS SRV, §19.1.1 defaults), sent from
    the local address of that transport; None for a URI we cannot send to (tel:, mailto:)."""
    if not isinstance(uri, SipUri):
        return None
    transport = uri.transport or ("tls" if uri.secure else "udp")
    return contact_flow(uri, local_address(identity, transport, arrived))


def local_address(identity: ServerIdentity, transport: str, arrived: Flow) -> tuple[str, int]:
    """Our address to send from over `transport`: the one the request arrived on when it is
    the same transport, else the first listener of that transport."""
    if arrived.transport == transport:
        return arrived.local
    for address in identity.listen:
        if address.transport == transport:
            return address.host, address.port
    return arrived.local


# -- Via branch and loop detection --------------------------------------------------------
try:
    # CPython's own MD5: the same digest as hashlib.md5, without the OpenSSL context that
    # hashlib fetches for every new hash, which cost as much as hashing a request's identity.
    from _md5 import md5 as _new_md5
except ImportError:  # an interpreter built without it: OpenSSL's, as before
    _new_md5 = functools.partial(hashlib.md5, usedforsecurity=False)


def loop_hash(request: Request, top_via: str) -> str:
    """§16.6 step 8: the part of our branch that identifies the request as received: the
    first 20 hex digits of the MD5 of Request-URI, From and To tags, Call-ID, CSeq number
    and top Via, joined by NULs."""
    cseq = request.cseq
    number = str(cseq.number) if cseq is not None else ""
    uri = str(request.uri)
    from_tag = request.from_tag or ""
    to_tag = request.to_tag or ""
    call_id = request.call_id or ""
    # One f-string of str locals rather than a tuple joined: the same text, built in one
    # step compiled (a conversion such as `!s` inside it would cost a format call a piece).
    material = f"{uri}\x00{from_tag}\x00{to_tag}\x00{call_id}\x00{number}\x00{top_via}"
    digest: str = _new_md5(material.encode("utf-8", "surrogateescape")).hexdigest()
    return digest[:20]


def branch_id(request_hash: str, index: int | str) -> str:
    return f"{MAGIC_COOKIE}{request_hash}.{index}"


def has_looped(request: Request, identity: ServerIdentity) -> bool:
    """§16.3 step 4: a Via of ours whose branch hash matches the request as it is now."""
    vias = request.vias
    texts: list[str] | None = None
    for index in range(len(vias) - 1):
        via = vias[index]
        branch = via.branch
        if branch is None or not branch.startswith(MAGIC_COOKIE):
            continue
        if not identity.is_own_address(via.host, via.port):
            continue
        if texts is None:
            texts = request.headers.values("via")
        if branch[len(MAGIC_COOKIE) :].partition(".")[0] == loop_hash(request, texts[index + 1]):
            return True
    return False


# -- what a forwarded request carries -----------------------------------------------------
# Our own sent-by values (a handful: one per listener and advertised address, per transport),
# worked out once: (hostport text, transport) → (host, port, the transport as a Via prints it,
# the line up to the branch value). Bounded all the same.
_SENT_BY: dict[tuple[str, str], tuple[str, int | None, str, str]] = {}
_SENT_BY_LIMIT: Final = 256


def _sent_by(identity: ServerIdentity, flow: Flow) -> tuple[str, int | None, str, str]:
    hostport = identity.hostport(flow)
    transport = flow.transport
    key = (hostport, transport)
    known = _SENT_BY.get(key)
    if known is None:
        host, port = parse_hostport(hostport)
        upper = transport.upper()
        known = (host, port, upper, f"SIP/2.0/{upper} {format_hostport(host, port)};branch=")
        if len(_SENT_BY) >= _SENT_BY_LIMIT:
            _SENT_BY.clear()
        _SENT_BY[key] = known
    return known


def push_via(headers: Headers, identity: ServerIdentity, flow: Flow, branch: str) -> Via:
    """Our Via on top (§16.6 step 8); returns it parsed, so no one has to parse it again.
    The line is written directly, as `str(via)` would print it, from the cached sent-by."""
    host, port, transport, start = _sent_by(identity, flow)
    line = start + branch
    headers.prepend("Via", line)
    # Handed its line, as a parsed Via is: printing it (a client transaction's request,
    # a loop check) is then free.
    return Via(transport, host, port, {"branch": branch}, "SIP/2.0", line)


def push_via_line(headers: Headers, identity: ServerIdentity, flow: Flow, branch: str) -> None:
    """`push_via` for a request no one reads the Via of again (an ACK to a 2xx, forwarded
    statelessly; our own BYE, whose client transaction parses its Vias): the same line, no
    parsed Via built for nothing."""
    headers.prepend("Via", _sent_by(identity, flow)[3] + branch)


def decrement_max_forwards(headers: Headers, current: int | None) -> None:
    """§16.6 step 3 (the route already answered 483 to a request that arrived with 0)."""
    value = DEFAULT_MAX_FORWARDS if current is None else current - 1
    headers.set("Max-Forwards", str(max(value, 0)))


_REALM = re.compile(r'realm\s*=\s*(?:"([^"]*)"|([^\s,]+))', re.IGNORECASE)


def remove_own_credentials(headers: Headers, realm: str) -> None:
    """§22.3: credentials for our realm were consumed here; the next hop has no use for them
    (and a phone should not see the caller's digest answer)."""
    values = headers.get_all("proxy-authorization")
    if not values:
        return
    kept = []
    for value in values:
        if realm_of(value) != realm:
            kept.append(value)
    headers.remove("proxy-authorization")
    for value in kept:
        headers.add("Proxy-Authorization", value)


def realm_of(value: str) -> str | None:
    """The realm a credentials value names: what `_REALM.search` finds (its quoted or bare
    value), None when there is none or it is empty. An ASCII value (every phone's) is read
    with str.find; the regex, whose case-insensitive scan cost more than the rest of a
    forwarded INVITE's header copy, reads only the others (non-ASCII text changes length
    under lower())."""
    if not value.isascii():
        match = _REALM.search(value)
        return None if match is None else (match.group(1) or match.group(2))
    lowered = value.lower()
    length = len(value)
    start = lowered.find("realm")
    while start >= 0:
        index = _skip_space(value, start + 5, length)
        if index < length and value[index] == "=":
            index = _skip_space(value, index + 1, length)
            if index < length:
                if value[index] == '"':
                    close = value.find('"', index + 1)
                    if close >= 0:
                        return value[index + 1 : close] or None
                # The bare form, also where an opening quote is never closed (the regex's
                # second alternative then starts at the quote).
                end = index
                while end < length and value[end] != "," and not value[end].isspace():
                    end += 1
                if end > index:
                    return value[index:end]
        start = lowered.find("realm", start + 5)
    return None


def _skip_space(text: str, index: int, length: int) -> int:
    """The first index from `index` on that is not whitespace (`\\s`, as str.isspace)."""
    while index < length and text[index].isspace():
        index += 1
    return index
