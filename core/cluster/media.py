"""The media counters of calls relayed in worker processes, carried to main for its console.

A worker's relay sockets stay in the worker that owns the call (RTP never crosses the links),
so main's Calls pane would show those calls as direct. About once a second each worker sends
`MediaFigures` (core/cluster/messages.py) with the counters of its relayed calls that changed
since its last report, and None for a call no longer relayed; main keeps the last of each
(`RemoteMedia`) beside the call rows it follows from the workers' CallEvents.

A call whose packets stopped has unchanged counters, so nothing is sent for it: main adds the
time since the report to the reported idle seconds, and the pane shows the audio stopped just
as in one process. Bounded both ways: at most `MAX_PER_REPORT` calls per message (the others
wait for the next second), and main holds counters only for calls it follows.

The counters travel as plain tuples: the relay's dataclasses are compiled by mypyc, and a
plain tuple pickles in a fraction of the time anyway.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from core.media.relay import MediaStats, StreamStats

MAX_PER_REPORT = 500  # calls in one message; a worker relays at most `[media] max_sessions`

# One stream: caller packets, caller bytes, callee packets, callee bytes, dropped, on hold,
# caller loss, caller jitter, callee loss, callee jitter (StreamStats' fields, in order).
StreamFields = tuple[int, int, int, int, int, bool, "float | None", "float | None",
                     "float | None", "float | None"]  # fmt: skip
MediaFields = tuple[float, tuple[StreamFields, ...]]  # idle seconds, streams


def media_fields(stats: MediaStats) -> MediaFields:
    streams = tuple(
        (s.caller_packets, s.caller_bytes, s.callee_packets, s.callee_bytes, s.dropped,
         s.on_hold, s.caller_loss, s.caller_jitter_ms, s.callee_loss, s.callee_jitter_ms)
        for s in stats.streams
    )  # fmt: skip
    return (stats.idle_seconds, streams)


def media_of(fields: MediaFields, idle_since_report: float = 0.0) -> MediaStats:
    """The relay's view again; `idle_since_report` seconds later, if no packet went since."""
    idle, streams = fields
    return MediaStats(
        tuple(StreamStats(*stream) for stream in streams), idle + max(0.0, idle_since_report)
    )


class MediaReporter:
    """A worker's side: what changed since the last report. `calls` are the Call-IDs relayed
    here (the media hook's table), `stats` their counters."""

    def __init__(
        self,
        calls: Callable[[], dict[str, object]],
        stats: Callable[[str, float], MediaStats | None],
        limit: int = MAX_PER_REPORT,
    ) -> None:
        self._calls = calls
        self._stats = stats
        self.limit = limit
        self._sent: dict[str, tuple[StreamFields, ...]] = {}  # what main was last told

    def report(self, now: float) -> list[tuple[str, MediaFields | None]]:
        """The changed calls, at most `limit`; the ones left over go next time (they still
        differ from what was sent)."""
        changed: list[tuple[str, MediaFields | None]] = []
        sent = self._sent
        calls = self._calls()
        for call_id in [call_id for call_id in sent if call_id not in calls]:
            if len(changed) >= self.limit:
                return changed
            del sent[call_id]
            changed.append((call_id, None))
        for call_id in calls:
            if len(changed) >= self.limit:
                break
            stats = self._stats(call_id, now)
            if stats is None:
                continue
            fields = media_fields(stats)
            if sent.get(call_id) != fields[1]:
                sent[call_id] = fields[1]
                changed.append((call_id, fields))
        return changed


class RemoteMedia:
    """Main's side: the last counters each worker reported, by Call-ID, with when they came
    (main's monotonic clock), for the calls `follows` says main still shows."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self._media: dict[str, tuple[MediaFields, float]] = {}

    def __len__(self) -> int:
        return len(self._media)

    def update(
        self, calls: tuple[tuple[str, MediaFields | None], ...], follows: Callable[[str], bool]
    ) -> None:
        now = self.clock()
        for call_id, fields in calls:
            if fields is None or not follows(call_id):
                self._media.pop(call_id, None)
            else:
                self._media[call_id] = (fields, now)

    def forget(self, call_id: str) -> None:
        self._media.pop(call_id, None)

    def stats(self, call_id: str) -> MediaStats | None:
        held = self._media.get(call_id)
        if held is None:
            return None
        fields, at = held
        return media_of(fields, self.clock() - at)
