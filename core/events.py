"""What happened in the core, as dataclasses on a bounded bus.

The core publishes and never waits; readers (the console at ~10 Hz, tests, the log) pull with
a cursor. Two ring buffers keep the cheap, voluminous SIP traffic apart from the rarer events
an admin must not miss, so a flood of packets cannot push a ban out of the feed. When a reader
falls behind further than a ring holds, it is told how many it missed instead of blocking the
core (the DESIGN's "bounded everything").

Events are shared by every reader: never change one. They are not frozen because a frozen
dataclass's generated __init__ sets each field through object.__setattr__, several times the
cost of a plain assignment, and every call builds four CallEvents of eleven fields.

The event classes live in core/event_types.py (compiled) and are re-exported here; the bus
stays interpreted because the cluster's WorkerBus subclasses it.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable

from core.event_types import (
    CallEvent,
    ContactExpired,
    ContactRefreshed,
    ContactRegistered,
    ContactUnreachable,
    ContactUnregistered,
    Event,
    SecurityEvent,
    ServerEvent,
    SipTraffic,
    SourceBanned,
    SourceUnbanned,
)

__all__ = [
    "CallEvent",
    "ContactExpired",
    "ContactRefreshed",
    "ContactRegistered",
    "ContactUnreachable",
    "ContactUnregistered",
    "Event",
    "EventBus",
    "Listener",
    "Ring",
    "SecurityEvent",
    "ServerEvent",
    "SipTraffic",
    "SourceBanned",
    "SourceUnbanned",
]


class Ring:
    """A bounded ring of events with absolute sequence numbers, so readers keep cursors."""

    __slots__ = ("_items", "capacity", "next_seq")

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._items: deque[Event] = deque(maxlen=capacity)
        self.next_seq = 0  # sequence number the next event will get

    def append(self, event: Event) -> None:
        self._items.append(event)
        self.next_seq += 1

    @property
    def first_seq(self) -> int:
        return self.next_seq - len(self._items)

    def read_since(self, cursor: int, limit: int | None = None) -> tuple[list[Event], int, int]:
        """Events from `cursor` on: (events, new cursor, how many the reader missed)."""
        first = self.first_seq
        missed = max(0, first - cursor)
        start = max(cursor, first)
        count = self.next_seq - start
        if limit is not None and count > limit:
            # Keep the newest: a reader that was away wants the present, not the past.
            missed += count - limit
            start = self.next_seq - limit
            count = limit
        if count <= 0:
            return [], max(cursor, self.next_seq), missed
        offset = start - first
        items = self._items
        events = [items[i] for i in range(offset, offset + count)]
        return events, self.next_seq, missed

    def __len__(self) -> int:
        return len(self._items)


Listener = Callable[[Event], None]


class EventBus:
    """Two rings (traffic, feed), per-kind counters, and synchronous listeners for the feed.

    Listeners (the log writer, the ban persister) run inline and must be cheap; they never
    see traffic events, which can arrive tens of thousands a second.
    """

    def __init__(self, traffic_capacity: int = 20_000, feed_capacity: int = 5_000) -> None:
        self.traffic = Ring(traffic_capacity)
        self.feed = Ring(feed_capacity)
        self.counts: dict[str, int] = {}
        self.capture_traffic = True
        self._listeners: list[Listener] = []

    def publish(self, event: Event) -> None:
        if type(event) is SipTraffic:
            if self.capture_traffic:
                self.traffic.append(event)
            return
        # Ring.append inlined: this runs interpreted, once per event (every REGISTER refresh).
        feed = self.feed
        feed._items.append(event)
        feed.next_seq += 1
        key = event.action if isinstance(event, SecurityEvent) else event.kind
        self.counts[key] = self.counts.get(key, 0) + 1
        for listener in self._listeners:
            listener(event)

    def subscribe(self, listener: Listener) -> Callable[[], None]:
        """Call `listener` for every feed event; returns the unsubscribe function."""
        self._listeners.append(listener)
        return lambda: self._listeners.remove(listener)
