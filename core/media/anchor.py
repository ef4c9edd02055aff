"""When and how the proxy anchors a call's media: the SDP of each offer and answer goes
through the media engine on its way past.

RFC 3264 offer/answer rides on these messages, and each is handled where it passes:

    INVITE / UPDATE with SDP      an offer from the From-tag's side      `request_body`
    18x / 2xx with SDP            its answer (or, to an INVITE that      `response_body`
                                  had none, the callee's late offer)
    ACK with SDP                  the caller's answer to a late offer    `request_body`

A re-INVITE or UPDATE from either side is the same offer again; the engine re-opens its
latching windows, so a phone that moved or was re-NATed is learnt anew (RFC 3264 §8). A
final failure of a re-INVITE or UPDATE that carried an offer (a 488, a 491 in a glare, our own
408) must leave the session as it was (RFC 3261 §14.1, RFC 6337 §3.4): the engine has already
taken the failed offer (new expected addresses, latching windows open again), so the last
exchange that succeeded is played to it again, offer then answer (`offer_failed`). rtpengine
has no command to withdraw an offer (its maintainers say so in sipwise/rtpengine#1046, where
this replay is the workaround), and the embedded relay takes the same path, so both engines
are rolled back by the same bookkeeping. The embedded relay's latching windows open again
under the restored SDP: its ranks keep a stranger out meanwhile. The
call's end frees the session (`call_finished`, in front of the CDR writer, sees every call
end: BYE, CANCEL, a final failure, the maximum duration, a media timeout).

When (`[media] relay`): "always", "never", or "auto" — a call is anchored when either end is
behind NAT, as far as signalling can tell: the caller's Contact or SDP address is not the
address its INVITE came from, or the callee's registered contact is not where its REGISTER
came from (the registrar's `behind_nat`). A carrier leg's SDP is public, so a carrier to a
NATed phone is anchored by the phone's side. The decision is made once, at the INVITE, and
holds for the call's re-INVITEs.

The SDP we send names the address our Via and Record-Route use towards its receiver, which
is the advertised public address where one is set.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from core.media.ports import family_of
from core.media.relay import EmbeddedRelay, MediaStats, RelayFull
from core.media.sdp import SdpError, parse
from core.net.flow import Flow
from core.net.identity import ServerIdentity
from core.proxy.calls import Call, CallSink
from core.registrar.location import LocationService
from core.settings import MediaSettings
from core.sip.errors import SipParseError
from core.sip.message import Message, Request, Response
from core.sip.uri import SipUri

OFFER_METHODS = frozenset({"INVITE", "UPDATE"})  # the requests that carry an offer


class MediaEngine(Protocol):
    """What the embedded relay (core/media/relay.py) offers; rtpengine's ng client the same
    calls, awaited (core/media/rtpengine.py)."""

    def offer(
        self, call_id: str, from_tag: str, sdp: bytes, source_ip: str, address: str, now: float
    ) -> bytes: ...

    def answer(
        self,
        call_id: str,
        from_tag: str,
        to_tag: str,
        sdp: bytes,
        source_ip: str,
        address: str,
        now: float,
    ) -> bytes: ...

    def delete(self, call_id: str) -> None: ...

    def expire(self, now: float, ringing: Callable[[str], bool]) -> list[str]: ...

    def stats(self, call_id: str, now: float) -> MediaStats | None: ...


@dataclass(frozen=True, slots=True)
class Exchange:
    """One side's SDP as it was given to the engine: enough to give it again."""

    from_tag: str  # the engine's `from_tag` argument: the offerer's tag
    to_tag: str  # the answerer's tag in an answer; "" in an offer
    body: bytes
    source_ip: str
    address: str


