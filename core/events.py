"""What happened in the core, as dataclasses on a bounded bus.

The core publishes and never waits; readers (the console at ~10 Hz, tests, the log) pull with
a cursor. Two ring buffers keep the cheap, voluminous SIP traffic apart from the rarer events
an admin must not miss, so a flood of packets cannot push a ban out of the feed. When a reader
falls behind further than a ring holds, it is told how many it missed instead of blocking the
core (the DESIGN's "bounded everything").

Events are shared by every reader: never change one. They are not frozen because a frozen
dataclass's generated __init__ sets each field through object.__setattr__, several times the
cost of a plain assignment, and every call builds four CallEvents of eleven fields.

The event classes live in core/event_types.py and are re-exported here. Both modules are
compiled with the SIP core (setup.py): every REGISTER refresh publishes one event and every call
four. The bus allows interpreted subclasses, for the cluster's WorkerBus.

A listener may name, when it subscribes, the event classes (and the call states) it wants: the
bus then never calls it for the others. The headless log (pbxtui/run.py) wants neither a
REGISTER refresh nor a call that is merely trying, ringing or answered, and an interpreted call
made only to return costs more than the rest of publishing.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable

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
from core.mypyc_hints import mypyc_attr

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


class _Subscription:
    """One listener and what it asked for: event classes (subclasses included; None: every
    feed event) and, of the call events among them, the states (None: every state)."""

    def __init__(
        self,
        listener: Listener,
        types: tuple[type, ...] | None,
        call_states: frozenset[str] | None,
    ) -> None:
        self.listener = listener
        self.types = types
        self.call_states = call_states

    def wants(self, cls: type, state: str) -> bool:
        """Whether an event of class `cls` (a call event: in `state`) is for this listener."""
        types = self.types
        if types is not None and not issubclass(cls, types):
            return False
        call_states = self.call_states
        return call_states is None or not issubclass(cls, CallEvent) or state in call_states


@mypyc_attr(allow_interpreted_subclasses=True)
class EventBus:
    """Two rings (traffic, feed), per-kind counters, and synchronous listeners for the feed.

    Listeners (the log writer, the ban persister) run inline and must be cheap; they never
    see traffic events, which can arrive tens of thousands a second. They are called in the
    order they subscribed, each only with the events it asked for.
    """

    def __init__(self, traffic_capacity: int = 20_000, feed_capacity: int = 5_000) -> None:
        self.traffic = Ring(traffic_capacity)
        self.feed = Ring(feed_capacity)
        self.counts: dict[str, int] = {}
        self.capture_traffic = True
        self._subscriptions: list[_Subscription] = []
        # The listeners an event goes to, worked out once per event class (a call event's:
        # per state, keyed by the state) and forgotten whenever a listener comes or goes.
        self._routes: dict[object, list[Listener]] = {}

    def publish(self, event: Event) -> None:
        if type(event) is SipTraffic:
            if self.capture_traffic:
                self.traffic.append(event)
            return
        # Ring.append written out: one call fewer per event where the bus runs interpreted.
        feed = self.feed
        feed._items.append(event)
        feed.next_seq += 1
        key = event.action if isinstance(event, SecurityEvent) else event.kind
        self.counts[key] = self.counts.get(key, 0) + 1
        self.notify(event)

    def notify(self, event: Event) -> None:
        """Call the listeners that asked for `event` (publish does, after the rings)."""
        cls = type(event)
        key: object = cls
        state = ""
        if isinstance(event, CallEvent):
            state = event.state
            key = state if cls is CallEvent else (cls, state)
        listeners = self._routes.get(key)
        if listeners is None:
            listeners = [sub.listener for sub in self._subscriptions if sub.wants(cls, state)]
            self._routes[key] = listeners
        for listener in listeners:
            listener(event)

    def subscribe(
        self,
        listener: Listener,
        types: Iterable[type] | None = None,
        call_states: Iterable[str] | None = None,
    ) -> Callable[[], None]:
        """Call `listener` for every feed event, or only for those of `types` (subclasses
        included) and, of call events, only those in `call_states`; returns the unsubscribe
        function."""
        subscription = _Subscription(
            listener,
            None if types is None else tuple(types),
            None if call_states is None else frozenset(call_states),
        )
        self._subscriptions.append(subscription)
        self._routes.clear()
        return lambda: self._unsubscribe(subscription)

    def _unsubscribe(self, subscription: _Subscription) -> None:
        self._subscriptions.remove(subscription)  # ValueError when already gone, as ever
        self._routes.clear()
