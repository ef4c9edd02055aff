"""What happened in the core, as dataclasses on a bounded bus.

The core publishes and never waits; readers (the console at ~10 Hz, tests, the log) pull with
a cursor. Two ring buffers keep the cheap, voluminous SIP traffic apart from the rarer events
an admin must not miss, so a flood of packets cannot push a ban out of the feed. When a reader
falls behind further than a ring holds, it is told how many it missed instead of blocking the
core (the DESIGN's "bounded everything").

Events are shared by every reader: never change one. They are not frozen because a frozen
dataclass's generated __init__ sets each field through object.__setattr__, several times the
cost of a plain assignment, and every call builds four CallEvents of eleven fields.
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import ClassVar


@dataclass(slots=True)
class Event:
    """Base of every event; `at` is wall-clock time (for display and logs)."""

    at: float = field(default_factory=time.time, kw_only=True)
    kind: ClassVar[str] = "event"


# -- traffic ----------------------------------------------------------------------------
@dataclass(slots=True)
class SipTraffic(Event):
    """One SIP message in or out, raw. Decoding is the reader's job, not the hot path's."""

    direction: str  # "in" or "out"
    transport: str  # "udp" / "tcp"
    remote: tuple[str, int]
    local: tuple[str, int]
    data: bytes
    kind: ClassVar[str] = "traffic"


# -- registrar --------------------------------------------------------------------------
@dataclass(slots=True)
class ContactRegistered(Event):
    user: str
    contact: str
    source: tuple[str, int]
    transport: str
    expires: int
    user_agent: str = ""
    behind_nat: bool = False
    kind: ClassVar[str] = "registered"


@dataclass(slots=True)
class ContactRefreshed(Event):
    user: str
    contact: str
    source: tuple[str, int]
    expires: int
    kind: ClassVar[str] = "refreshed"


@dataclass(slots=True)
class ContactUnregistered(Event):
    user: str
    contact: str
    source: tuple[str, int] | None = None
    reason: str = "unregistered"  # or "admin", "replaced"
    kind: ClassVar[str] = "unregistered"


@dataclass(slots=True)
class ContactExpired(Event):
    user: str
    contact: str
    kind: ClassVar[str] = "expired"


@dataclass(slots=True)
class ContactUnreachable(Event):
    """A NAT keep-alive OPTIONS went unanswered too many times."""

    user: str
    contact: str
    failures: int
    kind: ClassVar[str] = "unreachable"


# -- security ---------------------------------------------------------------------------
@dataclass(slots=True)
class SecurityEvent(Event):
    """A security decision: one shape so the UI feed and the log treat all alike.

    `action` is one of: "auth-failed", "scanner-dropped", "sanity-rejected", "max-forwards",
    "loop", "brute-force-user", "toll-fraud", "too-large", "parse-error", "banned-dropped",
    "tls-verify-failed" (a server we connected to showed a certificate that does not verify:
    expired, wrong host, unknown issuer), "tls-failed" (another TLS error on such a connection),
    "tls-required" (a "TLS only" user's request over UDP or TCP, refused); and, as the
    `SourceBanned` / `SourceUnbanned` below, "banned", "flood-banned", "unbanned".
    """

    action: str
    source: str  # IP address
    detail: str = ""
    user: str = ""
    user_agent: str = ""
    count: int = 1
    kind: ClassVar[str] = "security"


@dataclass(slots=True)
class SourceBanned(SecurityEvent):
    """A source was banned: the one event for it. `action` says what banned it ("banned" by
    an admin or another process, "flood-banned", ...), `detail` why in words, `count` what
    triggered it (1 for an admin's ban); `until` is its end on the wall clock (math.inf:
    until lifted) and `reason` what the ban table shows."""

    until: float = field(default=math.inf, kw_only=True)
    reason: str = field(default="", kw_only=True)
    kind: ClassVar[str] = "ban"


@dataclass(slots=True)
class SourceUnbanned(SecurityEvent):
    """A ban was lifted (`action` "unbanned"); `detail` says why: "admin", "expired" or
    "evicted"."""

    kind: ClassVar[str] = "unban"


# -- calls ------------------------------------------------------------------------------
@dataclass(slots=True)
class CallEvent(Event):
    """A call changed state: "trying", "ringing", "answered", "ended", "failed"."""

    call_id: str
    state: str
    caller: str
    callee: str
    source: str = ""
    status: int = 0
    reason: str = ""
    duration: float = 0.0  # seconds from answer to end, on "ended"
    direction: str = "internal"  # or "inbound", "outbound": as in the CDR
    kind: ClassVar[str] = "call"


# -- server -----------------------------------------------------------------------------
@dataclass(slots=True)
class ServerEvent(Event):
    """Start, stop, listening, configuration reloads, and errors worth an admin's eye."""

    message: str
    level: str = "info"
    kind: ClassVar[str] = "server"


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
        self.feed.append(event)
        key = event.action if isinstance(event, SecurityEvent) else event.kind
        self.counts[key] = self.counts.get(key, 0) + 1
        for listener in self._listeners:
            listener(event)

    def subscribe(self, listener: Listener) -> Callable[[], None]:
        """Call `listener` for every feed event; returns the unsubscribe function."""
        self._listeners.append(listener)
        return lambda: self._listeners.remove(listener)
