"""Calls in progress: who called whom, from where, how far it got — for the console and CDRs.

A call here is what the proxy saw of one initial INVITE it forwarded: the caller, the callee,
the caller's address, and the dialog the first 2xx created. It moves through

    trying ──18x──> ringing ──2xx──> answered ──BYE / max duration──> ended
       └──────────────┴──── final non-2xx, CANCEL, no answer ───────> failed

and every move is published as a `CallEvent`. A call that ends or fails leaves the table at
once and its CDR goes to the sink (the store's batching writer, see `core/accounting/cdrs.py`).

The table is bounded (`ProxySettings.max_active_calls`): the proxy answers 503 when it is full.
Calls are kept in arrival order, so the oldest is always first: that is the one whose
`max_call_seconds` runs out next, found without scanning.

The dialog details (tags, contacts, route sets, CSeqs, the flows each side is reached on) are
what the proxy needs to route in-dialog requests to a phone behind NAT or on a TCP connection
it opened, and to hang up both sides itself when a call runs too long.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

from core.events import CallEvent, EventBus
from core.net.flow import Flow

if TYPE_CHECKING:
    from core.media.relay import MediaStats

TRYING = "trying"
RINGING = "ringing"
ANSWERED = "answered"
ENDED = "ended"
FAILED = "failed"
CALL_STATES = (TRYING, RINGING, ANSWERED, ENDED, FAILED)


@dataclass(slots=True, eq=False, init=False)
class Call:
    """One call, mutable while it lasts. Times are the proxy's clock (epoch seconds).

    The __init__ is written out: the dataclass-generated one runs interpreted even when the
    class is compiled, at ten times the cost, and every call builds one."""

    call_id: str
    caller: str
    callee: str
    source: tuple[str, int]  # where the caller's INVITE came from, as the packets show it
    started_at: float
    direction: str = "internal"  # "internal", "inbound" or "outbound" (the CDR's direction)
    state: str = TRYING
    answered_at: float | None = None
    ended_at: float | None = None
    status: int = 0
    reason: str = ""
    # -- what the CDR says of the route (core/accounting) ------------------------------------
    carrier: str = ""  # the carrier the call went out through (or came in from)
    gateway: str = ""  # the gateway address of the attempt that got the final answer
    dialled: str = ""  # the number as the caller dialled it
    number: str = ""  # the same number in canonical form (core/trunks/dialplan.py)
    refused: bool = False  # we refused it (policy, call or spend limits): never admitted
    # -- the dialog, as the proxy learns it --------------------------------------------------
    # Header values are kept as received and parsed only if the proxy ever hangs up itself:
    # nearly every call ends with a BYE of its own, so parsing them up front is wasted work.
    caller_flow: Flow | None = None  # how to reach the caller: its source address / connection
    caller_tag: str = ""
    caller_from: str = ""  # the caller's From header value (with its tag)
    caller_contact: str = ""  # the INVITE's Contact header value
    caller_cseq: int = 0  # the highest CSeq the caller used in this dialog
    callee_tag: str = ""  # the To tag of the 2xx that answered
    callee_to: str = ""  # the To header value of that 2xx (with the callee's tag)
    callee_contact: str = ""  # the 2xx's Contact header value
    callee_cseq: int = 0  # the highest CSeq the callee used (0: it sent no request yet)
    # The branch each callee tag answered from: a forked INVITE can create several (early)
    # dialogs, and requests for each must reach the phone that created it.
    callee_flows: dict[str, Flow] = field(default_factory=dict)
    record_route: tuple[str, ...] = ()  # the 2xx's Record-Route values, ours among them

    def __init__(
        self,
        call_id: str,
        caller: str,
        callee: str,
        source: tuple[str, int],
        started_at: float,
        direction: str = "internal",
        state: str = TRYING,
        answered_at: float | None = None,
        ended_at: float | None = None,
        status: int = 0,
        reason: str = "",
        carrier: str = "",
        gateway: str = "",
        dialled: str = "",
        number: str = "",
        refused: bool = False,
        caller_flow: Flow | None = None,
        caller_tag: str = "",
        caller_from: str = "",
        caller_contact: str = "",
        caller_cseq: int = 0,
        callee_tag: str = "",
        callee_to: str = "",
        callee_contact: str = "",
        callee_cseq: int = 0,
        callee_flows: dict[str, Flow] | None = None,
        record_route: tuple[str, ...] = (),
    ) -> None:
        self.call_id = call_id
        self.caller = caller
        self.callee = callee
        self.source = source
        self.started_at = started_at
        self.direction = direction
        self.state = state
        self.answered_at = answered_at
        self.ended_at = ended_at
        self.status = status
        self.reason = reason
        self.carrier = carrier
        self.gateway = gateway
        self.dialled = dialled
        self.number = number
        self.refused = refused
        self.caller_flow = caller_flow
        self.caller_tag = caller_tag
        self.caller_from = caller_from
        self.caller_contact = caller_contact
        self.caller_cseq = caller_cseq
        self.callee_tag = callee_tag
        self.callee_to = callee_to
        self.callee_contact = callee_contact
        self.callee_cseq = callee_cseq
        self.callee_flows = {} if callee_flows is None else callee_flows
        self.record_route = record_route

    @property
    def source_text(self) -> str:
        host, port = self.source
        return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"

    @property
    def callee_flow(self) -> Flow | None:
        """The flow of the phone that answered (None before the answer)."""
        return self.callee_flows.get(self.callee_tag) if self.callee_tag else None

    def peer_flow(self, from_tag: str | None, to_tag: str | None) -> Flow | None:
        """Where an in-dialog request goes: to the callee branch its To tag names when the
        caller sent it, to the caller when the callee did; None when the tags are not ours."""
        if from_tag == self.caller_tag:
            return self.callee_flows.get(to_tag or "")
        if to_tag == self.caller_tag:
            return self.caller_flow
        return None


@dataclass(frozen=True, slots=True)
class CallInfo:
    """A row of the console's calls table: a snapshot, safe to hold while the call moves on."""

    call_id: str
    caller: str
    callee: str
    source: str
    state: str
    started_at: float
    answered_at: float | None
    direction: str = "internal"
    media: MediaStats | None = None  # relayed media's counters; None: direct (or unknown)


