"""Server transactions (RFC 3261 §17.2, RFC 6026): absorb retransmissions, send answers.

INVITE (figure 7, with RFC 6026's Accepted state):

    Proceeding --300-699 from TU: send--> Completed --ACK--> Confirmed --timer I--> Terminated
      |  INVITE: resend last 1xx            |  INVITE: resend final
      |  1xx from TU: send                  |  timer G: resend final, interval x2 up to T2
      |  timer Trying: send 100 Trying      +--timer H (ACK never came) / transport error --+
      |                                                                                      v
      +--2xx from TU: send--> Accepted --timer L--> Terminated <-----------------------------+
                               INVITE: absorbed; 2xx from TU: send; ACK (to a 2xx): to the TU

  The server transaction never retransmits a 2xx: the UAS core does (§13.3.1.4), or, for a
  proxy, the UAS downstream does and each copy comes back through as a new "2xx from TU".

non-INVITE (figure 8):

    Trying --1xx from TU--> Proceeding --200-699 from TU--> Completed --timer J--> Terminated
      |  request: absorbed    |  request: resend last 1xx     |  request: resend final
      +--200-699 from TU----------------------------------->  |  (further finals discarded)

Over a reliable transport timer G is never armed and I and J are worth zero.
"""

from __future__ import annotations

from typing import ClassVar

from core.sip.message import Message, Request, Response, make_response
from core.sip.timers import TimerSettings
from core.sip.transaction import (
    RECEIVE_ACK,
    RECEIVE_REQUEST,
    SEND_1XX,
    SEND_2XX,
    SEND_300_699,
    SEND_FINAL,
    TIMER_INPUTS,
    TRANSPORT_FAILED,
    Action,
    Send,
    State,
    Transaction,
    Transition,
    TransportFlow,
    deliver,
    double_interval_up_to_t2,
    is_rfc2543_key,
    report_transport_error,
    server_key,
    timed_out,
)


class ServerTransaction(Transaction):
    """Created for a request the TU will answer; the TU answers through `respond`.

    `last_response` is what a retransmitted request gets again (serialised once).
    """

    __slots__ = ("last_response", "response_bytes")

    is_client: ClassVar[bool] = False
    SEND_2XX_AS: ClassVar[str]
    SEND_300_699_AS: ClassVar[str]

    def __init__(
        self,
        request: Request,
        flow: TransportFlow,
        *,
        timers: TimerSettings,
        reliable: bool | None = None,
        user_data: object = None,
        key: tuple[object, ...] | None = None,
    ) -> None:
        super().__init__(request, flow, timers=timers, reliable=reliable, user_data=user_data)
        self.key = server_key(request) if key is None else key
        self.last_response: Response | None = None
        self.response_bytes = b""

    def start(self, now: float) -> list[Action]:
        """Arm the first timers; an INVITE may answer 100 Trying at once (`trying_delay` 0)."""
        actions: list[Action] = []
        self._enter(self.INITIAL_STATE, now, actions)
        return actions

    def receive_request(self, request: Request, now: float) -> list[Action]:
        """A retransmission of the request, or the ACK (INVITE only), matched by the table."""
        actions: list[Action] = []
        self._feed(
            RECEIVE_ACK if request.method == "ACK" else RECEIVE_REQUEST, request, now, actions
        )
        return actions

    def respond(self, response: Response, now: float) -> list[Action]:
        """The TU's response. Ignored (returns []) where the RFC says to discard it, e.g. a
        second final response to a non-INVITE (§17.2.2) or anything after Terminated."""
        actions: list[Action] = []
        status = response.status
        if status < 200:
            event = SEND_1XX
        elif status < 300:
            event = self.SEND_2XX_AS
        else:
            event = self.SEND_300_699_AS
        self._feed(event, response, now, actions)
        return actions


# -- effects ----------------------------------------------------------------------------
def send_response(
    transaction: Transaction, message: Message | None, _now: float, actions: list[Action]
) -> None:
    assert isinstance(transaction, ServerTransaction) and isinstance(message, Response)
    _send(transaction, message, actions)


def send_provisional(
    transaction: Transaction, message: Message | None, _now: float, actions: list[Action]
) -> None:
    """A 1xx from the TU also makes our own 100 Trying unnecessary."""
    assert isinstance(transaction, ServerTransaction) and isinstance(message, Response)
    transaction.step_at = None
    _send(transaction, message, actions)


def resend_response(
    transaction: Transaction, _m: Message | None, _now: float, actions: list[Action]
) -> None:
    assert isinstance(transaction, ServerTransaction)
    response = transaction.last_response
    if response is not None:
        actions.append(Send(transaction, response, transaction.response_bytes, retransmission=True))


def send_trying(
    transaction: Transaction, _m: Message | None, _now: float, actions: list[Action]
) -> None:
    """§17.2.1 / §8.2.6.1: 100 Trying, with the request's Timestamp copied if it had one
    (make_response copies it: passing it again as an extra line sent it twice)."""
    assert isinstance(transaction, ServerTransaction)
    transaction.step_at = None
    _send(transaction, make_response(transaction.request, 100), actions)


def resend_provisional(
    transaction: Transaction, message: Message | None, now: float, actions: list[Action]
) -> None:
    """A retransmitted INVITE gets the latest 1xx again (§17.2.1). Before any 1xx the caller is
    already retransmitting, so answer 100 Trying now rather than wait for the timer."""
    assert isinstance(transaction, ServerTransaction)
    if transaction.last_response is not None:
        resend_response(transaction, message, now, actions)
    elif transaction.timers.trying_delay is not None:
        send_trying(transaction, message, now, actions)


