"""Requests inside a dialog (RFC 3261 §16.12), CANCEL (§16.10), and the calls we hang up.

A request with a To tag is relayed only inside a dialog we know, between its two ends:

    transaction match     retransmissions, the ACK of a non-2xx: hop by hop, answered there
    CANCEL                200, CANCEL each ringing branch (§9.1), 487 to the INVITE
    loose routing (§16.4) our Route entries off the top; neither a Route we signed nor a
                          dialog we follow → 404 (the Route header is no open relay)
    destination           a dialog we follow: its other end (its NAT address, its TCP
                          connection), whatever the Request-URI says; else (after a
                          restart) a Route left after ours or the Request-URI, relayed only
                          if our Record-Route token was made for this dialog between these
                          two addresses and has not expired → else 403 and a security event
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
from core.proxy.decisions import remove_identity_headers
from core.proxy.dialogs import bye_for, follow_request
from core.proxy.forking import ResponseContext
from core.proxy.forwarder import Forwarder, request_hash
from core.proxy.routing import (
    branch_id,
    flow_for_uri,
    has_looped,
    next_hop,
    push_via_line,
)
from core.sip.errors import SipParseError
from core.sip.message import Request, new_branch
from core.sip.transaction import Action, State, Transaction
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
            actions = forwarder.table.receive_retransmission(request, now)
        except SipParseError:
            return
        if actions is not None:
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
            token = forwarder.record_router.consume(request, identity)
            if token is None and peer is None:
                # Neither a Route we signed nor a dialog we know: not ours to relay.
                if method != "ACK":
                    reply(request, flow, 404, "Not Here")
                return
            # A dialog we follow: its other end, whatever the Request-URI or a Route names.
            destination = peer if peer is not None else self._destination(request, flow)
        except SipParseError:
            if method != "ACK":
                reply(request, flow, 400, "Bad Route")
            return
        if destination is None:
            if method != "ACK":
                reply(request, flow, 416)
            return
        if peer is None:
            if not self._within_dialog(token, request, flow, destination, now):
                return
        elif call is not None and not _from_an_end(call, flow):
            self._refuse(request, flow, destination, "not from either end of the dialog", now)
            return
        if method == "ACK":
            self._forward_ack(request, destination, flow)
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
        if server is None or not _same_source(server.flow, flow):
            # §9.2: a CANCEL comes from the hop that sent the INVITE. Anyone else who learnt
            # the branch (it travels in every response) must not be able to cancel the call.
            forwarder.relay.reply(request, flow, 481)
            return
        forwarder.relay.reply(request, flow, 200)
        context = server.user_data
        if isinstance(context, ResponseContext):
            forwarder.cancelled_by_caller(context, now)

    def _destination(self, request: Request, flow: Flow) -> Flow | None:
        """For a dialog we do not follow (after a restart): a Route left after ours decides
        (another proxy), else the Request-URI (§16.12)."""
        identity = self.forwarder.identity
        if request.headers.get("route") is not None:
            return flow_for_uri(next_hop(request), identity, flow)
        return flow_for_uri(request.uri, identity, flow)

    def _within_dialog(
        self, token: str | None, request: Request, flow: Flow, destination: Flow, now: float
    ) -> bool:
        """A dialog we do not follow is relayed only on a token made for it, between the two
        addresses it was made for, before it expires. Anything else would leave the dialog:
        a new call, which must come as one (authenticated, policy-checked) — refused here
        with 403 and a security event."""
        ends = (flow.remote[0], destination.remote[0])
        if token is not None and self.forwarder.record_router.verify(token, request, ends, now):
            return True
        self._refuse(request, flow, destination, "no dialog between these ends", now)
        return False

    def _refuse(
        self, request: Request, flow: Flow, destination: Flow, why: str, now: float
    ) -> None:
        """403 (never to an ACK) and a line in the security feed (throttled per source)."""
        forwarder = self.forwarder
        if request.method != "ACK":
            forwarder.relay.reply(request, flow, 403, "Not In This Dialog")
        forwarder.security_report(
            "dialog-refused",
            flow.remote[0],
            now,
            f"{request.method} with a To tag to {destination.remote[0]}: {why}",
        )

    def _forward(self, request: Request, flow: Flow, destination: Flow, now: float) -> None:
        forwarder = self.forwarder
        if not forwarder.carriers.trusts(flow):
            # RFC 3325 §9.1: a phone's re-INVITE or UPDATE asserts no identity of its own
            # choosing either (a carrier's connected-line update is kept: its address, and
            # its certificate where [tls] carrier_subjects asks for one, as the route trusts).
            remove_identity_headers(request.headers)
        context = forwarder.open(request, flow, now)
        if context is None:
            return
        if request.method == "INVITE":
            forwarder.ring_until(context, now + forwarder.settings.invite_timeout)
        branch = branch_id(request_hash(request), 0)
        forwarder.start(
            forwarder.branch(context, request.uri, (), flow, destination, branch, False), now
        )

    def _forward_ack(self, ack: Request, destination: Flow, arrived: Flow) -> None:
        """An ACK to a 2xx is its own transaction end to end: forwarded statelessly (§16.11)."""
        forwarder = self.forwarder
        headers = forwarder.copy_headers(ack)
        branch = branch_id(request_hash(ack), "a")
        push_via_line(headers, forwarder.identity, destination, branch)
        forwarder.forwarded += 1
        body = ack.body
        if forwarder.media is not None and body:
            body = forwarder.media.request_body(ack, arrived, destination, None)  # a late answer
        forwarder.relay.send(Request("ACK", ack.uri, headers, body).to_bytes(), destination)

    # -- calls we end ourselves -------------------------------------------------------------
    def end_overlong_call(self, call: Call, now: float) -> None:
        """`max_call_seconds` reached: hang up both sides (an unanswered one is just dropped)."""
        self.end_call(call, now, "maximum call duration")

    def end_call(self, call: Call, now: float, reason: str) -> None:
        """Hang up both sides of an answered call (an unanswered one is just dropped, 408),
        with `reason` in its CDR."""
        if call.state == ANSWERED:
            self._hang_up(call, towards_callee=True, now=now)
            self._hang_up(call, towards_callee=False, now=now)
            self.calls.ended(call, now, reason)
        else:
            self.calls.failed(call, now, 408, reason)

    def _hang_up(self, call: Call, *, towards_callee: bool, now: float) -> None:
        """A BYE from us in the name of the other side (§15.1.1), on a client transaction."""
        forwarder = self.forwarder
        identity = forwarder.identity
        to_callee, to_caller = forwarder.record_router.beyond_us(call.record_route, identity)
        route = to_callee if towards_callee else to_caller
        flow = call.callee_flow if towards_callee else call.caller_flow
        bye = bye_for(call, towards_callee=towards_callee, route=route)
        if bye is None or flow is None:
            return
        headers = bye.headers
        forwarder.rewrite_for_carrier(bye, headers)  # towards a gateway: its CSeq
        destination = flow
        if route:
            try:
                destination = flow_for_uri(next_hop(bye), identity, flow) or flow
            except SipParseError:
                return
        push_via_line(headers, identity, destination, new_branch())
        try:
            _transaction, actions = forwarder.table.new_client(bye, destination, now)
        except (TransactionTableFull, ValueError):
            return
        forwarder.run(actions, now)


def _same_source(invite_flow: object, flow: Flow) -> bool:
    """Did the CANCEL come from the address the INVITE came from?"""
    return isinstance(invite_flow, Flow) and invite_flow.remote[0] == flow.remote[0]


def _from_an_end(call: Call, flow: Flow) -> bool:
    """Did this in-dialog request come from the address of one of the call's ends? Tags
    travel in every message of the dialog, so knowing them proves nothing by itself."""
    ip = flow.remote[0]
    caller = call.caller_flow
    if caller is not None and caller.remote[0] == ip:
        return True
    return any(callee.remote[0] == ip for callee in call.callee_flows.values())


def _transaction_of(actions: list[Action]) -> Transaction | None:
    for action in actions:
        transaction = getattr(action, "transaction", None)
        if transaction is not None:
            return transaction  # type: ignore[no-any-return]
    return None