@dataclass(slots=True)
class AnchoredCall:
    """A call whose media goes through us, and where its offer/answer stands.

    Both engines' front ends (the anchor here, the rtpengine gate) move this state through
    `offered`, `answered` and `failed` alone, so the two read RFC 3264 the same way:

    - An offer is outstanding from `offered` until its final answer. An answer in a
      reliable final message (a 2xx, or the ACK of a late offer) completes the exchange,
      and `offerer` is cleared: a later SDP from the same side is a new offer, never taken
      for an answer (RFC 3264 §4: one exchange at a time; RFC 3261 §13.2.1: the answer to an
      INVITE's offer is the one in its final response, any 18x with SDP before it being that
      same answer early). An 18x answer therefore leaves the offer outstanding: its 2xx, or
      another fork's 18x/2xx (each early dialog answers once), is still to come.
    - A final failure withdraws the offer: `offerer` is cleared too, and the exchange that
      last succeeded (`settled`) is what the session goes back to.
    """

    offerer: str = ""  # From/To tag of the side whose offer is outstanding; "" when none
    late_offer: int = -1  # CSeq of an INVITE sent without SDP: its 2xx carries the offer
    caller: str = ""  # the From tag of the INVITE that made the call
    pending: Exchange | None = None  # the outstanding offer
    settled: tuple[Exchange, Exchange] | None = None  # the last completed offer and answer
    # The last answers rewritten, by (CSeq, To tag): a retransmitted 18x/2xx (the same SDP
    # again, RFC 3261 §13.3.1.4) goes up rewritten the same way, the engine untouched.
    answers: dict[tuple[int, str], tuple[bytes, bytes]] = field(default_factory=dict)

    def offered(self, offer: Exchange) -> None:
        self.offerer = offer.from_tag
        self.pending = offer

    def offered_late(self, cseq: int) -> None:
        """An INVITE without SDP: the offer will come in its 2xx (RFC 3264 §2)."""
        self.offerer = ""
        self.pending = None
        self.late_offer = cseq

    def answered(self, answer: Exchange, final: bool) -> None:
        if not final:
            return
        self.offerer = ""
        if self.pending is not None:
            self.settled = (self.pending, answer)
        self.pending = None

    def failed(self, from_tag: str, cseq: int) -> tuple[Exchange, Exchange] | None:
        """The final failure of an INVITE or UPDATE from `from_tag`: the exchange to restore
        when it carried the outstanding offer, else None (nothing was offered, or nothing had
        been agreed yet: a call's first INVITE failing ends the call, which frees the
        session)."""
        if cseq == self.late_offer:
            self.late_offer = -1
        if not from_tag or self.offerer != from_tag:
            return None
        self.offerer = ""
        self.pending = None
        return self.settled

    def remember(self, key: tuple[int, str], original: bytes, rewritten: bytes) -> bytes:
        if len(self.answers) >= 8:  # a forked call's early dialogs; more is a misbehaving UA
            self.answers.clear()
        self.answers[key] = (original, rewritten)
        return rewritten

    def replayed(self, key: tuple[int, str], body: bytes) -> bytes | None:
        """The body rewritten before for this answer, when `body` is the same again (a
        retransmission); None for a new one."""
        seen = self.answers.get(key)
        return seen[1] if seen is not None and seen[0] == body else None


def exchange_key(anchored: AnchoredCall | None, response: Response) -> tuple[int, str] | None:
    """The (CSeq, To tag) a response to an anchored call's INVITE or UPDATE is remembered
    under, when it carries SDP in a 101-299 (an answer, or a late offer in a 2xx: RFC 3264
    §2); None when its body goes on untouched."""
    cseq = response.cseq
    if (
        anchored is None
        or cseq is None
        or cseq.method not in OFFER_METHODS
        or not 100 < response.status < 300
        or not has_sdp(response)
    ):
        return None
    return (cseq.number, response.to_tag or "")


def has_sdp(message: Message) -> bool:
    if not message.body:
        return False
    content_type = message.headers.get("content-type")
    if content_type is None:
        return message.body.startswith(b"v=")
    return content_type.split(";", 1)[0].strip().lower() == "application/sdp"


def _host(hostport: str) -> str:
    host = hostport.rsplit(":", 1)[0] if not hostport.endswith("]") else hostport
    return host.strip("[]")


def wants_anchor(
    settings: MediaSettings,
    location: LocationService,
    request: Request,
    arrived: Flow,
    target_uri: SipUri | None,
    out: Flow | None,
    now: float,
) -> bool:
    """Whether a new call needs its media anchored (see the module docstring); `target_uri`
    and `out`: the contact a branch goes to and how, when known."""
    mode = settings.relay
    if mode != "auto":
        return mode == "always"
    contacts = request.contacts
    if contacts and isinstance(contacts[0].uri, SipUri) and contacts[0].uri.host != arrived.ip:
        return True
    if has_sdp(request) and not _media_at(request.body, arrived.ip):
        try:
            description = parse(request.body)
        except SdpError:
            return False
        if any(m.port and m.address not in (arrived.ip, "0.0.0.0", "::")
               for m in description.media):  # fmt: skip
            return True
    if target_uri is not None and out is not None and target_uri.host != out.ip:
        return True
    callee = request.uri.user if isinstance(request.uri, SipUri) else None
    return bool(callee) and any(
        binding.behind_nat for binding in location.lookup(callee or "", now)
    )


