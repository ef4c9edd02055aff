"""What every RFC 3261 §17 transaction shares: states, inputs, actions, the machine driver, keys.

The theory, h11 style. A transaction is one request and its responses (plus the ACK of a
non-2xx final response to an INVITE). Each of the four machines (client or server, INVITE or not)
is a table `state -> {input: (next state, effects)}`, written out in `transaction_client.py`
and `transaction_server.py` next to the RFC figure it transcribes. Inputs are the things that
can happen to a transaction: a message from the network (`receive 1xx`, `receive request`),
a response from the TU (`send 2xx`), a timer letter firing (`timer A`), a transport failure.
An input with no entry in the current state is absorbed: that is exactly what the RFC asks of
retransmissions a state no longer cares about, and a TU racing a finished transaction must not
crash the core.

Effects are small functions that append actions for the caller (send these bytes, pass this up
to the TU, report a timeout). Timers are data too: `STATE_TIMERS` says which timers a state arms
on entry (a step timer that acts and goes on, an end timer that closes the machine, or KEEP to
leave one running), and `core/sip/timers.py` says what each letter is worth. A transaction holds
two deadlines as plain floats — no timer objects — and the `TransactionTable` keeps a heap of
(deadline, transaction) to find the next one across all of them.

Nothing here reads a clock or touches a socket: time comes in as `now`, bytes go out as `Send`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import ClassVar, Protocol

from core.sip.errors import SipParseError
from core.sip.fields import MAGIC_COOKIE
from core.sip.message import Message, Request
from core.sip.timers import TimerSettings, duration_table


class TransportFlow(Protocol):
    """What a transaction needs of its flow (a `core.net.flow.Flow`): nothing but reliability."""

    @property
    def reliable(self) -> bool: ...


class State(StrEnum):
    CALLING = "Calling"
    TRYING = "Trying"
    PROCEEDING = "Proceeding"
    COMPLETED = "Completed"
    CONFIRMED = "Confirmed"
    ACCEPTED = "Accepted"  # RFC 6026
    TERMINATED = "Terminated"


# -- inputs -------------------------------------------------------------------------------
RECEIVE_1XX = "receive 1xx"
RECEIVE_2XX = "receive 2xx"
RECEIVE_300_699 = "receive 300-699"
RECEIVE_FINAL = "receive 200-699"  # non-INVITE: every final response is alike
RECEIVE_REQUEST = "receive request"  # a retransmission of the request
RECEIVE_ACK = "receive ACK"
SEND_1XX = "send 1xx"
SEND_2XX = "send 2xx"
SEND_300_699 = "send 300-699"
SEND_FINAL = "send 200-699"
TRANSPORT_FAILED = "transport error"
TIMER_INPUTS: dict[str, str] = {
    letter: f"timer {letter}"
    for letter in ("A", "B", "D", "E", "F", "G", "H", "I", "J", "K", "L", "M", "Trying")
}

KEEP = "keep"  # in STATE_TIMERS: leave the running timer alone on entering the state


# -- actions ------------------------------------------------------------------------------
@dataclass(slots=True, init=False)
class Send:
    """Put `data` on the wire over the transaction's flow. `message` is what the bytes hold."""

    # One per message sent: the __init__ is written out because a frozen dataclass's
    # generated one costs ten times as much per object. Never changed once built.
    transaction: Transaction
    message: Message
    data: bytes
    retransmission: bool  # the transaction repeating itself (timer or retransmission)

    def __init__(
        self, transaction: Transaction, message: Message, data: bytes, retransmission: bool = False
    ) -> None:
        self.transaction = transaction
        self.message = message
        self.data = data
        self.retransmission = retransmission

    @property
    def flow(self) -> TransportFlow:
        return self.transaction.flow


@dataclass(slots=True, init=False)
class Deliver:
    """Pass `message` up to the TU: a response (client side) or an ACK to a 2xx (server side)."""

    transaction: Transaction
    message: Message

    def __init__(self, transaction: Transaction, message: Message) -> None:
        self.transaction = transaction
        self.message = message


@dataclass(slots=True, init=False)
class Timeout:
    """Timer B or F (no answer: the TU acts as on a 408, §8.1.3.1) or H (the ACK never came)."""

    transaction: Transaction
    timer: str

    def __init__(self, transaction: Transaction, timer: str) -> None:
        self.transaction = transaction
        self.timer = timer


@dataclass(slots=True, init=False)
class TransportError:
    """The transport could not send for this transaction (§17.1.1.2): the TU acts as on a 503."""

    transaction: Transaction

    def __init__(self, transaction: Transaction) -> None:
        self.transaction = transaction


@dataclass(slots=True, init=False)
class Terminated:
    """The transaction is over and gone from the table; the TU drops what it kept for it."""

    transaction: Transaction

    def __init__(self, transaction: Transaction) -> None:
        self.transaction = transaction


