"""Requests inside a dialog (RFC 3261 §16.12), CANCEL (§16.10), and the calls we hang up.

A request with a To tag is relayed only inside a dialog we know, between its two ends:

    transaction match     retransmissions, the ACK of a non-2xx: hop by hop, answered there
    CANCEL                200, CANCEL each ringing branch (§9.1), 487 to the INVITE
    loose routing (§16.4) our Route entries off the top; neither a Route we signed nor a
                          dialog we follow → 404 (the Route header is no open relay)
    destination           a Route left after ours (another proxy), else the dialog's peer
                          (its NAT address, its TCP connection), else the Request-URI
    ACK to a 2xx          end to end, forwarded statelessly (§16.11)
    anything else         a server and a client transaction (core/proxy/forwarder.py)

A call over `max_call_seconds` is hung up from here: a BYE to each side, built from the dialog
the proxy watched go by (tags, contacts, route sets, the highest CSeq each side used). That is
the toll-fraud answer to a call left up for days; forgetting the call instead would leave both
phones (and a carrier's meter) running.
"""

from __future__ import annotations

from core.net.flow import Flow
from core.proxy.calls import ANSWERED, Call
from core.proxy.decisions import apply_rewrite
from core.proxy.dialogs import bye_for, follow_request
from core.proxy.forking import ResponseContext
from core.proxy.forwarder import Forwarder, request_hash
from core.proxy.routing import (
    branch_id,
    decrement_max_forwards,
    flow_for_uri,
    has_looped,
    next_hop,
    push_via,
    remove_own_credentials,
)
from core.sip.errors import SipParseError
from core.sip.message import Request, new_branch
from core.sip.transaction import Action, State, Transaction, Unmatched
from core.sip.transaction_table import TransactionTableFull


