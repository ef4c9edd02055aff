"""The proxy's transaction side: a request forwarded on branches, their answers brought back.

One forwarded request (RFC 3261 §16.6) is a server transaction towards the sender, a
`ResponseContext` (core/proxy/forking.py) and a client transaction per branch. This module
runs them: it carries out what the transaction layer asks (`run`), sends each branch's copy,
takes each branch's responses to the best answer for the sender (§16.7), CANCELs the branches
still ringing (§9.1, §16.10) and keeps the deadlines that are the proxy's own (the ring
timeout, the CANCEL guard). What a request is and where it goes is decided above, in
core/proxy/proxy.py (new requests) and core/proxy/dialog_relay.py (requests in a dialog).

RFC 6026 keeps an answered INVITE's transactions for 64*T1 (timers L and M), to absorb INVITE
retransmissions and to pass up the UAS's 2xx retransmissions. Once the caller's ACK has gone
by, the caller has its 2xx and has long stopped resending the INVITE, so both transactions are
let go at once (`acknowledged`): at hundreds of calls a second, half a minute of every call's
INVITE, 2xx and SDP is most of the proxy's memory. If that ACK is lost on its way to the
callee, the callee resends its 2xx, which no transaction owns any more: it goes up statelessly
(core/proxy/stray.py, RFC 3261 §16.7's original rule) and the caller, a UAC that resends its
ACK for every 2xx (§13.2.2.4), answers it again.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterator
from typing import Protocol, TypeVar, cast

from core.events import EventBus, SecurityEvent
from core.net.flow import Flow
from core.net.identity import ServerIdentity
from core.outbox import response_flow
from core.proxy.branch_mac import BranchSigner
from core.proxy.calls import CallTable
from core.proxy.decisions import Carriers, apply_rewrite
from core.proxy.dialogs import learn_answer, remember_early_dialog
from core.proxy.forking import Branch, ResponseContext, relayed
from core.proxy.routing import (
    RecordRouter,
    branch_id,
    decrement_max_forwards,
    loop_hash,
    push_via,
    remove_own_credentials,
)
from core.proxy.stray import stray_2xx_destination
from core.registrar.location import Target
from core.security.reports import SecurityReport, publish_each
from core.settings import ProxySettings
from core.sip.errors import SipParseError
from core.sip.headers import Headers
from core.sip.message import Request, Response
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
from core.sip.transaction_table import TransactionTable, TransactionTableFull
from core.sip.uri import SipUri, Uri, parse_uri

K = TypeVar("K")  # a deadline table's key: a response context or a branch
# Server transaction states past their final answer (a 2xx to an INVITE leaves it Accepted,
# where further 2xx from other branches still go through it).
_ANSWERED_STATES = frozenset({State.COMPLETED, State.CONFIRMED, State.TERMINATED})
# Requests that may create a dialog: we record-route them so the dialog comes back through us.
DIALOG_CREATING = frozenset({"INVITE", "SUBSCRIBE", "REFER", "NOTIFY"})


class Relay(Protocol):
    """What the proxy needs to send (core/outbox.py `Outbox`)."""

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


class MediaHooks(Protocol):
    """What media anchoring (core/media/anchor.py) needs to see: each SDP body on its way."""

    def request_body(
        self, request: Request, arrived: Flow, out: Flow, target_uri: SipUri | None
    ) -> bytes:
        """The body `request` goes on with. Asked for every request with a body and every
        INVITE (one without SDP makes a late offer); a bodiless ACK, BYE, UPDATE... has
        nothing to anchor and goes on without asking."""

    def response_body(self, response: Response, source: Flow, to: Flow) -> bytes: ...

    def offer_failed(self, request: Request) -> None:
        """`request` got its final failure (relayed or ours): an offer it carried is void."""


class Forwarder:
    """Transactions, branches and answers of every request the proxy forwards."""

    def __init__(
        self,
        *,
        settings: ProxySettings,
        realm: str,
        relay: Relay,
        calls: CallTable,
        carriers: Carriers,
        bus: EventBus,
        route_secret: bytes,
        timers: TimerSettings,
        security_report: SecurityReport | None = None,
        media: MediaHooks | None = None,
    ) -> None:
        self.settings = settings
        self.realm = realm
        self.relay = relay
        self.calls = calls
        self.carriers = carriers
        self.bus = bus
        self.table = TransactionTable(timers, max_transactions=settings.max_transactions)
        # A dialog's Record-Route token outlives the longest call it can carry.
        self.record_router = RecordRouter(
            route_secret, lifetime=settings.max_call_seconds + settings.invite_timeout + 3_600.0
        )
        self.branch_signer = BranchSigner(route_secret)
        # Refusals the proxy reports, through the security layer's throttle.
        self.security_report: SecurityReport = security_report or publish_each(bus)
        self.cancel_timeout = 64 * timers.t1  # §9.1: a cancelled INVITE's last chance
        # Fixed-delay deadlines, so insertion order is deadline order: the first is the next.
        self._ring_deadlines: OrderedDict[ResponseContext, float] = OrderedDict()
        self._cancel_deadlines: OrderedDict[Branch, float] = OrderedDict()
        # Answered INVITEs by (Call-ID, From tag, CSeq), until their ACK goes by.
        self._awaiting_ack: dict[tuple[str, str, int], ResponseContext] = {}
        self.forwarded = 0  # requests sent on (branches, in-dialog, ACKs)
        self.relayed = 0  # responses sent back up
        self.media = media  # media anchoring (core/media/anchor.py), when calls are anchored

    @property
    def identity(self) -> ServerIdentity:
        return self.relay.identity

    # -- a forwarded request ----------------------------------------------------------------
    def open(self, request: Request, flow: Flow, now: float) -> ResponseContext | None:
        """The server transaction and response context of a request to forward; its 100
        Trying (an INVITE's) goes out at once. None: not to be forwarded (503 sent when the
        table is full; a retransmission that raced its first copy is dropped)."""
        try:
            started = self.table.new_server(request, response_flow(request.top_via, flow), now)
        except TransactionTableFull as full:
            extra = [("Retry-After", str(full.retry_after))]
            self.relay.reply(request, flow, full.status, full.reason, extra)
            return None
        except ValueError:
            return None  # a live transaction owns it: a retransmission that raced its first copy
        server, server_actions = started
        context = ResponseContext(server, request)
        server.user_data = context
        self.run(server_actions, now)
        return context

    def ring_until(self, context: ResponseContext, deadline: float) -> None:
        """An INVITE's ring timeout: at `deadline`, CANCEL its branches and answer 408."""
        self._ring_deadlines[context] = deadline

    def start(self, branch: Branch, now: float) -> None:
        """Send a branch on its own client transaction."""
        try:
            transaction, actions = self.table.new_client(
                branch.request, branch.flow, now, user_data=branch
            )
        except (TransactionTableFull, ValueError):
            self._branch_failed(branch, 503, "Service Unavailable", now)
            return
        branch.transaction = transaction
        self.forwarded += 1
        self.run(actions, now)

    def branch(
        self,
        context: ResponseContext,
        uri: Uri,
        route: tuple[str, ...],
        arrived: Flow,
        out: Flow,
        branch: str,
        record_route: bool,
    ) -> Branch:
        """A branch of `context` towards `out` with Via branch `branch`, not yet started
        (`start`). The copy of the request it sends (§16.6): new Request-URI, Path as Route,
        Max-Forwards less one, our credentials removed, our Record-Route and Via on top."""
        request = context.request
        headers = self.copy_headers(request, parsed_cseq=True)
        for value in reversed(route):
            headers.prepend("Route", value)
        identity = self.identity
        if record_route:
            secure = isinstance(request.uri, SipUri) and request.uri.secure
            self.record_router.record(
                headers, identity, arrived, out, request.call_id, request.from_tag, secure
            )
        vias = request.vias  # a copy of the parsed list: ours goes on top of it below
        if request.method == "INVITE":
            # Signed, so a stray 2xx can prove it answers this request (core/proxy/stray.py,
            # core/proxy/branch_mac.py); no other method's stray response is passed on.
            branch = self.branch_signer.sign(branch, vias[0], request.call_id)
        # The client transaction matches on the top Via: hand it the Vias already parsed
        # (ours and the request's own) instead of having every one parsed again.
        vias.insert(0, push_via(headers, identity, out, branch))
        headers.view("via", lambda _top: vias)
        body = request.body
        if self.media is not None and (body or request.method == "INVITE"):
            # A new call's branch names its contact; in a dialog there is none to judge.
            target = uri if isinstance(uri, SipUri) and request.to_tag is None else None
            body = self.media.request_body(request, arrived, out, target)
        return context.add_branch(Request(request.method, uri, headers, body), out)

    def copy_headers(self, request: Request, parsed_cseq: bool = False) -> Headers:
        """The headers of a copy of `request` to send on (§16.6 steps 3-5): Max-Forwards less
        one, our own credentials removed, and what the carriers change for a gateway.

        `parsed_cseq`: the copy starts with the request's parsed CSeq as its view (a client
        transaction reads it to match responses), which a carrier's CSeq shift replaces."""
        headers = request.headers.copy()
        if parsed_cseq:
            cseq = request.cseq
            headers.view("cseq", lambda _value: cseq)
        decrement_max_forwards(headers, request.max_forwards)
        remove_own_credentials(headers, self.realm)
        self.rewrite_for_carrier(request, headers)
        return headers

    def rewrite_for_carrier(self, request: Request, headers: Headers) -> None:
        """A request of an outbound call's caller, on its way to the gateway: the CSeq
        shift, the caller ID and the credentials the carriers decided (decisions.py)."""
        rewrite = self.carriers.rewrite(request)
        if rewrite is not None:
            apply_rewrite(rewrite, request, headers)

    # -- the transaction layer's actions --------------------------------------------------
    def run(self, actions: list[Action], now: float) -> None:
        """Carry out what the transaction layer asked for."""
        for action in actions:
            # isinstance narrows the union for the type checker and costs one C check.
            if isinstance(action, Send):
                transaction = action.transaction
                if not self.relay.send(action.data, _flow(transaction)):
                    self.run(self.table.transport_error(transaction, now), now)
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
                    self.cancel_branches(owner, now)
            else:
                owner.branches = []

    # -- responses ------------------------------------------------------------------------
    def on_response(self, response: Response, flow: Flow, now: float) -> bool:
        """A response from downstream. False when it is neither ours to relay nor a stray 2xx
        we sent on (core/proxy/stray.py)."""
        try:
            actions = self.table.receive_response(response, flow, now)
        except SipParseError:
            return False
        if actions and type(actions[0]) is Unmatched:
            destination = stray_2xx_destination(
                response, flow, self.identity, self.calls, self.branch_signer
            )
            if destination is None:
                return False
            self.relayed += 1
            up = relayed(response)
            if self.media is not None and response.body:
                up.body = self.media.response_body(response, flow, destination)
            self.relay.send(up.to_bytes(), destination)
            return True
        self.run(actions, now)
        return True

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
            self.to_caller(context, self._with_media(context, branch, response), now)
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
            self.cancel_branches(context, now)  # §16.7 step 5: no branch will do better
        if context.pending == 0:
            self._conclude(context, now)

    def _answered(
        self, context: ResponseContext, branch: Branch, response: Response, now: float
    ) -> None:
        """Every 2xx goes up (§16.7 step 5); the first also ends the forking and the ringing."""
        call = context.call
        self.to_caller(context, self._with_media(context, branch, response), now)
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
            self.cancel_branches(context, now)

    def _with_media(self, context: ResponseContext, branch: Branch, response: Response) -> Response:
        """The response as it goes up, its SDP anchored when the call's media is."""
        up = relayed(response)
        if self.media is not None and response.body:
            up.body = self.media.response_body(response, branch.flow, _flow(context.server))
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
        """Sequential forking (§16.6, RFC 3263 §4.3): when the carriers name a target for a
        failed branch (its gateway's challenge answered, the next gateway), a new branch
        replaces it, so the caller hears nothing of the failed attempt."""
        context = branch.context
        if context.cancelled or context.final_sent:
            return False
        target = self.carriers.reroute(branch, status, response, now)
        if target is None:
            return False
        return self.branch_to(context, target, len(context.branches), now)

    def branch_to(self, context: ResponseContext, target: Target, index: int, now: float) -> bool:
        """Start branch number `index` of `context` towards `target`. False: its URI does not
        parse (nothing sent)."""
        try:
            uri = parse_uri(target.request_uri)
        except SipParseError:
            return False
        request = context.request
        branch = branch_id(request_hash(request), index)
        record_route = request.method in DIALOG_CREATING
        arrived = _flow(context.server)
        self.start(
            self.branch(context, uri, target.route, arrived, target.flow, branch, record_route), now
        )
        return True

    def _conclude(self, context: ResponseContext, now: float) -> None:
        """Every branch is done: the best final answer goes up, unless one already did."""
        if not context.final_sent:
            self.final_to_caller(context, context.best_answer(self.relay.server_header), now)
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

    def final_to_caller(
        self, context: ResponseContext, response: Response, now: float, call_reason: str = ""
    ) -> None:
        """A non-2xx final answer to the sender; the call, if any, failed."""
        context.final_sent = True
        self._ring_deadlines.pop(context, None)
        self.to_caller(context, response, now)
        if self.media is not None:
            self.media.offer_failed(context.request)
        call = context.call
        if call is not None:
            self.calls.failed(call, now, response.status, call_reason or response.reason)

    def to_caller(self, context: ResponseContext, response: Response, now: float) -> None:
        _restore_caller_fields(response, context)
        server = context.server
        self.relayed += 1
        if server.state not in _ANSWERED_STATES:
            self.run(self.table.respond(server, response, now), now)
        elif 200 <= response.status < 300:
            # A 2xx after our own final answer (a CANCEL raced the answer): it still goes up,
            # straight along the Via (§16.7 step 5); the caller ACKs and hangs up.
            self.relay.send(response.to_bytes(), _flow(server))

    # -- cancelling -------------------------------------------------------------------------
    def cancel_branches(self, context: ResponseContext, now: float) -> None:
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
        self.run(actions, now)

    def cancelled_by_caller(self, context: ResponseContext, now: float) -> None:
        """§16.10: the caller's CANCEL matched: CANCEL the branches, 487 to the INVITE."""
        self._give_up(context, 487, "cancelled by caller", now)

    def _ring_timeout(self, context: ResponseContext, now: float) -> None:
        """Nobody answered within `invite_timeout`: CANCEL the branches, 408 to the caller."""
        self._give_up(context, 408, "no answer", now)

    def _give_up(self, context: ResponseContext, status: int, why: str, now: float) -> None:
        """Stop ringing: CANCEL the branches, our own final answer `status` to the caller."""
        if context.final_sent:
            return
        self.cancel_branches(context, now)
        answer = context.own_answer(status, None, self.relay.server_header)
        self.final_to_caller(context, answer, now, why)

    # -- after the 2xx ------------------------------------------------------------------------
    def _await_ack(self, context: ResponseContext) -> None:
        request = context.request
        cseq = request.cseq
        if cseq is None:
            return
        key = (request.call_id or "", request.from_tag or "", cseq.number)
        context.ack_key = key
        self._awaiting_ack[key] = context

    def acknowledged(self, ack: Request, now: float) -> None:
        """The ACK of an answered INVITE went by: its transactions go (see the module note)."""
        cseq = ack.cseq
        if cseq is None:
            return
        context = self._awaiting_ack.pop((ack.call_id or "", ack.from_tag or "", cseq.number), None)
        if context is None:
            return
        for branch in context.branches:
            transaction = branch.transaction
            if transaction is not None and transaction.state is State.ACCEPTED:
                self.run(self.table.terminate(transaction), now)
        self.run(self.table.terminate(context.server), now)

    # -- checks ---------------------------------------------------------------------------
    def loop_detected(self, request: Request, flow: Flow, now: float) -> None:
        """§16.3 step 4: 482, and the console hears of it."""
        self.relay.reply(request, flow, 482)
        detail = f"{request.method} {request.uri}"
        self.bus.publish(
            SecurityEvent("loop", flow.ip, detail, user_agent=request.user_agent or "", at=now)
        )

    # -- timers -----------------------------------------------------------------------------
    def next_deadline(self) -> float | None:
        """The earliest of the transaction timers, ring timeouts and CANCEL guards."""
        # Asked after every message (the Pbx re-arms its one loop timer): no loop, no tuple.
        deadline = self.table.next_deadline()
        rings = self._ring_deadlines
        if rings:
            first = next(iter(rings.values()))  # the oldest entry is the earliest
            if deadline is None or first < deadline:
                deadline = first
        cancels = self._cancel_deadlines
        if cancels:
            first = next(iter(cancels.values()))
            if deadline is None or first < deadline:
                deadline = first
        return deadline

    def on_timer(self, now: float) -> None:
        self.run(self.table.on_timer(now), now)
        for context in _due(self._ring_deadlines, now):
            self._ring_timeout(context, now)
        for branch in _due(self._cancel_deadlines, now):
            if branch.pending and branch.transaction is not None:
                # §9.1: no final answer 64*T1 after our CANCEL; give the branch up.
                self.run(self.table.terminate(branch.transaction), now)