@dataclass(slots=True, init=False)
class Unmatched:
    """No transaction owns `message`: a new request, an ACK to a 2xx, or a stray response.

    The TU handles it: route a new request, forward an ACK to a 2xx, drop a stray response
    (RFC 6026: a proxy no longer forwards them).
    """

    message: Message
    flow: TransportFlow
    transaction: None

    def __init__(self, message: Message, flow: TransportFlow) -> None:
        self.message = message
        self.flow = flow
        self.transaction = None


Action = Send | Deliver | Timeout | TransportError | Terminated | Unmatched

Effect = Callable[["Transaction", Message | None, float, list[Action]], None]
Transition = tuple[State, tuple[Effect, ...]]


# -- effects every machine uses --------------------------------------------------------
def deliver(
    transaction: Transaction, message: Message | None, now: float, actions: list[Action]
) -> None:
    assert message is not None
    actions.append(Deliver(transaction, message))


def timed_out(letter: str) -> Effect:
    def report(
        transaction: Transaction, _m: Message | None, _n: float, actions: list[Action]
    ) -> None:
        actions.append(Timeout(transaction, letter))

    report.__name__ = f"timed_out_{letter}"
    return report


def report_transport_error(
    transaction: Transaction, _message: Message | None, _now: float, actions: list[Action]
) -> None:
    actions.append(TransportError(transaction))


def double_interval(
    transaction: Transaction, _m: Message | None, now: float, _a: list[Action]
) -> None:
    """Timer A: the next retransmission waits twice as long, without a cap (B ends it)."""
    transaction.step_interval *= 2
    transaction.step_at = now + transaction.step_interval


def double_interval_up_to_t2(
    transaction: Transaction, _m: Message | None, now: float, _a: list[Action]
) -> None:
    """Timers E (in Trying) and G: double the interval, never beyond T2."""
    transaction.step_interval = min(2 * transaction.step_interval, transaction.timers.t2)
    transaction.step_at = now + transaction.step_interval


def interval_t2(transaction: Transaction, _m: Message | None, now: float, _a: list[Action]) -> None:
    """Timer E in Proceeding: the far end is alive, so retransmit every T2 (§17.1.2.2)."""
    transaction.step_interval = transaction.timers.t2
    transaction.step_at = now + transaction.step_interval


# -- the machine driver ---------------------------------------------------------------
class Transaction:
    """One transaction. Subclasses supply the tables; this class runs them.

    `flow` is the opaque path the transaction talks over (a `core.net.flow.Flow`; the transport may
    replace it, e.g. once a TCP connection is open). `user_data` is the TU's slot.
    """

    __slots__ = (
        "durations",
        "end_at",
        "end_letter",
        "flow",
        "key",
        "reliable",
        "request",
        "scheduled_at",
        "state",
        "step_at",
        "step_interval",
        "step_letter",
        "timers",
        "user_data",
    )

    TRANSITIONS: ClassVar[dict[State, dict[str, Transition]]]
    STATE_TIMERS: ClassVar[dict[State, tuple[str | None, str | None]]]
    INITIAL_STATE: ClassVar[State]
    is_client: ClassVar[bool]

    key: tuple[object, ...]

    def __init__(
        self,
        request: Request,
        flow: TransportFlow,
        *,
        timers: TimerSettings,
        reliable: bool | None = None,
        user_data: object = None,
    ) -> None:
        self.request = request
        self.flow = flow
        self.timers = timers
        # §17.1.1.2 etc.: retransmit only over an unreliable transport.
        self.reliable = flow.reliable if reliable is None else reliable
        # What each timer letter is worth here (the table is shared by every transaction).
        self.durations = duration_table(timers, self.reliable)
        self.user_data = user_data
        self.state = self.INITIAL_STATE
        self.step_letter: str | None = None
        self.step_at: float | None = None
        self.step_interval = 0.0
        self.end_letter: str | None = None
        self.end_at: float | None = None
        # The deadline the TransactionTable last queued for this transaction (its bookkeeping).
        self.scheduled_at: float | None = None

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.state} {self.request.method} key={self.key!r}>"

    @property
    def method(self) -> str:
        return self.request.method

    @property
    def terminated(self) -> bool:
        return self.state is State.TERMINATED

    def next_deadline(self) -> float | None:
        """The earliest time `on_timer` has something to do; None when no timer runs."""
        step_at, end_at = self.step_at, self.end_at
        if step_at is None:
            return end_at
        if end_at is None or step_at < end_at:
            return step_at
        return end_at

    def on_timer(self, now: float) -> list[Action]:
        """Fire every timer due at `now`; an end timer first, since it makes a retransmission moot.

        A late call fires each due timer once and schedules the next from `now`: after a stalled
        event loop the peer gets one retransmission, not a burst of the ones it missed.
        """
        actions: list[Action] = []
        end_at = self.end_at
        if end_at is not None and end_at <= now:
            self.end_at = None
            self._feed(TIMER_INPUTS[self.end_letter], None, now, actions)  # type: ignore[index]
        step_at = self.step_at
        if step_at is not None and step_at <= now:
            self.step_at = None
            self._feed(TIMER_INPUTS[self.step_letter], None, now, actions)  # type: ignore[index]
        return actions

    def on_transport_error(self, now: float) -> list[Action]:
        """The transport failed to send one of this transaction's messages."""
        actions: list[Action] = []
        self._feed(TRANSPORT_FAILED, None, now, actions)
        return actions

    def terminate(self) -> list[Action]:
        """The TU abandons the transaction (e.g. §9.1: an INVITE whose CANCEL got no final
        answer within 64*T1). Returns [Terminated] unless it was already over."""
        actions: list[Action] = []
        if self.state is not State.TERMINATED:
            self._enter(State.TERMINATED, 0.0, actions)
        return actions

    # -- running the tables ------------------------------------------------------------
    def _feed(self, event: str, message: Message | None, now: float, actions: list[Action]) -> None:
        transition = self.TRANSITIONS[self.state].get(event)
        if transition is None:
            return  # absorbed: see the module docstring
        next_state, effects = transition
        for effect in effects:
            effect(self, message, now, actions)
        if next_state is not self.state:
            self._enter(next_state, now, actions)

    def _enter(self, state: State, now: float, actions: list[Action]) -> None:
        self.state = state
        if state is State.TERMINATED:
            self.step_at = self.end_at = None
            actions.append(Terminated(self))
            return
        step, end = self.STATE_TIMERS[state]
        if step != KEEP:
            self.step_at = None
            if step is not None:
                duration = self.durations[step]
                if duration is not None:
                    self.step_letter = step
                    self.step_interval = duration
                    if duration == 0:
                        self._feed(TIMER_INPUTS[step], None, now, actions)
                    else:
                        self.step_at = now + duration
        if end != KEEP and self.state is state:
            self.end_at = None
            if end is not None:
                duration = self.durations[end]
                if duration is not None:
                    self.end_letter = end
                    if duration == 0:
                        self._feed(TIMER_INPUTS[end], None, now, actions)
                    else:
                        self.end_at = now + duration


