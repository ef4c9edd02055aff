"""What the headless log (pbxtui/eventlog.py) is subscribed to: only events it writes a line for.

Every REGISTER refresh publishes a ContactRefreshed and every call a CallEvent per state, and
the log writes a line for none of the refreshes and one per call (when it ends or fails). The
bus (core/events.py, compiled) calls a listener only with what it asked for, so these events
no longer cost an interpreted call of the logger that returns at once. tests/test_eventlog.py
checks that the log writes the same lines subscribed this way as subscribed to everything.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from core.events import (
    CallEvent,
    ContactExpired,
    ContactRegistered,
    ContactUnreachable,
    ContactUnregistered,
    EventBus,
    SecurityEvent,
    ServerEvent,
)
from pbxtui.eventlog import EventLogger

# The event classes the log has a line for (SecurityEvent: bans and unbans too). Not among
# them: ContactRefreshed (every refresh), SipTraffic (never on the feed) and the bare Event.
LOGGED_EVENTS: tuple[type, ...] = (
    ContactRegistered,
    ContactUnregistered,
    ContactExpired,
    ContactUnreachable,
    SecurityEvent,
    CallEvent,
    ServerEvent,
)
# A call's one line: when it ends or fails, not while it is trying, ringing or answered.
LOGGED_CALL_STATES: tuple[str, ...] = ("ended", "failed")


def subscribe_event_log(bus: EventBus, logger: logging.Logger) -> Callable[[], None]:
    """Subscribe an `EventLogger` writing to `logger` to the events it logs; returns the
    unsubscribe function."""
    return bus.subscribe(EventLogger(logger), LOGGED_EVENTS, LOGGED_CALL_STATES)
