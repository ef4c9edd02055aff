"""The request route: every message that reaches pbxtui passes through `Route.on_message`.

Read it top to bottom like Kamailio's request_route:

    banned or flooding?  → drop before parsing
    parse                → 400 / drop
    REQINIT              → scanner drop, 483, sanity 400, OPTIONS to us → 200
    in dialog?           → loose-route through the proxy (ACKs of our own replies absorbed)
    CANCEL               → the proxy's server transaction
    carrier address?     → inbound trunk, no digest
    TLS only ([tls])     → 403 over UDP/TCP, before any challenge
    authenticate         → 401 (REGISTER) / 407 (others); failures counted per IP and user
    TLS only (the user)  → the same 403 over UDP/TCP, and an event saying whose
    REGISTER             → registrar
    anything else        → proxy: local user, or carrier gateway, or 403

Each step is a method that returns after it has answered; none awaits anything. Responses go
back to the address the request really came from (§18.2.2 with the received/rport we stamp),
never to a host a header names.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from core.events import EventBus, SecurityEvent, SipTraffic
from core.net.flow import Flow
from core.net.identity import ServerIdentity
from core.outbox import Outbox, may_be_local_tag
from core.proxy.decisions import Refuse, ToUser
from core.registrar.registrar import Registrar
from core.security.auth import DigestAuthenticator
from core.security.guard import Security
from core.security.verdict import CONTINUE, Reply
from core.sip.errors import SipParseError
from core.sip.fields import Via
from core.sip.message import Request, Response
from core.sip.parser import parse_message
from core.sip.uri import SipUri, TelUri

ALLOWED_METHODS = (
    "INVITE, ACK, CANCEL, BYE, OPTIONS, REGISTER, INFO, UPDATE, MESSAGE, NOTIFY, PRACK, REFER"
)
TLS_REQUIRED = "TLS required (sips: or transport=tls)"
KNOWN_METHODS = frozenset(
    {
        "INVITE",
        "ACK",
        "CANCEL",
        "BYE",
        "OPTIONS",
        "REGISTER",
        "INFO",
        "UPDATE",
        "MESSAGE",
        "NOTIFY",
        "PRACK",
        "REFER",
        "SUBSCRIBE",
        "PUBLISH",
    }
)
# The headers of our own answers, the same every time (the outbox keys them once).
OPTIONS_HEADERS = [
    ("Allow", ALLOWED_METHODS),
    ("Accept", "application/sdp"),
    ("Accept-Encoding", "identity"),
    ("Accept-Language", "en"),
    ("Supported", "path, outbound"),
]
ALLOW_TO_US = [("Allow", "OPTIONS, REGISTER")]
ALLOW_ROUTED = [("Allow", ALLOWED_METHODS)]
# Methods we route end to end when they are addressed to a user, not to us.
ROUTABLE_METHODS = frozenset(
    {"INVITE", "MESSAGE", "OPTIONS", "INFO", "NOTIFY", "REFER", "SUBSCRIBE"}
)


class Proxy(Protocol):
    """What the route needs of the stateful proxy (core/proxy/proxy.py)."""

    def route_to_user(
        self, request: Request, caller: str | None, flow: Flow, now: float
    ) -> None: ...
    def in_dialog(self, request: Request, flow: Flow, now: float) -> None: ...
    def cancel(self, request: Request, flow: Flow, now: float) -> None: ...
    def on_response(self, response: Response, flow: Flow, now: float) -> bool: ...
    def absorb_retransmission(self, request: Request, flow: Flow, now: float) -> bool: ...


class Trunks(Protocol):
    """What the route asks of the carrier trunks (core/trunks/trunks.py)."""

    def trusts(self, flow: Flow) -> bool: ...
    def inbound(self, request: Request) -> Refuse | ToUser: ...


def stamp_via(request: Request, flow: Flow) -> None:
    """Set received= and rport on the top Via (RFC 3261 §18.2.1, RFC 3581 §4).

    Whatever a client put in `received` or `rport` is overwritten with what we saw: those
    parameters are the server's to set, and a proxy downstream would route responses by them.
    The stamped element is the old one with each parameter replaced where it stands or added
    at the end; when the old one's text is known to be as str() prints it, that text is
    edited rather than the whole element printed again.
    """
    via = request.top_via
    if via is None:
        return
    ip, port = flow.remote
    old = via.params
    received = via.host != ip or old.get("received") not in (None, ip)
    rport: str | None = None
    if "rport" in old:  # the port is printed only for a Via that asks for it
        port_text = str(port)
        if old["rport"] != port_text:
            rport = port_text
    if not received and rport is None:
        return
    params = dict(old)
    params["received"] = ip  # set by either rule: rport alone also names the address
    text = via.text
    if rport is not None:
        params["rport"] = rport
        if text is not None:
            text = _with_rport_and_received(text, rport, ip)
    elif text is not None:
        text = _with_param(text, ";received", ip)
    stamped = Via(via.transport, via.host, via.port, params, via.protocol, text)
    vias = request.vias
    vias[0] = stamped
    line = text if text is not None else str(stamped)  # what str() would give, unprinted
    request.headers.replace_first_value("Via", line, view=vias)


def _with_rport_and_received(text: str, rport: str, ip: str) -> str:
    """`_with_param(_with_param(text, ";rport", rport), ";received", ip)`, in one string
    built for the usual phone's Via: a bare `;rport` and no `received` (RFC 3581's request).
    Anything else takes the two general edits."""
    at = text.find(";rport")
    if at >= 0 and ";received" not in text:
        end = at + 6
        if end == len(text):
            return f"{text}={rport};received={ip}"
        if text[end] == ";":
            # The first `;rport` is a whole name with no value: it is the one replaced, and
            # no `;received` stands anywhere, so the second edit appends.
            return f"{text[:end]}={rport}{text[end:]};received={ip}"
    return _with_param(_with_param(text, ";rport", rport), ";received", ip)


def _with_param(text: str, key: str, value: str) -> str:
    """`text` (a Via as str() prints it) with `;name=value` where `;name...` stands, or at
    the end: what printing the element with that one parameter changed would give. `key` is
    `;name`. No `;` stands inside a host or a value printed so, only before each parameter."""
    start = text.find(key)
    while start >= 0:
        end = start + len(key)
        if end == len(text) or text[end] in ";=":
            following = text.find(";", end)
            rest = "" if following < 0 else text[following:]
            return f"{text[:start]}{key}={value}{rest}"
        start = text.find(key, end)
    return f"{text}{key}={value}"


class Route:
    """The request route. Construct once per process, last: it calls every other part.
    `on_message` is the transport's callback; everything it sends goes through `outbox`."""

    def __init__(
        self,
        *,
        identity: ServerIdentity,
        bus: EventBus,
        security: Security,  # typed, so the per-packet calls are native ones
        authenticator: DigestAuthenticator,
        registrar: Registrar,
        natping,  # core.registrar.natping.NatKeepalive
        proxy: Proxy,
        trunks: Trunks,
        outbox: Outbox,
        clock: Callable[[], float],
        tls_only: bool = False,
        requires_tls: Callable[[str], bool] | None = None,
    ) -> None:
        self.identity = identity
        self.bus = bus
        self.security = security
        self.authenticator = authenticator
        self.registrar = registrar
        self.natping = natping
        self.proxy = proxy
        self.trunks = trunks
        self.outbox = outbox
        self._local_tag: Callable[[Request], str] = outbox.local_tag
        self.clock = clock
        self.tls_only = tls_only  # [tls] tls_only: users must reach us over TLS
        self.requires_tls = requires_tls  # username → that user is "TLS only" (core/users.py)
        self.dropped = 0

    # -- the route ------------------------------------------------------------------------
    def on_message(self, data: bytes, flow: Flow) -> None:
        now = self.clock()
        if self.admit(flow, now):
            self.on_admitted(data, flow, now)

    def admit(self, flow: Flow, now: float) -> bool:
        """The per-packet check alone (bans, flood counting): with several worker processes,
        the one that read a datagram checks it before handing it to its owner, which then
        calls `on_admitted` (core/cluster/changes.py). False: dropped and counted."""
        if self.security.admit(flow.remote[0], now):
            return True
        self.dropped += 1
        return False

    def on_admitted(self, data: bytes, flow: Flow, now: float) -> None:
        """A message that passed `admit`: parse it and route it."""
        if self.bus.capture_traffic:  # nobody reads traffic headless: skip building the event
            self.bus.publish(SipTraffic("in", flow.transport, flow.remote, flow.local, data))
        try:
            message = parse_message(data, stream=flow.reliable)
        except SipParseError as error:
            self._unparsable(error, flow, now)
            return
        if isinstance(message, Response):
            self._on_response(message, flow, now)
        else:
            self._on_request(message, flow, now)

    def _on_request(self, request: Request, flow: Flow, now: float) -> None:
        if self.outbox.resend_cached_reply(request, flow, now):
            return
        if not self._reqinit(request, flow, now):
            return
        stamp_via(request, flow)
        if request.to_tag is not None:
            self._in_dialog(request, flow, now)
            return
        if request.method == "CANCEL":
            self._cancel(request, flow, now)
            return
        if request.method == "ACK":
            return  # an ACK outside any dialog or transaction has nowhere to go (§17.2.3)
        if self.proxy.absorb_retransmission(request, flow, now):
            return
        if self._to_us_without_user(request) and request.method != "REGISTER":
            self._answer_ourselves(request, flow)
            return
        if self.trunks.trusts(flow):
            self._from_carrier(request, flow, now)
            return
        if self.tls_only and flow.transport != "tls":
            # Refused before the challenge, so no digest answer is ever sent in clear text.
            self.outbox.reply(request, flow, 403, TLS_REQUIRED)
            return
        username = self._authenticate(request, flow, now)
        if username is None:
            return
        if flow.transport != "tls" and self._refused_in_clear(request, username, flow, now):
            return
        if request.method == "REGISTER":
            self._register(request, username, flow, now)
        else:
            self._route_from_user(request, username, flow, now)

    # -- steps ----------------------------------------------------------------------------
    def _unparsable(self, error: SipParseError, flow: Flow, now: float) -> None:
        """Answer what can be answered (a request whose headers parsed), drop the rest."""
        self.security.parse_failed(flow.remote[0], error.reason, now)
        partial = error.partial
        if isinstance(partial, Request) and partial.method != "ACK":
            self.outbox.reply(partial, flow, error.status, error.reason)

    def _reqinit(self, request: Request, flow: Flow, now: float) -> bool:
        """Scanner UAs, Max-Forwards, sanity (core/security). False when already handled."""
        verdict = self.security.reqinit(request, flow, now)
        if verdict is CONTINUE:  # nearly every request
            return True
        if isinstance(verdict, Reply):  # else a Drop: nothing is sent
            self.outbox.send_response(verdict.response, flow)
        return False

    def _to_us_without_user(self, request: Request) -> bool:
        uri = request.uri
        return isinstance(uri, SipUri) and uri.user is None and self.identity.is_us(uri)

    def _answer_ourselves(self, request: Request, flow: Flow) -> None:
        """Requests addressed to the server itself: OPTIONS keep-alives get 200 (RFC 3261 §11)."""
        method = request.method
        if method == "OPTIONS":
            self.outbox.reply(request, flow, 200, extra=OPTIONS_HEADERS)
        elif method == "INVITE":
            # Calls: a call to the domain with no user part is a number not dialled (yet).
            self.outbox.reply(request, flow, 484)
        elif method in KNOWN_METHODS:
            self.outbox.reply(request, flow, 405, extra=ALLOW_TO_US)
        else:
            self.outbox.reply(request, flow, 501)

    def _from_carrier(self, request: Request, flow: Flow, now: float) -> None:
        """Step 5: a trusted carrier's request goes to the user its DID names, or is refused."""
        decision = self.trunks.inbound(request)
        if isinstance(decision, Refuse):
            self.outbox.reply(request, flow, decision.status, decision.reason, decision.extra)
            return
        request.uri = decision.uri
        self.proxy.route_to_user(request, None, flow, now)

    def _in_dialog(self, request: Request, flow: Flow, now: float) -> None:
        if request.method == "ACK":
            to_tag = request.to_tag
            # Our tags are "pbx" and digits (Outbox.local_tag): a dialog's ACK, carrying the
            # callee's tag, is told apart without computing ours.
            if may_be_local_tag(to_tag) and to_tag == self.outbox.local_tag(request):
                return  # the ACK of a final answer we built ourselves (§17.2.1): absorbed
        self.proxy.in_dialog(request, flow, now)

    def _cancel(self, request: Request, flow: Flow, now: float) -> None:
        self.proxy.cancel(request, flow, now)

    def _authenticate(self, request: Request, flow: Flow, now: float) -> str | None:
        """Digest (RFC 3261 §22): REGISTER → 401, everything else → 407.

        Unknown user and wrong password look the same to the client; the security layer hears
        the difference, and bans an IP that keeps failing.
        """
        proxy_auth = request.method != "REGISTER"
        # The answers it builds carry our deterministic To-tag already (no retag).
        result = self.authenticator.check(request, now, proxy=proxy_auth, tag=self._local_tag)
        ip = flow.remote[0]
        if result.username is not None:
            self.security.auth_succeeded(ip, now)
            return result.username
        if result.counts_as_failure:
            self.security.auth_failed(ip, result.claimed_user or "", request.user_agent or "", now)
        answer = result.answer
        if answer is not None:
            # The first challenge of a request without credentials is not cached: answering
            # its retransmission with a new nonce is as good (a stateless 401, as Kamailio
            # sends), and a flood of fresh REGISTERs would otherwise fill the reply cache.
            # A failed answer is cached, so its retransmission is not counted twice.
            # Already bytes (the authenticator writes its answers straight from the request).
            cache = result.failure is not None
            self.outbox.send_answer(answer, result.status, flow, request, cache=cache)
        return None

    def _refused_in_clear(self, request: Request, username: str, flow: Flow, now: float) -> bool:
        """A "TLS only" user over UDP/TCP gets the global switch's 403. Only the digest answer
        tells whose request it is, so this comes after it; the event says why the phone fails."""
        requires_tls = self.requires_tls
        if requires_tls is None or not requires_tls(username):
            return False
        self.outbox.reply(request, flow, 403, TLS_REQUIRED)
        detail = f"{request.method} over {flow.transport.upper()} refused: {username} is TLS only"
        self.bus.publish(
            SecurityEvent(
                "tls-required",
                flow.remote[0],
                detail,
                user=username,
                user_agent=request.user_agent or "",
                at=now,
            )
        )
        return True

    def _register(self, request: Request, username: str, flow: Flow, now: float) -> None:
        if not self.identity.is_us(request.uri):
            self.outbox.reply(request, flow, 403, "Not our domain")
            return
        to_tag = self._local_tag(request)
        # (status, bytes): a plain refresh's 200 is written without building a Response.
        status, data = self.registrar.register_answer(request, username, flow, now, to_tag=to_tag)
        self.outbox.send_answer(data, status, flow, request)

    def _route_from_user(self, request: Request, username: str, flow: Flow, now: float) -> None:
        method = request.method
        if method not in KNOWN_METHODS:
            self.outbox.reply(request, flow, 501)
            return
        if method not in ROUTABLE_METHODS:
            self.outbox.reply(request, flow, 405, extra=ALLOW_ROUTED)
            return
        uri = request.uri
        if not isinstance(uri, SipUri | TelUri):
            self.outbox.reply(request, flow, 416)
            return
        self.proxy.route_to_user(request, username, flow, now)

    def _on_response(self, response: Response, flow: Flow, now: float) -> None:
        if self.natping.on_response(response, now):
            return
        self.proxy.on_response(response, flow, now)