class DialogRelay:
    """Mid-dialog requests, CANCELs and our own BYEs, on the proxy's `Forwarder`."""

    def __init__(self, forwarder: Forwarder) -> None:
        self.forwarder = forwarder
        self.calls = forwarder.calls

    def in_dialog(self, request: Request, flow: Flow, now: float) -> None:
        """A request with a To tag: a retransmission, an ACK, or a mid-dialog request to relay."""
        forwarder = self.forwarder
        method = request.method
        try:
            actions = forwarder.table.receive_request(request, flow, now)
        except SipParseError:
            return
        if not (actions and type(actions[0]) is Unmatched):
            forwarder.run(actions, now)
            # An ACK reusing the INVITE's branch for a 2xx is end to end: pass it on (§13.2.2.4).
            transaction = _transaction_of(actions)
            if method != "ACK" or transaction is None or transaction.state is not State.ACCEPTED:
                return
        if method == "CANCEL":
            self.cancel(request, flow, now)
            return
        identity = forwarder.identity
        reply = forwarder.relay.reply
        call = self.calls.get(request.call_id)
        peer = call.peer_flow(request.from_tag, request.to_tag) if call is not None else None
        try:
            recorded = forwarder.record_router.consume(request, identity)
            if not recorded and peer is None:
                # Neither a Route we signed nor a dialog we know: not ours to relay.
                if method != "ACK":
                    reply(request, flow, 404, "Not Here")
                return
            destination = self._destination(request, peer, flow)
        except SipParseError:
            if method != "ACK":
                reply(request, flow, 400, "Bad Route")
            return
        if destination is None:
            if method != "ACK":
                reply(request, flow, 416)
            return
        if method == "ACK":
            self._forward_ack(request, destination)
            forwarder.acknowledged(request, now)
            return
        if has_looped(request, identity):
            forwarder.loop_detected(request, flow, now)
            return
        if call is not None:
            hung_up = follow_request(call, request)
            if hung_up is not None:
                self.calls.ended(call, now, hung_up)
        self._forward(request, flow, destination, now)

    def cancel(self, request: Request, flow: Flow, now: float) -> None:
        """§16.10: 200 to the CANCEL, CANCEL the branches, 487 to the INVITE."""
        forwarder = self.forwarder
        try:
            server = forwarder.table.match_cancel(request)
        except SipParseError:
            forwarder.relay.reply(request, flow, 400, "Bad CANCEL")
            return
        if server is None:
            forwarder.relay.reply(request, flow, 481)
            return
        forwarder.relay.reply(request, flow, 200)
        context = server.user_data
        if isinstance(context, ResponseContext):
            forwarder.cancelled_by_caller(context, now)

    def _destination(self, request: Request, peer: Flow | None, flow: Flow) -> Flow | None:
        """A Route left after ours decides (another proxy); else the peer's own flow (its NAT
        address, its TCP connection); else the Request-URI (§16.12)."""
        identity = self.forwarder.identity
        if request.headers.get("route") is not None:
            return flow_for_uri(next_hop(request), identity, flow)
        if peer is not None:
            return peer
        return flow_for_uri(request.uri, identity, flow)

    def _forward(self, request: Request, flow: Flow, destination: Flow, now: float) -> None:
        forwarder = self.forwarder
        context = forwarder.open(request, flow, now)
        if context is None:
            return
        if request.method == "INVITE":
            forwarder.ring_until(context, now + forwarder.settings.invite_timeout)
        branch = branch_id(request_hash(request), 0)
        forwarder.start(
            forwarder.branch(context, request.uri, (), flow, destination, branch, False), now
        )

    def _forward_ack(self, ack: Request, destination: Flow) -> None:
        """An ACK to a 2xx is its own transaction end to end: forwarded statelessly (§16.11)."""
        forwarder = self.forwarder
        headers = ack.headers.copy()
        decrement_max_forwards(headers, ack.max_forwards)
        remove_own_credentials(headers, forwarder.realm)
        rewrite = forwarder.carriers.rewrite(ack)
        if rewrite is not None:
            apply_rewrite(rewrite, ack, headers)
        branch = branch_id(request_hash(ack), "a")
        push_via(headers, forwarder.identity, destination, branch)
        forwarder.forwarded += 1
        forwarder.relay.send(Request("ACK", ack.uri, headers, ack.body).to_bytes(), destination)

    # -- calls we end ourselves -------------------------------------------------------------
    def end_overlong_call(self, call: Call, now: float) -> None:
        """`max_call_seconds` reached: hang up both sides (an unanswered one is just dropped)."""
        if call.state == ANSWERED:
            self._hang_up(call, towards_callee=True, now=now)
            self._hang_up(call, towards_callee=False, now=now)
            self.calls.ended(call, now, "maximum call duration")
        else:
            self.calls.failed(call, now, 408, "maximum call duration")

    def _hang_up(self, call: Call, *, towards_callee: bool, now: float) -> None:
        """A BYE from us in the name of the other side (§15.1.1), on a client transaction."""
        forwarder = self.forwarder
        identity = forwarder.identity
        to_callee, to_caller = forwarder.record_router.beyond_us(
            call.record_route, identity, call.call_id
        )
        route = to_callee if towards_callee else to_caller
        flow = call.callee_flow if towards_callee else call.caller_flow
        bye = bye_for(call, towards_callee=towards_callee, route=route)
        if bye is None or flow is None:
            return
        headers = bye.headers
        rewrite = forwarder.carriers.rewrite(bye)  # towards a gateway: its CSeq
        if rewrite is not None:
            apply_rewrite(rewrite, bye, headers)
        destination = flow
        if route:
            try:
                destination = flow_for_uri(next_hop(bye), identity, flow) or flow
            except SipParseError:
                return
        push_via(headers, identity, destination, new_branch())
        try:
            _transaction, actions = forwarder.table.new_client(bye, destination, now)
        except (TransactionTableFull, ValueError):
            return
        forwarder.run(actions, now)


def _transaction_of(actions: list[Action]) -> Transaction | None:
    for action in actions:
        transaction = getattr(action, "transaction", None)
        if transaction is not None:
            return transaction  # type: ignore[no-any-return]
    return None
