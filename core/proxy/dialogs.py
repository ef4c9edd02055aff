"""What the proxy learns of a call's dialog as it goes by, and the BYE it builds from that.

A proxy is no party to the dialog (RFC 3261 §16), but it sees every message of it once it has
record-routed the INVITE. From the INVITE it keeps the caller's side (tag, From, Contact,
CSeq, the flow it came on); from the first 2xx the callee's (tag, To, Contact, the
Record-Route set, the branch's flow); from every in-dialog request the CSeqs. That is enough
to route requests to phones behind NAT (the flows) and to end the call itself (§15.1.1: a BYE
in the name of the other side) when it runs past its maximum duration.

Header values are kept as received and parsed only when a BYE is built: nearly every call ends
with a BYE of its own, so parsing them up front is wasted work.
"""

from __future__ import annotations

from core.net.flow import Flow
from core.proxy.calls import ANSWERED, Call
from core.sip.address import parse_name_addr
from core.sip.errors import SipParseError
from core.sip.headers import Headers, split_list
from core.sip.message import Request, Response

MAX_EARLY_DIALOGS = 16  # callee tags remembered per call (forked early dialogs)
OVERLONG_REASON = 'Q.850;cause=102;text="Maximum call duration"'  # RFC 3326 Reason


def call_for_invite(
    request: Request,
    caller: str,
    callee: str,
    flow: Flow,
    now: float,
    direction: str,
) -> Call:
    """A new call (state trying) for an initial INVITE that arrived on `flow`."""
    cseq = request.cseq
    headers = request.headers
    return Call(
        call_id=request.call_id or "",
        caller=caller,
        callee=callee,
        source=flow.remote,
        started_at=now,
        direction=direction,
        caller_flow=flow,
        caller_tag=request.from_tag or "",
        caller_from=headers.get("from") or "",
        caller_contact=headers.get("contact") or "",
        caller_cseq=cseq.number if cseq is not None else 0,
    )


def learn_answer(call: Call, response: Response, flow: Flow) -> None:
    """The first 2xx, from the branch reached over `flow`: the callee's side of the dialog."""
    headers = response.headers
    tag = response.to_tag or ""
    call.callee_tag = tag
    call.callee_to = headers.get("to") or ""
    call.callee_contact = headers.get("contact") or ""
    call.record_route = tuple(headers.values("record-route"))
    call.callee_flows[tag] = flow


def remember_early_dialog(call: Call, response: Response, flow: Flow) -> None:
    """A provisional response or a further 2xx: its tag names a dialog (early, or another
    fork's) whose requests must reach the branch that created it."""
    tag = response.to_tag
    flows = call.callee_flows
    if tag and tag not in flows and len(flows) < MAX_EARLY_DIALOGS:
        flows[tag] = flow


def follow_request(call: Call, request: Request) -> str | None:
    """An in-dialog request on its way through: keep the CSeqs (our own BYE must go above
    them, §12.2.1.1), forget another fork's dialog when it hangs up, and return why the call
    ends when this is the BYE of the answered dialog (None otherwise)."""
    cseq = request.cseq
    number = cseq.number if cseq is not None else 0
    from_caller = request.from_tag == call.caller_tag
    if from_caller:
        call.caller_cseq = max(call.caller_cseq, number)
    else:
        call.callee_cseq = max(call.callee_cseq, number)
    if request.method != "BYE" or call.state != ANSWERED:
        return None  # an unanswered call ends with its INVITE transaction
    callee_tag = request.to_tag if from_caller else request.from_tag
    if callee_tag == call.callee_tag:
        return "caller hung up" if from_caller else "callee hung up"
    if callee_tag is not None:
        call.callee_flows.pop(callee_tag, None)
    return None


def bye_for(call: Call, *, towards_callee: bool, route: tuple[str, ...]) -> Request | None:
    """A BYE from us in the name of the other side (§15.1.1), without its Via; None when the
    dialog is not known well enough (no Contact, no tags)."""
    if towards_callee:
        contact, from_value, to_value = call.callee_contact, call.caller_from, call.callee_to
        cseq = call.caller_cseq + 1
    else:
        contact, from_value, to_value = call.caller_contact, call.callee_to, call.caller_from
        cseq = call.callee_cseq + 1
    if not contact or not from_value or not to_value:
        return None
    try:
        uri = parse_name_addr(split_list(contact)[0]).uri
    except (SipParseError, IndexError):
        return None
    headers = Headers()
    headers.add("Max-Forwards", "70")
    for value in route:
        headers.add("Route", value)
    headers.add("From", from_value)
    headers.add("To", to_value)
    headers.add("Call-ID", call.call_id)
    headers.add("CSeq", f"{cseq} BYE")
    headers.add("Reason", OVERLONG_REASON)
    return Request("BYE", uri, headers)
