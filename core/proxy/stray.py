"""Stray responses: a response no client transaction owns.

Most are late copies of answers already handled and are dropped. One kind must go on: a 2xx
to an INVITE whose transactions were let go once the ACK went by (core/proxy/forwarder.py),
resent by a callee that never saw that ACK. RFC 3261 §16.7's original rule applies: if the
top Via is ours, the response goes to the next Via (§18.2.2), or to the caller's own flow when
the call is known (its NAT address, its TCP connection), and the caller ACKs it again.
"""

from __future__ import annotations

from core.net.flow import Flow
from core.net.identity import ServerIdentity
from core.proxy.calls import CallTable
from core.sip.errors import SipParseError
from core.sip.message import Response


def stray_2xx_destination(
    response: Response, flow: Flow, identity: ServerIdentity, calls: CallTable
) -> Flow | None:
    """Where a stray 2xx to an INVITE that arrived on `flow` goes on to; None: drop it
    (not a 2xx to an INVITE, not sent through us, or unparsable)."""
    try:
        vias = response.vias
        cseq = response.cseq
    except SipParseError:
        return None
    if not (200 <= response.status < 300) or cseq is None or cseq.method != "INVITE":
        return None
    if len(vias) < 2 or not identity.is_own_address(vias[0].host, vias[0].port):
        return None
    call = calls.get(response.call_id)
    if call is not None and call.caller_flow is not None:
        return call.caller_flow
    next_via = vias[1]
    host = next_via.received or next_via.host
    port = next_via.rport or next_via.port or 5060
    return Flow(next_via.transport.lower(), (host, port), flow.local)