# -- matching keys (pure functions) ----------------------------------------------------
def client_key(message: Message) -> tuple[str, str] | None:
    """§17.1.3: a response belongs to the client transaction whose request carried the same
    top-Via branch and whose method is the response's CSeq method (so the CANCEL's 200 and the
    INVITE's 487, which share a branch, go to different transactions). None when the message
    has no branch or CSeq to match on. Raises SipParseError for a malformed Via or CSeq."""
    via = message.top_via
    cseq = message.cseq
    if via is None or cseq is None:
        return None
    branch = via.branch
    if not branch:
        return None
    return branch, cseq.method


def server_key(request: Request, method: str | None = None) -> tuple[object, ...]:
    """§17.2.3: the server transaction a request creates or belongs to.

    With an RFC 3261 branch (it starts with the magic cookie): branch, the top Via's sent-by and
    the method, an ACK counting as the INVITE it acknowledges. Otherwise the RFC 2543 fallback:
    Request-URI, From tag, Call-ID, CSeq number, method and the whole top Via. The To tag that
    §17.2.3 also lists is left out of the key — two requests differing only in it do not occur —
    because an ACK carries the tag of our response, not the INVITE's; the table checks it
    against the response instead (`ServerInviteTransaction.acknowledged_by`).

    `method` overrides the method, as CANCEL matching needs (§9.2). Raises SipParseError when
    the request lacks a Via or CSeq (the route's sanity step answers those with a 400 first).
    """
    via = request.top_via
    cseq = request.cseq
    if via is None:
        raise SipParseError("Missing Via")
    if cseq is None:
        raise SipParseError("Missing CSeq")
    if method is None:
        method = "INVITE" if request.method == "ACK" else request.method
    branch = via.branch
    if branch is not None and branch.startswith(MAGIC_COOKIE):
        return branch, via.host.lower(), via.port, method
    top_via_text = request.headers.values("via")[0]
    return str(request.uri), request.from_tag, request.call_id, cseq.number, method, top_via_text


def cancel_target_key(cancel: Request) -> tuple[object, ...]:
    """§9.2: the INVITE server transaction a CANCEL cancels is found by the §17.2.3 rules with
    the method taken as INVITE (a CANCEL copies the INVITE's branch, Via, Request-URI, tags,
    Call-ID and CSeq number, §9.1)."""
    return server_key(cancel, "INVITE")


def is_rfc2543_key(key: tuple[object, ...]) -> bool:
    return len(key) == 6