def _media_at(body: bytes, ip: str) -> bool:
    """True when a cheap scan proves that no media of `body` is sent from anywhere but `ip`
    (or a hold address): a session-level `c=` and every `c=` name it. Then the full parse in
    `wants_anchor` could only find the same (or fail, which also means not anchoring), so
    the common offer of a phone not behind NAT costs no parse. False: parse to find out.

    Only the `c=` lines are visited (found by searching, not by walking every line); one
    before the first `m=` line is the session's. The body is read as Latin-1 text, one
    character per byte: the same scan as over the bytes, but on str, whose find and split
    the compiled build calls natively (a bytes method is a generic method call each, and
    this scan runs for every new call's offer)."""
    text = body.decode("latin-1")
    # Lines end in CRLF or LF; a lone CR ends one too (sdp.py): such bodies go to the parser.
    # Each CRLF holds one CR, so there is a lone one exactly when there are more CRs than CRLFs
    # (counted, where replacing every CRLF would copy the body).
    if text.count("\r") != text.count("\r\n"):
        return False
    text = "\n" + text  # so that every line, the first too, starts after a newline
    # `ip` as the bytes it would be compared as (non-ASCII would never match a body's bytes
    # but "?" can): the same text in Latin-1.
    home = ip if ip.isascii() else ip.encode("ascii", "replace").decode("latin-1")
    first_media = text.find("\nm=")
    session_address = False
    at = text.find("\nc=")
    while at >= 0:
        end = text.find("\n", at + 3)
        # Up to the LF, and its CR (never a lone one, see above) left out.
        stop = end if end < 0 or text[end - 1] != "\r" else end - 1
        line = text[at + 3 :] if end < 0 else text[at + 3 : stop]
        fields = line.split(" ")
        if len(fields) != 3:
            return False
        address = fields[2].partition("/")[0]
        if address != home and address != "0.0.0.0" and address != "::":
            return False
        if first_media < 0 or at < first_media:
            session_address = True
        if end < 0:
            break
        at = text.find("\nc=", end)
    return session_address


