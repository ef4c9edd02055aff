"""One log line per notable event, for `pbxtui --headless` under systemd/journald.

Security decisions use the fail2ban-friendly format of core/security/seclog.py; the rest are short
human sentences. SIP traffic is never logged here (it is on the bus for the console).

A call gets one line, when it ends or fails, with its status and duration: the console
shows calls live and the CDRs keep them. Two lines per call (at answer and at end) cost 6 %
of the server's CPU at 300 calls/s, and journald rate-limits a service past 10,000 lines per
30 s anyway.

The listener itself (`EventLogger`, `describe`) runs for every event it is given, so it lives
in a compiled module, core/eventlines.py; this one keeps the formats, the security log file and
what the log subscribes to: only the events it writes a line for (`subscribe_event_log`). Every
REGISTER refresh publishes a ContactRefreshed and every call a CallEvent per state; the bus
(core/events.py) calls a listener only with what it asked for, so those cost no call here.
"""

from __future__ import annotations

import logging
import logging.handlers
from collections.abc import Callable
from pathlib import Path

from core.eventlines import EventLogger, describe
from core.events import (
    CallEvent,
    ContactExpired,
    ContactRegistered,
    ContactUnreachable,
    ContactUnregistered,
    Event,
    EventBus,
    SecurityEvent,
    ServerEvent,
)
from core.security.seclog import format_log_line

__all__ = [
    "JOURNAL_LOG_FORMAT",
    "LOGGED_CALL_STATES",
    "LOGGED_EVENTS",
    "LOG_FORMAT",
    "SECURITY_LOG_NAME",
    "EventLogger",
    "SecurityLogFile",
    "describe",
    "security_log_path",
    "subscribe_event_log",
]

SECURITY_LOG_NAME = "security.log"
# The headless stderr format; under journald (which stamps each line itself) without the time.
LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
JOURNAL_LOG_FORMAT = "%(levelname)s %(name)s: %(message)s"


def security_log_path(db_path: Path) -> Path:
    """The console's security log: beside the database, in the data directory."""
    return db_path.parent / SECURITY_LOG_NAME


class SecurityLogFile:
    """A bus listener writing the security lines to a file, in the headless stderr format,
    for fail2ban to watch while the console (which owns the terminal) runs.

    The logger is private (not registered under logging's tree), so nothing reaches the
    terminal and no other handler sees the lines; WatchedFileHandler reopens the file after
    logrotate moves it. The bus already sums repeated drops and caps reports per second, so
    a flood costs a bounded number of writes.
    """

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.path = path
        self._handler = logging.handlers.WatchedFileHandler(path, encoding="utf-8")
        self._handler.setFormatter(logging.Formatter(LOG_FORMAT))
        self._logger = logging.Logger("pbxtui.security", logging.INFO)
        self._logger.addHandler(self._handler)

    def __call__(self, event: Event) -> None:
        if isinstance(event, SecurityEvent):
            line = format_log_line(event)
            if line is not None:
                self._logger.warning(line)

    def close(self) -> None:
        self._logger.removeHandler(self._handler)
        self._handler.close()


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
