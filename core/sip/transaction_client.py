"""Client transactions (RFC 3261 §17.1, RFC 6026): send a request, collect its answers.

INVITE (figure 5, with RFC 6026's Accepted state):

    Calling --1xx--> Proceeding --300-699: send ACK--> Completed --timer D--> Terminated
       |  ^  timer A: resend, interval x2       |  2xx                 ^ 300-699: resend ACK
       |  +------------+                        v
       +--2xx----------------------------> Accepted --timer M--> Terminated
       +--timer B (a 408) / transport error ---------------------> Terminated

  The ACK for a non-2xx final is the transaction's own (§17.1.1.3), sent again for every
  retransmission of that final; the ACK for a 2xx is the TU's, so a 2xx only moves the machine
  to Accepted, where further 2xx (retransmissions, other forks) still go up to the TU.

non-INVITE (figure 6):

    Trying --1xx--> Proceeding --200-699--> Completed --timer K--> Terminated
      |  timer E: resend, x2 up to T2  |  timer E: resend every T2
      +--200-699------------------------------> Completed
      +--timer F (a 408) / transport error (either state) --> Terminated

Over a reliable transport timers A and E are never armed and D and K are worth zero.
"""

from __future__ import annotations

from typing import ClassVar

from core.sip.headers import Headers
from core.sip.message import Message, Request, Response
from core.sip.timers import TimerSettings
from core.sip.transaction import (
    KEEP,
    RECEIVE_1XX,
    RECEIVE_2XX,
    RECEIVE_300_699,
    RECEIVE_FINAL,
    TIMER_INPUTS,
    TRANSPORT_FAILED,
    Action,
    Send,
    State,
    Transaction,
    Transition,
    TransportFlow,
    client_key,
    deliver,
    double_interval,
    double_interval_up_to_t2,
    interval_t2,
    report_transport_error,
    timed_out,
)

DEFAULT_MAX_FORWARDS = "70"  # §8.1.1.6


def make_ack(invite: Request, response: Response) -> Request:
    """The ACK for a non-2xx final response to `invite` (§17.1.1.3).

    Same Request-URI, Call-ID, From and CSeq number as the INVITE (method ACK); To from the
    response, so it carries the tag the far end chose; one Via, the INVITE's top Via, so the
    branch matches the server transaction; the INVITE's Route headers, so it follows the same
    path. No body.
    """
    return _same_path_request("ACK", invite, response.headers.get("to"))


def make_cancel(invite: Request) -> Request:
    """A CANCEL for `invite` (§9.1): built like the ACK, but To is the INVITE's own."""
    return _same_path_request("CANCEL", invite, invite.headers.get("to"))


def _same_path_request(method: str, invite: Request, to_value: str | None) -> Request:
    source = invite.headers
    cseq = invite.cseq
    if cseq is None:
        raise ValueError("the INVITE has no CSeq")
    headers = Headers()
    headers.add("Via", source.values("via")[0])
    headers.add("Max-Forwards", source.get("max-forwards") or DEFAULT_MAX_FORWARDS)
    for route in source.get_all("route"):
        headers.add("Route", route)
    for name, value in (
        ("From", source.get("from")),
        ("To", to_value),
        ("Call-ID", invite.call_id),
    ):
        if value is not None:
            headers.add(name, value)
    headers.add("CSeq", f"{cseq.number} {method}")
    return Request(method, invite.uri, headers)


class ClientTransaction(Transaction):
    """Sends `request`; `start` returns the first Send, responses come in via `receive_response`.

    The request is serialised once; retransmissions resend the same bytes.
    """

    __slots__ = ("last_response", "request_bytes")

    is_client: ClassVar[bool] = True
    # How a final response reads to the machine: INVITE tells 2xx from the rest, others don't.
    RECEIVE_2XX_AS: ClassVar[str]
    RECEIVE_300_699_AS: ClassVar[str]

    def __init__(
        self,
        request: Request,
        flow: TransportFlow,
        *,
        timers: TimerSettings,
        reliable: bool | None = None,
        user_data: object = None,
    ) -> None:
        super().__init__(request, flow, timers=timers, reliable=reliable, user_data=user_data)
        key = client_key(request)
        via = request.top_via
        if key is None or via is None or not via.is_rfc3261_branch:
            raise ValueError("a client transaction's request needs an RFC 3261 branch and a CSeq")
        self.key = key
        self.request_bytes = b""
        self.last_response: Response | None = None

    def start(self, now: float) -> list[Action]:
        """Send the request and arm the first timers (A+B or E+F)."""
        self.request_bytes = self.request.to_bytes()
        actions: list[Action] = [Send(self, self.request, self.request_bytes)]
        self._enter(self.INITIAL_STATE, now, actions)
        return actions

    def receive_response(self, response: Response, now: float) -> list[Action]:
        actions: list[Action] = []
        self.last_response = response
        status = response.status
        if status < 200:
            event = RECEIVE_1XX
        elif status < 300:
            event = self.RECEIVE_2XX_AS
        else:
            event = self.RECEIVE_300_699_AS
        self._feed(event, response, now, actions)
        return actions


def resend_request(
    transaction: Transaction, _m: Message | None, _now: float, actions: list[Action]
) -> None:
    assert isinstance(transaction, ClientTransaction)
    actions.append(
        Send(transaction, transaction.request, transaction.request_bytes, retransmission=True)
    )