class MediaAnchor:
    """The proxy's media hook. Every method returns at once; the engine owns the sockets."""

    def __init__(
        self,
        settings: MediaSettings,
        engine: MediaEngine,
        location: LocationService,
        identity: ServerIdentity,
        clock: Callable[[], float],
        sink: CallSink | None = None,
    ) -> None:
        self.settings = settings
        self.engine = engine
        self.location = location
        self.identity = identity
        self.clock = clock  # the proxy's: the engine's latching windows are on it
        self.sink = sink  # the CDR writer, behind us
        self.calls: dict[str, AnchoredCall] = {}
        self.refused = 0  # calls that needed anchoring and could not have it (full, bad SDP)

    # -- deciding -------------------------------------------------------------------------
    def wants_anchor(self, request: Request, arrived: Flow, target_uri: SipUri | None, out: Flow,
                     now: float) -> bool:  # fmt: skip
        return wants_anchor(self.settings, self.location, request, arrived, target_uri, out, now)

    # -- the proxy's calls -----------------------------------------------------------------
    def request_body(
        self, request: Request, arrived: Flow, out: Flow, target_uri: SipUri | None
    ) -> bytes:
        """The body `request` (arrived on `arrived`) goes on with towards `out`; `target_uri`
        is the contact it is sent to (a new call's branch), else None."""
        method = request.method
        call_id = request.call_id or ""
        anchored = self.calls.get(call_id)
        if anchored is None and (method != "INVITE" or request.to_tag is not None):
            return request.body  # an unanchored call's in-dialog request: no clock read
        now = self.clock()
        if anchored is None:
            if len(self.calls) >= self.settings.max_sessions:
                self.refused += 1
                return request.body
            try:
                if not self.wants_anchor(request, arrived, target_uri, out, now):
                    return request.body
            except SipParseError:
                return request.body
            anchored = self.calls[call_id] = AnchoredCall(caller=request.from_tag or "")
        from_tag = request.from_tag or ""
        if not has_sdp(request):
            cseq = request.cseq
            if method == "INVITE" and cseq is not None:
                anchored.offered_late(cseq.number)
            return request.body
        address = self._address(out)
        try:
            if method == "ACK":
                to_tag = request.to_tag or ""
                if anchored.offerer != to_tag or not to_tag:
                    return request.body
                late = Exchange(to_tag, from_tag, request.body, arrived.ip, address)
                body = self.engine.answer(call_id, to_tag, from_tag, request.body, arrived.ip,
                                          address, now)  # fmt: skip
                anchored.answered(late, final=True)
                return body
            if method not in OFFER_METHODS:
                return request.body
            body = self.engine.offer(call_id, from_tag, request.body, arrived.ip, address, now)
        except (SdpError, RelayFull):
            self.refused += 1
            return request.body
        anchored.offered(Exchange(from_tag, "", request.body, arrived.ip, address))
        return body

    def response_body(self, response: Response, source: Flow, to: Flow) -> bytes:
        """The body of `response` (from `source`) going to `to`. Call-ID, CSeq and From are
        the request's (RFC 3261 §8.2.6.2), so a 2xx no transaction owns any more (a
        retransmission, core/proxy/stray.py) is handled like the first."""
        anchored = self.calls.get(response.call_id or "")
        key = exchange_key(anchored, response)
        cseq = response.cseq
        if anchored is None or key is None or cseq is None:
            return response.body
        status = response.status
        to_tag = key[1]
        from_tag = response.from_tag or ""
        address = self._address(to)
        body = response.body
        answering = anchored.offerer == from_tag and bool(from_tag)
        exchange = Exchange(from_tag, to_tag, body, source.ip, address)
        replayed = anchored.replayed(key, body)
        if replayed is not None:  # a retransmission, or the 2xx repeating its 18x's answer
            if answering:
                anchored.answered(exchange, final=status >= 200)
            return replayed
        now = self.clock()
        call_id = response.call_id or ""
        try:
            if answering:
                answer = self.engine.answer(
                    call_id, from_tag, to_tag, body, source.ip, address, now
                )
                anchored.answered(exchange, final=status >= 200)
                return anchored.remember(key, body, answer)
            if status >= 200 and cseq.method == "INVITE" and cseq.number == anchored.late_offer:
                anchored.late_offer = -1
                offer = self.engine.offer(call_id, to_tag, body, source.ip, address, now)
                anchored.offered(Exchange(to_tag, "", body, source.ip, address))  # ACK answers
                return anchored.remember(key, body, offer)
        except (SdpError, RelayFull):
            self.refused += 1
        return body

    def offer_failed(self, request: Request) -> None:
        """`request` got a final failure: when it carried the outstanding offer, the session
        goes back to the last exchange that succeeded (see the module docstring)."""
        anchored = self.calls.get(request.call_id or "")
        cseq = request.cseq
        if anchored is None or cseq is None or request.method not in OFFER_METHODS:
            return
        settled = anchored.failed(request.from_tag or "", cseq.number)
        if settled is None:
            return
        offer, answer = settled
        call_id = request.call_id or ""
        now = self.clock()
        try:
            self.engine.offer(call_id, offer.from_tag, offer.body, offer.source_ip,
                              offer.address, now)  # fmt: skip
            self.engine.answer(call_id, answer.from_tag, answer.to_tag, answer.body,
                               answer.source_ip, answer.address, now)  # fmt: skip
        except (SdpError, RelayFull):  # it was read once: only a full relay could refuse now
            self.refused += 1

    def expire(self, now: float, ringing: Callable[[str], bool]) -> list[str]:
        """Calls whose media stopped, forgotten here: the proxy hangs them up. Calls still
        `ringing` are left alone (no RTP is due before the answer, early media aside)."""
        ended = self.engine.expire(now, ringing)
        for call_id in ended:
            self.calls.pop(call_id, None)
        return ended

    def stats(self, call_id: str, now: float) -> MediaStats | None:
        return self.engine.stats(call_id, now) if call_id in self.calls else None

    # -- the end of a call (a CallSink in front of the CDR writer) --------------------------
    def call_finished(self, call: Call) -> None:
        if self.calls.pop(call.call_id, None) is not None:
            self.engine.delete(call.call_id)
        if self.sink is not None:
            self.sink.call_finished(call)

    def _address(self, flow: Flow) -> str:
        return _host(self.identity.hostport(flow))

    def close(self) -> None:
        """Every session ended (the Pbx stops): their sockets are closed."""
        for call_id in list(self.calls):
            self.engine.delete(call_id)
        self.calls.clear()


def build_anchor(
    settings: MediaSettings,
    listen_hosts: list[str],
    location: LocationService,
    identity: ServerIdentity,
    clock: Callable[[], float],
    sink: CallSink | None,
) -> MediaAnchor | None:
    """The media hook for these settings, with the embedded relay bound on `[media] address`
    (else the first SIP listen address) and, for calls in the other address family (IPv4,
    IPv6), on the first SIP listen address of that family (else its wildcard); None when
    calls are never anchored."""
    if settings.relay == "never" or settings.engine != "embedded":
        return None
    host = settings.address or listen_hosts[0]
    other = [h for h in listen_hosts if family_of(h) != family_of(host)]
    relay = EmbeddedRelay(settings, host, clock, other_host=other[0] if other else "")
    return MediaAnchor(settings, relay, location, identity, clock, sink)
