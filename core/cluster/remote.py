"""Main's view of the worker processes: their figures, their calls, and calls they lost.

The workers report (core/cluster/messages.py `Figures`, `Publish` of their CallEvents); main
keeps the last of each for the console's header strip and Calls pane, and accounts for the
calls of a worker that died (core/cluster/main.py).
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, replace

from core.accounting.cdrs import cdr_for
from core.cluster.media import RemoteMedia
from core.events import CallEvent
from core.proxy.calls import ANSWERED, ENDED, FAILED, Call, CallInfo, call_event
from core.sip.errors import SipParseError
from core.sip.hostport import parse_hostport
from core.store.rows import CdrRow


@dataclass(slots=True)
class WorkerFigures:
    """A worker's counters, as it last reported them (about once a second)."""

    messages_in: int = 0
    messages_out: int = 0
    dropped: int = 0
    forwarded: int = 0


class RemoteCalls:
    """The workers' active calls, followed from their CallEvents, for the console.

    Bounded: at most `capacity` calls; a call whose end was never heard of (its worker died)
    goes when its worker is lost or after `max_age` seconds. The media counters the workers
    report (core/cluster/media.py) are held for these calls only, and go with them.
    """

    def __init__(self, capacity: int, max_age: float) -> None:
        self.capacity = capacity
        self.max_age = max_age
        self._calls: OrderedDict[str, tuple[CallInfo, int]] = OrderedDict()
        self.media = RemoteMedia()

    def __contains__(self, call_id: object) -> bool:
        return call_id in self._calls

    def __len__(self) -> int:
        return len(self._calls)

    def follow(self, event: CallEvent, worker: int) -> None:
        call_id = event.call_id
        if event.state in (ENDED, FAILED):
            self._calls.pop(call_id, None)
            self.media.forget(call_id)
            return
        held = self._calls.get(call_id)
        started_at = event.at if held is None else held[0].started_at
        answered_at = None if held is None else held[0].answered_at
        if event.state == ANSWERED and answered_at is None:
            answered_at = event.at
        info = CallInfo(
            call_id,
            event.caller,
            event.callee,
            event.source,
            event.state,
            started_at,
            answered_at,
            event.direction,
        )
        self._calls[call_id] = (info, worker)
        if held is None and len(self._calls) > self.capacity:
            self.media.forget(self._calls.popitem(last=False)[0])

    def forget_worker(self, worker: int) -> list[CallInfo]:
        """The calls of a worker that died, which will never be heard of again."""
        gone = [call_id for call_id, (_, owner) in self._calls.items() if owner == worker]
        for call_id in gone:
            self.media.forget(call_id)
        return [self._calls.pop(call_id)[0] for call_id in gone]

    def sweep(self, now: float) -> None:
        while self._calls:
            call_id, (info, _) = next(iter(self._calls.items()))
            if info.started_at + self.max_age > now:
                break
            del self._calls[call_id]
            self.media.forget(call_id)

    def snapshot(self) -> list[CallInfo]:
        """The calls, oldest first, each with its relayed media's last counters."""
        if not len(self.media):
            return [info for info, _ in self._calls.values()]
        rows = []
        for call_id, (info, _) in self._calls.items():
            media = self.media.stats(call_id)
            rows.append(info if media is None else replace(info, media=media))
        return rows


LOST_CALL_REASON = "worker process stopped"


def lost_call(info: CallInfo, now: float) -> tuple[CdrRow, CallEvent]:
    """The CDR and the last event of a call whose worker died, from what main knew of it.

    The call itself may carry on end to end (its BYE follows our Record-Route), but nobody
    follows it any more: it is accounted for as ending now, so it is not missing from the
    CDRs (status 200 if it was answered, 0 if no final answer was known)."""
    answered_at = info.answered_at
    try:
        host, port = parse_hostport(info.source)  # as `Call.source_text` wrote it
    except SipParseError:  # no source known
        host, port = "", None
    call = Call(
        info.call_id,
        info.caller,
        info.callee,
        (host, port or 0),
        info.started_at,
        direction=info.direction,
        state=FAILED if answered_at is None else ENDED,
        answered_at=answered_at,
        ended_at=now,
        status=0 if answered_at is None else 200,
        reason=LOST_CALL_REASON,
    )
    return cdr_for(call), call_event(call, now)
