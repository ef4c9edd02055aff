"""The stateful proxy (RFC 3261 §16): calls between registered users, and what follows them.

The route (core/route.py) has authenticated the caller; from there:

    route_to_user   From must be the authenticated user (403) → our Route entries consumed,
                    loop check (482) → not our domain, or no such user: the carriers decide
                    (core/proxy/decisions.py: a DID's user, a gateway, or a refusal) → 484
                    no user / 480 no contact / 503 too many calls → server transaction (100
                    Trying at once) → a branch per contact, each with our Via, Record-Route
                    and a client transaction → the best answer (§16.7)
    in_dialog       core/proxy/dialog_relay.py: loose routing (§16.4) to the dialog's peer
    cancel          core/proxy/dialog_relay.py: 200, CANCEL each ringing branch, 487
    on_response     to its client transaction (core/proxy/forwarder.py); a stray 2xx to an
                    INVITE goes on along the Via (core/proxy/stray.py)
    on_timer        the transaction timers, the ring timeout (timer C-like: CANCEL + 408),
                    the CANCEL guard (64*T1), the maximum call duration

Nothing here reads a clock or awaits: `now` comes in, bytes go out through the outbox's `send`,
and the Pbx arms one loop timer for `next_deadline()`.

Calls: an initial INVITE that gets this far becomes a `Call` in `self.calls`, followed through
ringing and answered to ended or failed, with a CDR at the end (core/proxy/calls.py).
"""

from __future__ import annotations

from core.events import EventBus
from core.net.flow import Flow
from core.net.identity import ServerIdentity
from core.proxy.calls import Call, CallTable
from core.proxy.decisions import Carriers, Dial, NoCarriers, Refuse, remove_identity_headers
from core.proxy.dialog_relay import DialogRelay
from core.proxy.dialogs import call_for_invite
from core.proxy.forwarder import DIALOG_CREATING, Forwarder, MediaHooks, Relay, request_hash
from core.proxy.routing import branch_id, has_looped
from core.registrar.location import LocationService, Target
from core.security.destinations import Destinations
from core.security.reports import SecurityReport
from core.settings import ProxySettings
from core.sip.errors import SipParseError
from core.sip.message import Request, Response
from core.sip.timers import TimerSettings
from core.sip.uri import SipUri, parse_uri
from core.users import UserDirectory

# §16.2 / §17.2.1: a proxy answers an INVITE with 100 Trying at once, so the caller stops
# retransmitting while the callee's phone takes its time.
PROXY_TIMERS = TimerSettings(trying_delay=0.0)

__all__ = ["DIALOG_CREATING", "PROXY_TIMERS", "Proxy", "Relay"]