def send_ack(
    transaction: Transaction, message: Message | None, _now: float, actions: list[Action]
) -> None:
    assert isinstance(transaction, ClientInviteTransaction) and isinstance(message, Response)
    ack = make_ack(transaction.request, message)
    transaction.ack = ack
    transaction.ack_bytes = ack.to_bytes()
    actions.append(Send(transaction, ack, transaction.ack_bytes))


def resend_ack(
    transaction: Transaction, _m: Message | None, _now: float, actions: list[Action]
) -> None:
    assert isinstance(transaction, ClientInviteTransaction) and transaction.ack is not None
    actions.append(Send(transaction, transaction.ack, transaction.ack_bytes, retransmission=True))


class ClientInviteTransaction(ClientTransaction):
    __slots__ = ("ack", "ack_bytes")

    INITIAL_STATE: ClassVar[State] = State.CALLING
    RECEIVE_2XX_AS: ClassVar[str] = RECEIVE_2XX
    RECEIVE_300_699_AS: ClassVar[str] = RECEIVE_300_699
    TRANSITIONS: ClassVar[dict[State, dict[str, Transition]]] = {
        State.CALLING: {
            RECEIVE_1XX: (State.PROCEEDING, (deliver,)),
            RECEIVE_2XX: (State.ACCEPTED, (deliver,)),
            RECEIVE_300_699: (State.COMPLETED, (send_ack, deliver)),
            TIMER_INPUTS["A"]: (State.CALLING, (resend_request, double_interval)),
            TIMER_INPUTS["B"]: (State.TERMINATED, (timed_out("B"),)),
            TRANSPORT_FAILED: (State.TERMINATED, (report_transport_error,)),
        },
        State.PROCEEDING: {
            RECEIVE_1XX: (State.PROCEEDING, (deliver,)),
            RECEIVE_2XX: (State.ACCEPTED, (deliver,)),
            RECEIVE_300_699: (State.COMPLETED, (send_ack, deliver)),
        },
        State.COMPLETED: {
            RECEIVE_300_699: (State.COMPLETED, (resend_ack,)),
            TIMER_INPUTS["D"]: (State.TERMINATED, ()),
            TRANSPORT_FAILED: (State.TERMINATED, (report_transport_error,)),
        },
        State.ACCEPTED: {
            RECEIVE_2XX: (State.ACCEPTED, (deliver,)),
            TIMER_INPUTS["M"]: (State.TERMINATED, ()),
        },
        State.TERMINATED: {},
    }
    # (step timer, end timer) armed on entering each state.
    STATE_TIMERS: ClassVar[dict[State, tuple[str | None, str | None]]] = {
        State.CALLING: ("A", "B"),
        State.PROCEEDING: (None, None),  # a 1xx stops A and B; the TU's timer C takes over
        State.COMPLETED: (None, "D"),
        State.ACCEPTED: (None, "M"),
    }

    def __init__(
        self,
        request: Request,
        flow: TransportFlow,
        *,
        timers: TimerSettings,
        reliable: bool | None = None,
        user_data: object = None,
    ) -> None:
        super().__init__(request, flow, timers=timers, reliable=reliable, user_data=user_data)
        self.ack: Request | None = None
        self.ack_bytes = b""


class ClientNonInviteTransaction(ClientTransaction):
    __slots__ = ()

    INITIAL_STATE: ClassVar[State] = State.TRYING
    RECEIVE_2XX_AS: ClassVar[str] = RECEIVE_FINAL
    RECEIVE_300_699_AS: ClassVar[str] = RECEIVE_FINAL
    TRANSITIONS: ClassVar[dict[State, dict[str, Transition]]] = {
        State.TRYING: {
            RECEIVE_1XX: (State.PROCEEDING, (deliver,)),
            RECEIVE_FINAL: (State.COMPLETED, (deliver,)),
            TIMER_INPUTS["E"]: (State.TRYING, (resend_request, double_interval_up_to_t2)),
            TIMER_INPUTS["F"]: (State.TERMINATED, (timed_out("F"),)),
            TRANSPORT_FAILED: (State.TERMINATED, (report_transport_error,)),
        },
        State.PROCEEDING: {
            RECEIVE_1XX: (State.PROCEEDING, (deliver,)),
            RECEIVE_FINAL: (State.COMPLETED, (deliver,)),
            TIMER_INPUTS["E"]: (State.PROCEEDING, (resend_request, interval_t2)),
            TIMER_INPUTS["F"]: (State.TERMINATED, (timed_out("F"),)),
            TRANSPORT_FAILED: (State.TERMINATED, (report_transport_error,)),
        },
        State.COMPLETED: {
            TIMER_INPUTS["K"]: (State.TERMINATED, ()),
        },
        State.TERMINATED: {},
    }
    STATE_TIMERS: ClassVar[dict[State, tuple[str | None, str | None]]] = {
        State.TRYING: ("E", "F"),
        State.PROCEEDING: (KEEP, KEEP),  # E and F run on; E's next interval becomes T2
        State.COMPLETED: (None, "K"),
    }


def new_client_transaction(
    request: Request,
    flow: TransportFlow,
    *,
    timers: TimerSettings,
    reliable: bool | None = None,
    user_data: object = None,
) -> ClientTransaction:
    """The right client machine for `request` (never an ACK: that is no transaction, §17)."""
    if request.method == "ACK":
        raise ValueError("an ACK is sent without a client transaction")
    # Each class named in its own call: under mypyc a direct call, not one through the type.
    if request.method == "INVITE":
        return ClientInviteTransaction(
            request, flow, timers=timers, reliable=reliable, user_data=user_data
        )
    return ClientNonInviteTransaction(
        request, flow, timers=timers, reliable=reliable, user_data=user_data
    )