def _send(transaction: ServerTransaction, response: Response, actions: list[Action]) -> None:
    transaction.last_response = response
    transaction.response_bytes = response.to_bytes()
    actions.append(Send(transaction, response, transaction.response_bytes))


# -- the machines ---------------------------------------------------------------------
class ServerInviteTransaction(ServerTransaction):
    __slots__ = ()

    INITIAL_STATE: ClassVar[State] = State.PROCEEDING
    SEND_2XX_AS: ClassVar[str] = SEND_2XX
    SEND_300_699_AS: ClassVar[str] = SEND_300_699
    TRANSITIONS: ClassVar[dict[State, dict[str, Transition]]] = {
        State.PROCEEDING: {
            RECEIVE_REQUEST: (State.PROCEEDING, (resend_provisional,)),
            TIMER_INPUTS["Trying"]: (State.PROCEEDING, (send_trying,)),
            SEND_1XX: (State.PROCEEDING, (send_provisional,)),
            SEND_2XX: (State.ACCEPTED, (send_response,)),
            SEND_300_699: (State.COMPLETED, (send_response,)),
            TRANSPORT_FAILED: (State.TERMINATED, (report_transport_error,)),
        },
        State.COMPLETED: {
            RECEIVE_REQUEST: (State.COMPLETED, (resend_response,)),
            RECEIVE_ACK: (State.CONFIRMED, ()),
            TIMER_INPUTS["G"]: (State.COMPLETED, (resend_response, double_interval_up_to_t2)),
            TIMER_INPUTS["H"]: (State.TERMINATED, (timed_out("H"),)),
            TRANSPORT_FAILED: (State.TERMINATED, (report_transport_error,)),
        },
        State.CONFIRMED: {
            # ACK and INVITE retransmissions have no entry: absorbed until timer I.
            TIMER_INPUTS["I"]: (State.TERMINATED, ()),
        },
        State.ACCEPTED: {
            # INVITE retransmissions have no entry: absorbed (RFC 6026).
            RECEIVE_ACK: (State.ACCEPTED, (deliver,)),
            SEND_2XX: (State.ACCEPTED, (send_response,)),
            # The 2xx is the TU's to retransmit, so it hears of the failure; the transaction
            # still absorbs INVITE retransmissions until timer L.
            TRANSPORT_FAILED: (State.ACCEPTED, (report_transport_error,)),
            TIMER_INPUTS["L"]: (State.TERMINATED, ()),
        },
        State.TERMINATED: {},
    }
    STATE_TIMERS: ClassVar[dict[State, tuple[str | None, str | None]]] = {
        State.PROCEEDING: ("Trying", None),
        State.COMPLETED: ("G", "H"),
        State.CONFIRMED: (None, "I"),
        State.ACCEPTED: (None, "L"),
    }

    def acknowledged_by(self, ack: Request) -> bool:
        """Whether `ack` belongs here. With an RFC 3261 branch the key said so already; under
        the RFC 2543 fallback the ACK's To tag must also be our final response's (§17.2.3)."""
        if not is_rfc2543_key(self.key):
            return True
        response = self.last_response
        if response is None or response.status < 200:
            return True  # nothing to compare with yet; Proceeding absorbs the ACK anyway
        return ack.to_tag == response.to_tag


class ServerNonInviteTransaction(ServerTransaction):
    __slots__ = ()

    INITIAL_STATE: ClassVar[State] = State.TRYING
    SEND_2XX_AS: ClassVar[str] = SEND_FINAL
    SEND_300_699_AS: ClassVar[str] = SEND_FINAL
    TRANSITIONS: ClassVar[dict[State, dict[str, Transition]]] = {
        State.TRYING: {
            # A retransmission before any answer is absorbed: there is nothing to resend.
            SEND_1XX: (State.PROCEEDING, (send_response,)),
            SEND_FINAL: (State.COMPLETED, (send_response,)),
        },
        State.PROCEEDING: {
            RECEIVE_REQUEST: (State.PROCEEDING, (resend_response,)),
            SEND_1XX: (State.PROCEEDING, (send_response,)),
            SEND_FINAL: (State.COMPLETED, (send_response,)),
            TRANSPORT_FAILED: (State.TERMINATED, (report_transport_error,)),
        },
        State.COMPLETED: {
            RECEIVE_REQUEST: (State.COMPLETED, (resend_response,)),
            TIMER_INPUTS["J"]: (State.TERMINATED, ()),
            TRANSPORT_FAILED: (State.TERMINATED, (report_transport_error,)),
        },
        State.TERMINATED: {},
    }
    STATE_TIMERS: ClassVar[dict[State, tuple[str | None, str | None]]] = {
        State.TRYING: (None, None),
        State.PROCEEDING: (None, None),
        State.COMPLETED: (None, "J"),
    }


def new_server_transaction(
    request: Request,
    flow: TransportFlow,
    *,
    timers: TimerSettings,
    reliable: bool | None = None,
    user_data: object = None,
    key: tuple[object, ...] | None = None,
) -> ServerTransaction:
    """The right server machine for `request` (never an ACK: it joins an INVITE's, §17.2.3).
    `key` saves recomputing `server_key(request)` when the caller has it."""
    if request.method == "ACK":
        raise ValueError("an ACK creates no server transaction")
    # Each class named in its own call: under mypyc a direct call, not one through the type.
    if request.method == "INVITE":
        return ServerInviteTransaction(
            request, flow, timers=timers, reliable=reliable, user_data=user_data, key=key
        )
    return ServerNonInviteTransaction(
        request, flow, timers=timers, reliable=reliable, user_data=user_data, key=key
    )
