"""The stateful proxy (RFC 3261 §16): calls between registered users, and what follows them.

The route (core/route.py) has authenticated the caller; from there:

    route_to_user   From must be the authenticated user (403) → our Route entries consumed,
                    loop check (482) → not our domain, or no such user: `outbound` (the
                    trunks: a DID or a carrier gateway; without them 403, or 404 for our
                    domain) → 484 no user / 480 no contact / 503 too many calls →
                    server transaction (100 Trying at once) → a branch per contact, each with
                    our Via, Record-Route and a client transaction → the best answer (§16.7)
    in_dialog       transaction match (retransmissions, ACK of a non-2xx: hop by hop) →
                    loose routing (§16.4) → the dialog's peer (its NAT address / connection)
                    or the next Route / Request-URI → stateless for an ACK to a 2xx,
                    otherwise a server and a client transaction, responses relayed
    cancel          200 to the CANCEL, CANCEL each ringing branch (§9.1), 487 to the INVITE
    on_response     to its client transaction; a stray 2xx to an INVITE goes on along the
                    Via (RFC 3261 §16.7), anything else stray is dropped
    on_timer        the transaction timers, the ring timeout (timer C-like: CANCEL + 408),
                    the CANCEL guard (64*T1), the maximum call duration

Nothing here reads a clock or awaits: `now` comes in, bytes go out through the route's `send`,
and the Pbx arms one loop timer for `next_deadline()`.

Calls: an initial INVITE that gets this far becomes a `Call` in `self.calls`, followed through
ringing and answered to ended or failed, with a CDR at the end (core/proxy/calls.py). At
`max_call_seconds` after its INVITE a call is hung up: BYE to both sides, built from the dialog
the proxy watched go by (tags, contacts, route sets, the highest CSeq each side used). That is
the toll-fraud answer to a call left up for days; forgetting the call instead would leave both
phones (and a carrier's meter) running.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Protocol, cast

from core.events import EventBus, SecurityEvent
from core.net.flow import Flow
from core.net.identity import ServerIdentity
from core.proxy.calls import ANSWERED, Call, CallTable
from core.proxy.dialogs import (
    bye_for,
    call_for_invite,
    follow_request,
    learn_answer,
    remember_early_dialog,
)
from core.proxy.forking import Branch, ResponseContext, relayed
from core.proxy.routing import (
    RecordRouter,
    branch_id,
    decrement_max_forwards,
    flow_for_uri,
    has_looped,
    loop_hash,
    next_hop,
    push_via,
    remove_own_credentials,
)
from core.registrar.location import LocationService, Target
from core.route import response_flow
from core.settings import ProxySettings
from core.sip.errors import SipParseError
from core.sip.headers import Headers
from core.sip.message import Request, Response, new_branch, new_tag
from core.sip.timers import TimerSettings
from core.sip.transaction import (
    Action,
    Deliver,
    Send,
    State,
    Terminated,
    Timeout,
    Transaction,
    TransportError,
    Unmatched,
)
from core.sip.transaction_client import make_cancel
from core.sip.transaction_server import ServerTransaction
from core.sip.transaction_table import TransactionTable, TransactionTableFull
from core.sip.uri import SipUri, Uri, parse_uri
from core.users import UserDirectory

# §16.2 / §17.2.1: a proxy answers an INVITE with 100 Trying at once, so the caller stops
# retransmitting while the callee's phone takes its time.
PROXY_TIMERS = TimerSettings(trying_delay=0.0)
# Server transaction states past their final answer (a 2xx to an INVITE leaves it Accepted,
# where further 2xx from other branches still go through it).
_ANSWERED_STATES = frozenset({State.COMPLETED, State.CONFIRMED, State.TERMINATED})
# Requests that may create a dialog: we record-route them so the dialog comes back through us.
DIALOG_CREATING = frozenset({"INVITE", "SUBSCRIBE", "REFER", "NOTIFY"})


class Relay(Protocol):
    """What the proxy needs of the route (core/route.py `Route`)."""

    identity: ServerIdentity
    server_header: tuple[str, str]

    def send(self, data: bytes, flow: Flow) -> bool: ...

    def reply(
        self,
        request: Request,
        flow: Flow,
        status: int,
        reason: str | None = None,
        extra: list[tuple[str, str]] | None = None,
    ) -> None: ...


class ProxyHooks(Protocol):
    """What the trunks add to the proxy: the three hooks below, with the same signatures."""

    def outbound(self, request: Request, caller: str | None, flow: Flow, now: float) -> None: ...

    def reroute(
        self, branch: Branch, status: int, response: Response | None, now: float
    ) -> Target | None: ...

    def adapt_branch(self, request: Request, headers: Headers) -> None: ...


class MediaHooks(Protocol):
    """What media anchoring (core/media/anchor.py) needs to see: each SDP body on its way."""

    def request_body(
        self, request: Request, arrived: Flow, out: Flow, target_uri: SipUri | None
    ) -> bytes: ...

    def response_body(
        self, request: Request, response: Response, source: Flow, to: Flow
    ) -> bytes: ...


class Proxy:
    """The proxy core. One per Pbx; every method runs on the event loop and returns at once.

    `outbound(request, caller, flow, now)` is the hook for requests to other domains: it
    answers 403 here, and the trunks (attached as `proxy.hooks`) take it over with the
    carrier routing, which can hand the request back to `fork()` with a gateway target.
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
        timers: TimerSettings = PROXY_TIMERS,
    ) -> None:
        self.settings = settings
        self.realm = realm
        self.relay = relay
        self.users = users
        self.location = location
        self.calls = calls
        self.bus = bus
        self.table = TransactionTable(timers, max_transactions=settings.max_transactions)
        self.record_router = RecordRouter(route_secret)
        self.cancel_timeout = 64 * timers.t1  # §9.1: a cancelled INVITE's last chance
        # Fixed-delay deadlines, so insertion order is deadline order: the first is the next.
        self._ring_deadlines: OrderedDict[ResponseContext, float] = OrderedDict()
        self._cancel_deadlines: OrderedDict[Branch, float] = OrderedDict()
        # Answered INVITEs by (Call-ID, From tag, CSeq), until their ACK goes by.
        self._awaiting_ack: dict[tuple[str, str, int], ResponseContext] = {}
        self.forwarded = 0  # requests sent on (branches, in-dialog, ACKs)
        self.relayed = 0  # responses sent back up
        # The trunks, once attached (issue "Carrier trunks"). A hooks object rather than
        # methods replaced on the instance: the compiled build has no per-instance methods.
        self.hooks: ProxyHooks | None = None
        self.media: MediaHooks | None = None  # media anchoring, when the Pbx sets one up

    @property
    def identity(self) -> ServerIdentity:
        return self.relay.identity  # the Pbx replaces it once the sockets are bound

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
            self.outbound(request, caller, flow, now)
            return
        callee = uri.user
        if not callee:
            reply(request, flow, 484)
            return
        if self.users.get(callee) is None:
            # A number or a DID (issue "Carrier trunks"); without trunks `outbound` says 404.
            self.outbound(request, caller, flow, now)
            return
        bindings = self.location.lookup(callee, now)
        # Contacts the NAT keep-alive gave up on are tried only when nothing else is left.
        reachable = [binding for binding in bindings if binding.reachable] or bindings
        if not reachable:
            reply(request, flow, 480)
            return
        targets = [binding.target() for binding in reachable]
        direction = "internal" if caller is not None else "inbound"  # None: from a carrier
        self.fork(request, targets, flow, now, caller=caller, callee=callee, direction=direction)

    # -- hooks core/trunks/trunks.py takes over (issue "Carrier trunks") --------------------------
    def outbound(self, request: Request, caller: str | None, flow: Flow, now: float) -> None:
        """A request for another domain, a tel: URI, or a user we do not have. Without
        trunks: 404 for our domain, 403 for any other (we are no open relay)."""
        if self.hooks is not None:
            self.hooks.outbound(request, caller, flow, now)
            return
        uri = request.uri
        if isinstance(uri, SipUri) and self.identity.is_us(uri):
            self.relay.reply(request, flow, 404)
            return
        self.relay.reply(request, flow, 403, "Outbound calls not allowed")

    def reroute(
        self, branch: Branch, status: int, response: Response | None, now: float
    ) -> Target | None:
        """A branch ended with a non-2xx final (`response` None: timeout or transport error):
        a target to try in its place (the trunks: a gateway's challenge answered, the next
        gateway), or None to count the answer as usual."""
        if self.hooks is not None:
            return self.hooks.reroute(branch, status, response, now)
        return None

    def adapt_branch(self, request: Request, headers: Headers) -> None:
        """The copy of `request` about to go out (`headers` already copied): the trunks set
        the caller ID and shift the CSeq of calls to a gateway. Nothing by default."""
        if self.hooks is not None:
            self.hooks.adapt_branch(request, headers)

    def absorb_retransmission(self, request: Request, flow: Flow, now: float) -> bool:
        """A request a server transaction already owns (a UDP retransmission): handled there."""
        try:
            actions = self.table.receive_request(request, flow, now)
        except SipParseError:
            return False
        if actions and type(actions[0]) is Unmatched:
            return False
        self._run(actions, now)
        return True

    def in_dialog(self, request: Request, flow: Flow, now: float) -> None:
        """A request with a To tag: a retransmission, an ACK, or a mid-dialog request to relay."""
        method = request.method
        try:
            actions = self.table.receive_request(request, flow, now)
        except SipParseError:
            return
        if not (actions and type(actions[0]) is Unmatched):
            self._run(actions, now)
            # An ACK reusing the INVITE's branch for a 2xx is end to end: pass it on (§13.2.2.4).
            transaction = _transaction_of(actions)
            if method != "ACK" or transaction is None or transaction.state is not State.ACCEPTED:
                return
        if method == "CANCEL":
            self.cancel(request, flow, now)
            return
        identity = self.identity
        call = self.calls.get(request.call_id)
        peer = call.peer_flow(request.from_tag, request.to_tag) if call is not None else None
        try:
            recorded = self.record_router.consume(request, identity)
            if not recorded and peer is None:
                # Neither a Route we signed nor a dialog we know: not ours to relay.
                if method != "ACK":
                    self.relay.reply(request, flow, 404, "Not Here")
                return
            destination = self._in_dialog_destination(request, peer, flow)
        except SipParseError:
            if method != "ACK":
                self.relay.reply(request, flow, 400, "Bad Route")
            return
        if destination is None:
            if method != "ACK":
                self.relay.reply(request, flow, 416)
            return
        if method == "ACK":
            self._forward_ack(request, destination, flow)
            self._acknowledged(request, now)
            return
        if has_looped(request, identity):
            self._loop_detected(request, flow, now)
            return
        if call is not None:
            hung_up = follow_request(call, request)
            if hung_up is not None:
                self.calls.ended(call, now, hung_up)
        self._forward_in_dialog(request, flow, destination, now)

    def cancel(self, request: Request, flow: Flow, now: float) -> None:
        """§16.10: 200 to the CANCEL, CANCEL the branches, 487 to the INVITE."""
        try:
            server = self.table.match_cancel(request)
        except SipParseError:
            self.relay.reply(request, flow, 400, "Bad CANCEL")
            return
        if server is None:
            self.relay.reply(request, flow, 481)
            return
        self.relay.reply(request, flow, 200)
        context = server.user_data
        if not isinstance(context, ResponseContext) or context.final_sent:
            return
        self._cancel_branches(context, now)
        answer = context.own_answer(487, None, self.relay.server_header)
        self._final_to_caller(context, answer, now, "cancelled by caller")

    def on_response(self, response: Response, flow: Flow, now: float) -> bool:
        """A response from downstream. False when it is neither ours to relay nor a stray 2xx
        we sent on (see `_forward_stray_2xx`)."""
        try:
            actions = self.table.receive_response(response, flow, now)
        except SipParseError:
            return False
        if actions and type(actions[0]) is Unmatched:
            return self._forward_stray_2xx(response, flow)
        self._run(actions, now)
        return True

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
        started = self._new_server(request, flow, now)
        if started is None:
            return
        server, server_actions = started
        context = ResponseContext(server, request, new_tag())
        server.user_data = context
        self._run(server_actions, now)  # 100 Trying before anything else
        if method == "INVITE":
            context.call = self._start_call(request, caller, callee, flow, now, direction)
            self._ring_deadlines[context] = now + self.settings.invite_timeout
        request_hash = loop_hash(request, request.headers.values("via")[0])
        record_route = method in DIALOG_CREATING
        branches = []
        for index, target in enumerate(targets):
            try:
                uri = parse_uri(target.request_uri)
            except SipParseError:
                continue
            out = self._branch_request(
                request, uri, target.route, flow, target.flow, branch_id(request_hash, index),
                record_route,
            )  # fmt: skip
            branches.append(context.add_branch(out, target.flow))
        if not branches:
            self._final_to_caller(
                context, context.own_answer(480, None, self.relay.server_header), now
            )
            return
        # Every branch exists before the first is sent, so one failing at once cannot make
        # the context look finished while others are still to start.
        for branch in branches:
            self._start_branch(branch, now)

    # -- timers -----------------------------------------------------------------------------
    def next_deadline(self) -> float | None:
        """The earliest time `on_timer` has work: transactions, ring timeouts, CANCEL guards,
        or the oldest call reaching the maximum duration."""
        deadline = self.table.next_deadline()
        for queue in (self._ring_deadlines, self._cancel_deadlines):
            first = next(iter(queue.values()), None)  # the oldest entry is the earliest
            if first is not None and (deadline is None or first < deadline):
                deadline = first
        oldest = self.calls.oldest()
        if oldest is not None:
            limit = oldest.started_at + self.settings.max_call_seconds
            if deadline is None or limit < deadline:
                deadline = limit
        return deadline

    def on_timer(self, now: float) -> None:
        self._run(self.table.on_timer(now), now)
        ring = self._ring_deadlines
        while ring:
            context = next(iter(ring))
            if ring[context] > now:
                break
            del ring[context]
            self._ring_timeout(context, now)
        guard = self._cancel_deadlines
        while guard:
            branch = next(iter(guard))
            if guard[branch] > now:
                break
            del guard[branch]
            if branch.pending and branch.transaction is not None:
                # §9.1: no final answer 64*T1 after our CANCEL; give the branch up.
                self._run(self.table.terminate(branch.transaction), now)
        max_seconds = self.settings.max_call_seconds
        while (call := self.calls.oldest()) is not None and call.started_at + max_seconds <= now:
            self._end_overlong_call(call, now)

    # -- transactions -----------------------------------------------------------------------
    def _run(self, actions: list[Action], now: float) -> None:
        """Carry out what the transaction layer asked for."""
        for action in actions:
            # isinstance narrows the union for the type checker and costs one C check.
            if isinstance(action, Send):
                transaction = action.transaction
                if not self.relay.send(action.data, _flow(transaction)):
                    self._run(self.table.transport_error(transaction, now), now)
            elif isinstance(action, Deliver):
                branch = action.transaction.user_data
                if isinstance(branch, Branch) and isinstance(action.message, Response):
                    self._branch_response(branch, action.message, now)
            elif isinstance(action, Timeout):
                branch = action.transaction.user_data
                if isinstance(branch, Branch):
                    self._branch_failed(branch, 408, "Request Timeout", now)
            elif isinstance(action, TransportError):
                branch = action.transaction.user_data
                if isinstance(branch, Branch):
                    self._branch_failed(branch, 503, "Service Unavailable", now)
            elif isinstance(action, Terminated):
                self._terminated(action.transaction, now)

    def _terminated(self, transaction: Transaction, now: float) -> None:
        """A transaction is gone. Its links with our records are cut here: they point at each
        other (transaction ↔ branch ↔ context), and a cycle waits for Python's cyclic garbage
        collector, whose full passes over tens of thousands of live objects stall the loop at
        high call rates; without the cycles, reference counting frees them at once."""
        owner = transaction.user_data
        transaction.user_data = None
        if isinstance(owner, Branch):
            owner.transaction = None
            if owner.pending:
                self._branch_failed(owner, 408, "Request Timeout", now)
        elif isinstance(owner, ResponseContext):
            key = owner.ack_key
            if key is not None and self._awaiting_ack.get(key) is owner:
                del self._awaiting_ack[key]
            if owner.pending:
                # The caller is out of reach (a transport error): no one to ring for.
                if owner.is_invite:
                    self._cancel_branches(owner, now)
            else:
                owner.branches = []

    def _new_server(
        self, request: Request, flow: Flow, now: float
    ) -> tuple[ServerTransaction, list[Action]] | None:
        """A server transaction answering along §18.2.2; None (503 sent) when the table is full."""
        try:
            return self.table.new_server(request, response_flow(request.top_via, flow), now)
        except TransactionTableFull as full:
            extra = [("Retry-After", str(full.retry_after))]
            self.relay.reply(request, flow, full.status, full.reason, extra)
        except ValueError:
            pass  # a live transaction owns it: a retransmission that raced its first copy
        return None

    def _start_branch(self, branch: Branch, now: float) -> None:
        try:
            transaction, actions = self.table.new_client(
                branch.request, branch.flow, now, user_data=branch
            )
        except (TransactionTableFull, ValueError):
            self._branch_failed(branch, 503, "Service Unavailable", now)
            return
        branch.transaction = transaction
        self.forwarded += 1
        self._run(actions, now)

    def _branch_request(
        self,
        request: Request,
        uri: Uri,
        route: tuple[str, ...],
        arrived: Flow,
        out: Flow,
        branch: str,
        record_route: bool,
    ) -> Request:
        """The copy of `request` a branch sends (§16.6): new Request-URI, Path as Route,
        Max-Forwards less one, our credentials removed, our Record-Route and Via on top."""
        headers = request.headers.copy()
        decrement_max_forwards(headers, request.max_forwards)
        remove_own_credentials(headers, self.realm)
        self.adapt_branch(request, headers)  # issue "Carrier trunks"
        for value in reversed(route):
            headers.prepend("Route", value)
        identity = self.identity
        if record_route:
            self.record_router.record(headers, identity, arrived, out, request.call_id)
        ours = push_via(headers, identity, out, branch)
        # The client transaction matches on the top Via: hand it the Vias already parsed
        # (ours and the request's own) instead of having every one parsed again.
        vias = [ours, *request.vias]
        headers.view("via", lambda _top: vias)
        body = request.body
        if self.media is not None:
            body = self.media.request_body(
                request,
                arrived,
                out,
                uri if isinstance(uri, SipUri) and request.to_tag is None else None,
            )
        return Request(request.method, uri, headers, body)

    # -- responses from branches ----------------------------------------------------------------
    def _branch_response(self, branch: Branch, response: Response, now: float) -> None:
        context = branch.context
        status = response.status
        if status < 200:
            if not branch.provisional:
                branch.provisional = True
                if branch.cancel_pending:
                    self._send_cancel(branch, now)  # §9.1: now a CANCEL may follow
                    return
            if status == 100 or context.cancelled or context.final_sent:
                return
            call = context.call
            if call is not None:
                remember_early_dialog(call, response, branch.flow)
                self.calls.ringing(call, now)
            self._to_caller(context, self._with_media(context, branch, response), now)
            return
        if status < 300:
            context.branch_finished(branch, status)
            self._cancel_deadlines.pop(branch, None)
            self._answered(context, branch, response, now)
            if context.pending == 0:
                self._release(context)
            return
        if not context.branch_finished(branch, status):
            return
        self._cancel_deadlines.pop(branch, None)
        if self._rerouted(branch, status, response, now):
            return
        context.consider(status, response.reason, relayed(response))
        if status >= 600 and context.is_invite:
            self._cancel_branches(context, now)  # §16.7 step 5: no branch will do better
        if context.pending == 0:
            self._conclude(context, now)

    def _answered(
        self, context: ResponseContext, branch: Branch, response: Response, now: float
    ) -> None:
        """Every 2xx goes up (§16.7 step 5); the first also ends the forking and the ringing."""
        call = context.call
        self._to_caller(context, self._with_media(context, branch, response), now)
        if context.answered:
            if call is not None:
                remember_early_dialog(call, response, branch.flow)
            return
        context.answered = True
        context.final_sent = True
        self._ring_deadlines.pop(context, None)
        if call is not None:
            learn_answer(call, response, branch.flow)
            self.calls.answered(call, now, response.status)
        if context.is_invite:
            self._await_ack(context)
            self._cancel_branches(context, now)

    def _with_media(self, context: ResponseContext, branch: Branch, response: Response) -> Response:
        """The response as it goes up, its SDP anchored when the call's media is."""
        up = relayed(response)
        if self.media is not None and response.body:
            up.body = self.media.response_body(
                context.request, response, branch.flow, _flow(context.server)
            )
        return up

    def _branch_failed(self, branch: Branch, status: int, reason: str, now: float) -> None:
        """A branch ended without a response of its own: timeout, transport error, abandoned."""
        context = branch.context
        if not context.branch_finished(branch, status):
            return
        self._cancel_deadlines.pop(branch, None)
        if self._rerouted(branch, status, None, now):
            return
        context.consider(status, reason, None)
        if context.pending == 0:
            self._conclude(context, now)

    def _rerouted(self, branch: Branch, status: int, response: Response | None, now: float) -> bool:
        """issue "Carrier trunks": sequential forking (§16.6, RFC 3263 §4.3). When `reroute`
        names a target, a new branch replaces the finished one, so the caller hears nothing
        of the failed attempt."""
        context = branch.context
        if context.cancelled or context.final_sent:
            return False
        target = self.reroute(branch, status, response, now)
        if target is None:
            return False
        try:
            uri = parse_uri(target.request_uri)
        except SipParseError:
            return False
        request = context.request
        request_hash = loop_hash(request, request.headers.values("via")[0])
        out = self._branch_request(
            request, uri, target.route, _flow(context.server), target.flow,
            branch_id(request_hash, len(context.branches)), request.method in DIALOG_CREATING,
        )  # fmt: skip
        self._start_branch(context.add_branch(out, target.flow), now)
        return True

    def _conclude(self, context: ResponseContext, now: float) -> None:
        """Every branch is done: the best final answer goes up, unless one already did."""
        if not context.final_sent:
            self._final_to_caller(context, context.best_answer(self.relay.server_header), now)
        self._release(context)

    @staticmethod
    def _release(context: ResponseContext) -> None:
        """A non-INVITE answered with every branch done: its server transaction lingers 64*T1
        to answer retransmissions (timer J) and needs nothing of ours for it, so the context,
        its branches and their requests go now rather than half a minute later. (An INVITE's
        context stays for a CANCEL, and for its ACK.)"""
        if not context.is_invite:
            context.server.user_data = None
            context.branches = []

    def _final_to_caller(
        self, context: ResponseContext, response: Response, now: float, call_reason: str = ""
    ) -> None:
        """A non-2xx final answer to the sender; the call, if any, failed."""
        context.final_sent = True
        self._ring_deadlines.pop(context, None)
        self._to_caller(context, response, now)
        call = context.call
        if call is not None:
            self.calls.failed(call, now, response.status, call_reason or response.reason)

    def _to_caller(self, context: ResponseContext, response: Response, now: float) -> None:
        _restore_caller_fields(response, context.request)  # issue "Carrier trunks"
        server = context.server
        self.relayed += 1
        if server.state not in _ANSWERED_STATES:
            self._run(self.table.respond(server, response, now), now)
        elif 200 <= response.status < 300:
            # A 2xx after our own final answer (a CANCEL raced the answer): it still goes up,
            # straight along the Via (§16.7 step 5); the caller ACKs and hangs up.
            self.relay.send(response.to_bytes(), _flow(server))

    # -- cancelling -------------------------------------------------------------------------
    def _cancel_branches(self, context: ResponseContext, now: float) -> None:
        for branch in context.branches_to_cancel():
            if branch.provisional:
                self._send_cancel(branch, now)
            else:
                branch.cancel_pending = True  # §9.1: not before a provisional response

    def _send_cancel(self, branch: Branch, now: float) -> None:
        branch.cancel_pending = False
        branch.cancelled = True
        if branch.transaction is None:
            return
        try:
            _transaction, actions = self.table.new_client(
                make_cancel(branch.request), branch.flow, now
            )
        except (TransactionTableFull, ValueError):
            actions = []
        self._cancel_deadlines[branch] = now + self.cancel_timeout
        self._run(actions, now)

    def _ring_timeout(self, context: ResponseContext, now: float) -> None:
        """Nobody answered within `invite_timeout`: CANCEL the branches, 408 to the caller."""
        if context.final_sent:
            return
        self._cancel_branches(context, now)
        answer = context.own_answer(408, None, self.relay.server_header)
        self._final_to_caller(context, answer, now, "no answer")

    # -- in-dialog --------------------------------------------------------------------------
    def _in_dialog_destination(
        self, request: Request, peer: Flow | None, flow: Flow
    ) -> Flow | None:
        """A Route left after ours decides (another proxy); else the peer's own flow (its NAT
        address, its TCP connection); else the Request-URI (§16.12)."""
        if request.headers.get("route") is not None:
            return flow_for_uri(next_hop(request), self.identity, flow)
        if peer is not None:
            return peer
        return flow_for_uri(request.uri, self.identity, flow)

    def _forward_in_dialog(
        self, request: Request, flow: Flow, destination: Flow, now: float
    ) -> None:
        started = self._new_server(request, flow, now)
        if started is None:
            return
        server, server_actions = started
        context = ResponseContext(server, request, new_tag())
        server.user_data = context
        self._run(server_actions, now)
        if request.method == "INVITE":
            self._ring_deadlines[context] = now + self.settings.invite_timeout
        request_hash = loop_hash(request, request.headers.values("via")[0])
        out = self._branch_request(
            request, request.uri, (), flow, destination, branch_id(request_hash, 0), False
        )
        self._start_branch(context.add_branch(out, destination), now)

    def _forward_ack(self, ack: Request, destination: Flow, arrived: Flow | None = None) -> None:
        """An ACK to a 2xx is its own transaction end to end: forwarded statelessly (§16.11)."""
        headers = ack.headers.copy()
        decrement_max_forwards(headers, ack.max_forwards)
        remove_own_credentials(headers, self.realm)
        self.adapt_branch(ack, headers)  # issue "Carrier trunks"
        branch = branch_id(loop_hash(ack, ack.headers.values("via")[0]), "a")
        push_via(headers, self.identity, destination, branch)
        self.forwarded += 1
        body = ack.body
        if self.media is not None and body and arrived is not None:
            body = self.media.request_body(ack, arrived, destination, None)  # a late answer
        self.relay.send(Request("ACK", ack.uri, headers, body).to_bytes(), destination)

    # -- after the 2xx ------------------------------------------------------------------------
    # RFC 6026 keeps an answered INVITE's transactions for 64*T1 (timers L and M), to absorb
    # INVITE retransmissions and to pass up the UAS's 2xx retransmissions. Once the caller's
    # ACK has gone by, the caller has its 2xx and has long stopped resending the INVITE, so
    # both transactions are let go at once: at hundreds of calls a second, half a minute of
    # every call's INVITE, 2xx and SDP is most of the proxy's memory. If that ACK is lost on
    # its way to the callee, the callee resends its 2xx, which no transaction owns any more:
    # it goes up statelessly (`_forward_stray_2xx`, RFC 3261 §16.7's original rule) and the
    # caller, a UAC that resends its ACK for every 2xx (§13.2.2.4), answers it again.
    def _await_ack(self, context: ResponseContext) -> None:
        request = context.request
        cseq = request.cseq
        if cseq is None:
            return
        key = (request.call_id or "", request.from_tag or "", cseq.number)
        context.ack_key = key
        self._awaiting_ack[key] = context

    def _acknowledged(self, ack: Request, now: float) -> None:
        cseq = ack.cseq
        if cseq is None:
            return
        context = self._awaiting_ack.pop((ack.call_id or "", ack.from_tag or "", cseq.number), None)
        if context is None:
            return
        for branch in context.branches:
            transaction = branch.transaction
            if transaction is not None and transaction.state is State.ACCEPTED:
                self._run(self.table.terminate(transaction), now)
        self._run(self.table.terminate(context.server), now)

    def _forward_stray_2xx(self, response: Response, flow: Flow) -> bool:
        """A 2xx to an INVITE that no transaction owns: ours if the top Via is, then sent on
        along the next Via (§16.7 step 9, §18.2.2). Anything else stray is dropped."""
        try:
            vias = response.vias
            cseq = response.cseq
        except SipParseError:
            return False
        if not (200 <= response.status < 300) or cseq is None or cseq.method != "INVITE":
            return False
        if len(vias) < 2 or not self.identity.is_own_address(vias[0].host, vias[0].port):
            return False
        call = self.calls.get(response.call_id)
        if call is not None and call.caller_flow is not None:
            destination = call.caller_flow
        else:
            next_via = vias[1]
            host = next_via.received or next_via.host
            port = next_via.rport or next_via.port or 5060
            destination = Flow(next_via.transport.lower(), (host, port), flow.local)
        self.relayed += 1
        self.relay.send(relayed(response).to_bytes(), destination)
        return True

    # -- calls ------------------------------------------------------------------------------
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

    def end_call(self, call_id: str, reason: str, now: float) -> None:
        """Hang a call up from here: BYE both sides, `reason` in its CDR (an unanswered one is
        just dropped)."""
        call = self.calls.get(call_id)
        if call is None:
            return
        if call.state == ANSWERED:
            self._hang_up(call, towards_callee=True, now=now)
            self._hang_up(call, towards_callee=False, now=now)
            self.calls.ended(call, now, reason)
        else:
            self.calls.failed(call, now, 408, reason)

    def _end_overlong_call(self, call: Call, now: float) -> None:
        """`max_call_seconds` reached: hang up both sides (an unanswered one is just dropped)."""
        self.end_call(call.call_id, "maximum call duration", now)

    def _hang_up(self, call: Call, *, towards_callee: bool, now: float) -> None:
        """A BYE from us in the name of the other side (§15.1.1), on a client transaction."""
        to_callee, to_caller = self.record_router.beyond_us(
            call.record_route, self.identity, call.call_id
        )
        route = to_callee if towards_callee else to_caller
        flow = call.callee_flow if towards_callee else call.caller_flow
        bye = bye_for(call, towards_callee=towards_callee, route=route)
        if bye is None or flow is None:
            return
        headers = bye.headers
        self.adapt_branch(bye, headers)  # issue "Carrier trunks": the gateway's CSeq
        destination = flow
        if route:
            try:
                destination = flow_for_uri(next_hop(bye), self.identity, flow) or flow
            except SipParseError:
                return
        push_via(headers, self.identity, destination, new_branch())
        try:
            _transaction, actions = self.table.new_client(bye, destination, now)
        except (TransactionTableFull, ValueError):
            return
        self._run(actions, now)

    # -- checks -----------------------------------------------------------------------------
    def _consume_and_check_loop(self, request: Request, flow: Flow, now: float) -> bool:
        """Our own Route entries off the top (an outbound-proxy setting puts one there), and
        482 for a request that has been here before in the same shape (§16.3 step 4)."""
        try:
            self.record_router.consume(request, self.identity)
        except SipParseError:
            self.relay.reply(request, flow, 400, "Bad Route")
            return False
        if has_looped(request, self.identity):
            self._loop_detected(request, flow, now)
            return False
        return True

    def _loop_detected(self, request: Request, flow: Flow, now: float) -> None:
        self.relay.reply(request, flow, 482)
        detail = f"{request.method} {request.uri}"
        self.bus.publish(
            SecurityEvent("loop", flow.ip, detail, user_agent=request.user_agent or "", at=now)
        )


def _from_user(request: Request) -> str | None:
    address = request.from_addr
    return None if address is None else address.uri.user


def _restore_caller_fields(response: Response, request: Request) -> None:
    """issue "Carrier trunks": a branch may have gone out with a higher CSeq (a gateway's
    challenge answered) or another From (the caller ID); the response carries the request's
    own (§8.2.6.2), as the caller sent them."""
    response_headers = response.headers
    for name in ("CSeq", "From"):
        value = request.headers.get(name)
        if value is not None and response_headers.get(name) != value:
            response_headers.set(name, value)


def _transaction_of(actions: list[Action]) -> Transaction | None:
    for action in actions:
        transaction = getattr(action, "transaction", None)
        if transaction is not None:
            return transaction  # type: ignore[no-any-return]
    return None


def _flow(transaction: Transaction) -> Flow:
    """The flow of a transaction the proxy made: a `Flow` (the sans-I/O layer only knows it
    as something with `reliable`)."""
    return cast(Flow, transaction.flow)