class CallSink(Protocol):
    """Told of every call that ended or failed (the CDR writer). Runs inline: must not block."""

    def call_finished(self, call: Call) -> None: ...


class CallTable:
    """Active calls by Call-ID, oldest first, bounded; publishes a CallEvent per state change."""

    def __init__(self, bus: EventBus, capacity: int, sink: CallSink | None = None) -> None:
        self.bus = bus
        self.capacity = capacity
        self.sink = sink
        self._calls: OrderedDict[str, Call] = OrderedDict()
        self.answered_count = 0  # calls in the table that are answered (the "calls up")
        self.total_started = 0
        self.total_answered = 0

    def __len__(self) -> int:
        return len(self._calls)

    def __contains__(self, call_id: object) -> bool:
        return call_id in self._calls

    @property
    def full(self) -> bool:
        return len(self._calls) >= self.capacity

    def get(self, call_id: str | None) -> Call | None:
        return None if call_id is None else self._calls.get(call_id)

    def oldest(self) -> Call | None:
        """The call that started first (the next to reach the maximum duration)."""
        calls = self._calls
        return calls[next(iter(calls))] if calls else None

    # -- state changes ----------------------------------------------------------------------
    def start(self, call: Call) -> bool:
        """Admit a new call in state trying; False when full or the Call-ID is taken."""
        if self.full or call.call_id in self._calls:
            return False
        self._calls[call.call_id] = call
        self.total_started += 1
        self._publish(call, call.started_at)
        return True

    def ringing(self, call: Call, now: float) -> None:
        if call.state == TRYING and self._calls.get(call.call_id) is call:
            call.state = RINGING
            self._publish(call, now)

    def answered(self, call: Call, now: float, status: int = 200) -> None:
        if call.state in (TRYING, RINGING) and self._calls.get(call.call_id) is call:
            call.state = ANSWERED
            call.answered_at = now
            call.status = status
            self.answered_count += 1
            self.total_answered += 1
            self._publish(call, now)

    def ended(self, call: Call, now: float, reason: str) -> None:
        """An answered call hung up (or was cut): state ended, CDR written."""
        self._finish(call, ENDED, now, call.status or 200, reason)

    def failed(self, call: Call, now: float, status: int, reason: str) -> None:
        """A call that never got answered: state failed, CDR written."""
        self._finish(call, FAILED, now, status, reason)

    def refused(self, call: Call, now: float, status: int, reason: str) -> None:
        """A call we refused before admitting it (outbound policy, call or spend limits): it
        never enters the table and publishes no CallEvent (no one saw it start), but it
        leaves a CDR, because a refused attempt is what a toll-fraud review looks for."""
        call.state = FAILED
        call.refused = True
        call.ended_at = now
        call.status = status
        call.reason = reason
        if self.sink is not None:
            self.sink.call_finished(call)

    def _finish(self, call: Call, state: str, now: float, status: int, reason: str) -> None:
        if self._calls.get(call.call_id) is not call:
            return  # already finished
        del self._calls[call.call_id]
        if call.state == ANSWERED:
            self.answered_count -= 1
        call.state = state
        call.ended_at = now
        call.status = status
        call.reason = reason
        self._publish(call, now)
        if self.sink is not None:
            self.sink.call_finished(call)

    # -- reading ----------------------------------------------------------------------------
    def snapshot(self) -> list[CallInfo]:
        """Every active call, oldest first, as rows for the console."""
        return [
            CallInfo(
                call.call_id,
                call.caller,
                call.callee,
                call.source_text,
                call.state,
                call.started_at,
                call.answered_at,
                call.direction,
            )
            for call in self._calls.values()
        ]

    def _publish(self, call: Call, now: float) -> None:
        self.bus.publish(call_event(call, now))


def call_event(call: Call, now: float) -> CallEvent:
    """The call as it stands at `now`, for the feed, the log and main's calls table."""
    answered_at = call.answered_at
    return CallEvent(
        call.call_id,
        call.state,
        call.caller,
        call.callee,
        source=call.source_text,
        status=call.status,
        reason=call.reason,
        duration=0.0 if answered_at is None else max(0.0, now - answered_at),
        direction=call.direction,
        at=now,
    )