class Proxy:
    """The proxy core. One per Pbx; every method runs on the event loop and returns at once.

    `carriers` decides for requests to numbers and other domains (core/trunks/trunks.py);
    without it they are refused (`NoCarriers`: 404 for our domain, 403 for any other).
    """

    def __init__(
        self,
        *,
        settings: ProxySettings,
        realm: str,
        relay: Relay,
        users: UserDirectory,
        location: LocationService,
        calls: CallTable,
        bus: EventBus,
        route_secret: bytes,
        carriers: Carriers | None = None,
        destinations: Destinations | None = None,
        security_report: SecurityReport | None = None,
        media: MediaHooks | None = None,
        timers: TimerSettings = PROXY_TIMERS,
    ) -> None:
        self.settings = settings
        self.relay = relay
        self.users = users
        self.location = location
        self.calls = calls
        self.carriers: Carriers = carriers if carriers is not None else NoCarriers()
        self.forwarder = Forwarder(
            settings=settings,
            realm=realm,
            relay=relay,
            calls=calls,
            carriers=self.carriers,
            bus=bus,
            route_secret=route_secret,
            timers=timers,
            security_report=security_report,
            media=media,
        )
        self.table = self.forwarder.table
        self.dialogs = DialogRelay(self.forwarder)
        # Where a contact may not point (our own sockets, carriers).
        self.destinations = destinations

    @property
    def identity(self) -> ServerIdentity:
        return self.relay.identity

    # -- the route's entry points ---------------------------------------------------------
    def route_to_user(self, request: Request, caller: str | None, flow: Flow, now: float) -> None:
        """An out-of-dialog request from `caller` (None: a trusted carrier) to route."""
        reply = self.relay.reply
        if caller is not None and _from_user(request) != caller:
            reply(request, flow, 403, "From does not match the authenticated user")
            return
        if not self._consume_and_check_loop(request, flow, now):
            return
        uri = request.uri
        if not isinstance(uri, SipUri) or not self.identity.is_us(uri):
            self._not_local(request, caller, flow, now, ours=False)
            return
        callee = uri.user
        if not callee:
            reply(request, flow, 484)
            return
        if self.users.get(callee) is None:
            # A number or a DID: the carriers decide (without them, 404).
            self._not_local(request, caller, flow, now, ours=True)
            return
        bindings = self.location.lookup(callee, now)
        # Contacts the NAT keep-alive gave up on are tried only when nothing else is left.
        reachable = [binding for binding in bindings if binding.reachable] or bindings
        if not reachable:
            reply(request, flow, 480)
            return
        targets = self._allowed_targets([binding.target() for binding in reachable], flow, now)
        if not targets:
            reply(request, flow, 480)
            return
        if uri.secure:
            # RFC 5630 §3.1.1: a SIPS request goes over TLS on every hop, the last one too.
            targets = [target for target in targets if target.flow.transport == "tls"]
            if not targets:
                reply(request, flow, 480, "No TLS path to the callee (sips: URI)")
                return
        if caller is not None:
            _assert_identity(request, caller, self.forwarder.realm)
        direction = "internal" if caller is not None else "inbound"  # None: from a carrier
        self.fork(request, targets, flow, now, caller=caller, callee=callee, direction=direction)

    def _allowed_targets(self, targets: list[Target], flow: Flow, now: float) -> list[Target]:
        """Contacts that point at one of our own sockets or at a carrier are never forwarded
        to (core/security/destinations.py), whenever their binding was stored."""
        destinations = self.destinations
        if destinations is None:
            return targets
        allowed = []
        for target in targets:
            host, port = target.flow.remote
            why = destinations.refusal(host, port)
            if why is None:
                allowed.append(target)
                continue
            self.forwarder.security_report(
                "contact-refused",
                flow.remote[0],
                now,
                f"not forwarded to {target.request_uri}: {why}",
            )
        return allowed

    def _not_local(
        self, request: Request, caller: str | None, flow: Flow, now: float, *, ours: bool
    ) -> None:
        """A request for another domain, a tel: URI, or a user we do not have: carry out
        what the carriers decide."""
        decision = self.carriers.outbound(request, caller, flow, now, ours=ours)
        if isinstance(decision, Refuse):
            self.relay.reply(request, flow, decision.status, decision.reason, decision.extra)
        elif isinstance(decision, Dial):
            call_id = request.call_id or ""
            self.fork(
                request,
                [decision.target],
                flow,
                now,
                caller=caller,
                callee=decision.callee,
                direction="outbound",
            )
            call = self.calls.get(call_id)
            if call is None:
                self.carriers.not_dialled(call_id, now)  # refused before it became a call
            else:
                call.carrier, call.gateway = decision.carrier, decision.gateway
                call.dialled, call.number = decision.dialled, decision.number
        else:
            request.uri = decision.uri  # a DID: its user, like any internal call
            self.route_to_user(request, caller, flow, now)

    def absorb_retransmission(self, request: Request, flow: Flow, now: float) -> bool:
        """A request a server transaction already owns (a UDP retransmission): handled there."""
        forwarder = self.forwarder
        try:
            actions = forwarder.table.receive_retransmission(request, now)
        except SipParseError:
            return False
        if actions is None:
            return False
        forwarder.run(actions, now)
        return True

    def in_dialog(self, request: Request, flow: Flow, now: float) -> None:
        """A request with a To tag (core/proxy/dialog_relay.py)."""
        self.dialogs.in_dialog(request, flow, now)

    def cancel(self, request: Request, flow: Flow, now: float) -> None:
        """§16.10 (core/proxy/dialog_relay.py)."""
        self.dialogs.cancel(request, flow, now)

    def on_response(self, response: Response, flow: Flow, now: float) -> bool:
        """A response from downstream. False when it is neither ours to relay nor a stray 2xx
        we sent on."""
        return self.forwarder.on_response(response, flow, now)

    # -- forking ----------------------------------------------------------------------------
    def fork(
        self,
        request: Request,
        targets: list[Target],
        flow: Flow,
        now: float,
        *,
        caller: str | None,
        callee: str,
        direction: str = "internal",
    ) -> None:
        """Forward `request` to every target at once (parallel forking, §16.6) and answer the
        sender from their responses (§16.7). An INVITE becomes a tracked call."""
        method = request.method
        if method == "INVITE" and self.calls.full:
            self.relay.reply(request, flow, 503, "Too many active calls", [("Retry-After", "30")])
            return
        forwarder = self.forwarder
        context = forwarder.open(request, flow, now)  # 100 Trying before anything else
        if context is None:
            return
        if method == "INVITE":
            context.call = self._start_call(request, caller, callee, flow, now, direction)
            forwarder.ring_until(context, now + self.settings.invite_timeout)
        hashed = request_hash(request)
        record_route = method in DIALOG_CREATING
        branches = []
        for index, target in enumerate(targets):
            try:
                uri = parse_uri(target.request_uri)
            except SipParseError:
                continue
            via_branch = branch_id(hashed, index)
            branches.append(
                forwarder.branch(
                    context, uri, target.route, flow, target.flow, via_branch, record_route
                )
            )
        if not branches:
            answer = context.own_answer(480, None, self.relay.server_header)
            forwarder.final_to_caller(context, answer, now)
            return
        # Every branch exists before the first is sent, so one failing at once cannot make
        # the context look finished while others are still to start.
        for branch in branches:
            forwarder.start(branch, now)

    def _start_call(
        self,
        request: Request,
        caller: str | None,
        callee: str,
        flow: Flow,
        now: float,
        direction: str,
    ) -> Call | None:
        """Track an initial INVITE as a call (not a spiral of one we already track)."""
        if (request.call_id or "") in self.calls:
            return None
        caller_name = caller or _from_user(request) or ""
        call = call_for_invite(request, caller_name, callee, flow, now, direction)
        return call if self.calls.start(call) else None

    # -- timers -----------------------------------------------------------------------------
    def next_deadline(self) -> float | None:
        """The earliest time `on_timer` has work: transactions, ring timeouts, CANCEL guards,
        or the oldest call reaching the maximum duration."""
        deadline = self.forwarder.next_deadline()
        oldest = self.calls.oldest()
        if oldest is not None:
            limit = oldest.started_at + self.settings.max_call_seconds
            if deadline is None or limit < deadline:
                deadline = limit
        return deadline

    def on_timer(self, now: float) -> None:
        self.forwarder.on_timer(now)
        max_seconds = self.settings.max_call_seconds
        while (call := self.calls.oldest()) is not None and call.started_at + max_seconds <= now:
            self.dialogs.end_overlong_call(call, now)

    def end_call(self, call: Call, now: float, reason: str) -> None:
        """End a call ourselves (a spend limit crossed): BYE to both sides when answered,
        `reason` in its CDR (core/proxy/dialog_relay.py)."""
        self.dialogs.end_call(call, now, reason)

    # -- checks -----------------------------------------------------------------------------
    def _consume_and_check_loop(self, request: Request, flow: Flow, now: float) -> bool:
        """Our own Route entries off the top (an outbound-proxy setting puts one there), and
        482 for a request that has been here before in the same shape (§16.3 step 4)."""
        try:
            self.forwarder.record_router.consume(request, self.identity)
        except SipParseError:
            self.relay.reply(request, flow, 400, "Bad Route")
            return False
        if has_looped(request, self.identity):
            self.forwarder.loop_detected(request, flow, now)
            return False
        return True


def _assert_identity(request: Request, caller: str, realm: str) -> None:
    """RFC 3325 §9.1: identity headers a user sent are theirs to invent; on an internal call
    too, the callee sees the identity the user proved instead."""
    headers = request.headers
    remove_identity_headers(headers)
    headers.add("P-Asserted-Identity", f"<sip:{caller}@{realm}>")


def _from_user(request: Request) -> str | None:
    address = request.from_addr
    return None if address is None else address.uri.user
