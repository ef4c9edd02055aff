"""Call detail records: one row per call attempt, written when the call ends or fails.

The call table (`core/proxy/calls.py`) hands each finished call to a `CdrWriter`, which turns
it into
a `CdrRow` and queues it on the store's batching writer. Nothing here waits for SQLite: a
burst of hang-ups costs one queue put each, and the writer commits them in one transaction.
"""

from __future__ import annotations

from typing import Final, Protocol

from core.accounting.disposition import disposition_of, side_of
from core.proxy.calls import Call
from core.store.ops import InsertCdr, WriteQueue
from core.store.rows import CdrRow

MAX_CONTACT_CHARS = 256  # the answering Contact comes off the wire: bounded in the CDR
OUTBOUND: Final = "outbound"  # the one direction the meter prices (core/accounting/meter.py)


def cdr_for(call: Call) -> CdrRow:
    """The CDR of a finished call. `duration` counts from the answer, so 0 when unanswered.
    The price is not here: the meter adds it where the row is stored (`CdrWriter`, or main
    for a worker's call), the one place with the rate tables and the spend ledger."""
    ended_at = call.ended_at
    answered_at = call.answered_at
    duration = 0.0
    if answered_at is not None and ended_at is not None:
        duration = max(0.0, ended_at - answered_at)
    disposition = disposition_of(answered_at is not None, call.status, call.reason, call.refused)
    # Positional, in CdrRow's field order: the row's class is interpreted, and keywords
    # from compiled code cost a dict per call (tests/test_cdr_for.py checks every field).
    return CdrRow(
        call.call_id,
        call.caller,
        call.callee,
        call.source[0],
        call.direction,
        call.started_at,
        answered_at,
        ended_at,
        call.status,
        call.reason,
        round(duration, 3),
        None,  # id: none until stored
        disposition,
        side_of(disposition, call.reason),
        call.carrier,
        call.gateway,
        call.dialled,
        call.number,
        _contact_uri(call.callee_contact) if answered_at is not None else "",
    )


def _contact_uri(value: str) -> str:
    """The URI of a Contact header value (`"Bob" <sip:bob@host>;expires=60` → `sip:bob@host`),
    the phone that answered a forked call. Cut at MAX_CONTACT_CHARS: it is wire text."""
    start = value.find("<")
    if start >= 0:
        end = value.find(">", start)
        value = value[start + 1 : end if end > 0 else len(value)]
    else:
        value = value.split(";", 1)[0]
    return value.strip()[:MAX_CONTACT_CHARS]


class Pricer(Protocol):
    """Fills in a CDR's price and counts it against the caller's spend (core/accounting/
    meter.py `Meter`); a Protocol so this compiled module needs nothing of the meter's."""

    def bill(self, cdr: CdrRow) -> CdrRow: ...


class CdrWriter:
    """A `CallSink` that prices each finished call's CDR and queues it on the store's writer."""

    def __init__(self, store: WriteQueue, meter: Pricer | None = None) -> None:
        self.store = store
        self.meter = meter
        self.queued = 0
        self.dropped = 0  # the writer's queue was full (counted by the store too)

    def call_finished(self, call: Call) -> None:
        cdr = cdr_for(call)
        meter = self.meter
        # Only a call out through a carrier has a price (`Meter.bill` leaves any other row
        # as it is): the interpreted meter is not asked about the rest.
        if meter is not None and cdr.direction == OUTBOUND and cdr.carrier:
            meter.bill(cdr)
        if self.store.submit(InsertCdr(cdr)):
            self.queued += 1
        else:
            self.dropped += 1
