"""Call detail records: one row per call attempt, written when the call ends or fails.

The call table (`core/proxy/calls.py`) hands each finished call to a `CdrWriter`, which turns
it into
a `CdrRow` and queues it on the store's batching writer. Nothing here waits for SQLite: a
burst of hang-ups costs one queue put each, and the writer commits them in one transaction.
"""

from __future__ import annotations

from core.proxy.calls import Call
from core.store.ops import InsertCdr, WriteQueue
from core.store.rows import CdrRow


def cdr_for(call: Call) -> CdrRow:
    """The CDR of a finished call. `duration` counts from the answer, so 0 when unanswered."""
    ended_at = call.ended_at
    answered_at = call.answered_at
    duration = 0.0
    if answered_at is not None and ended_at is not None:
        duration = max(0.0, ended_at - answered_at)
    return CdrRow(
        call_id=call.call_id,
        caller=call.caller,
        callee=call.callee,
        source_ip=call.source[0],
        direction=call.direction,
        started_at=call.started_at,
        answered_at=answered_at,
        ended_at=ended_at,
        status=call.status,
        reason=call.reason,
        duration=round(duration, 3),
    )


class CdrWriter:
    """A `CallSink` that queues each finished call's CDR on the store's writer."""

    def __init__(self, store: WriteQueue) -> None:
        self.store = store
        self.queued = 0
        self.dropped = 0  # the writer's queue was full (counted by the store too)

    def call_finished(self, call: Call) -> None:
        if self.store.submit(InsertCdr(cdr_for(call))):
            self.queued += 1
        else:
            self.dropped += 1