def request_hash(request: Request) -> str:
    """The loop-detection hash of a request as it arrived (core/proxy/routing.py).

    The top Via's text is the first element of the Via lines; the parsed top Via sanity
    left in the header cache holds that very text (`Via.text`: the element as received, or
    as stamp_via wrote it) when it is known, which saves splitting every Via line again."""
    vias = request.headers.cached_view("via")  # untyped: whatever sequence the view keeps
    if vias:
        text: str | None = vias[0].text
        if text is not None:
            return loop_hash(request, text)
    return loop_hash(request, request.headers.values("via")[0])


def _restore_caller_fields(response: Response, context: ResponseContext) -> None:
    """A branch may have gone out with a higher CSeq (a gateway's challenge answered) or
    another From (the caller ID); the response carries the request's own (§8.2.6.2), as the
    caller sent them."""
    fields = context.caller_fields
    if fields is None:
        request_headers = context.request.headers
        # Asked by key: a name that is its own key is found without keying (headers.py).
        fields = context.caller_fields = (request_headers.get("cseq"), request_headers.get("from"))
    cseq, sender = fields
    response_headers = response.headers
    if cseq is not None and response_headers.get("cseq") != cseq:
        response_headers.set("CSeq", cseq)
    if sender is not None and response_headers.get("from") != sender:
        response_headers.set("From", sender)


def _flow(transaction: Transaction) -> Flow:
    """The flow of a transaction the proxy made: a `Flow` (the sans-I/O layer only knows it
    as something with `reliable`)."""
    return cast(Flow, transaction.flow)


def _due(deadlines: OrderedDict[K, float], now: float) -> Iterator[K]:
    """Take out, one at a time, the entries whose deadline has come: fixed delays keep
    insertion order in deadline order, so they are the first ones. Lazy, so an entry that the
    handling of an earlier one removed is never handed out."""
    while deadlines:
        key = next(iter(deadlines))
        if deadlines[key] > now:
            return
        del deadlines[key]
        yield key
