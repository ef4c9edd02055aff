"""One log line per notable event, for `pbxtui --headless` under systemd/journald.

Security decisions use the fail2ban-friendly format of core/security/seclog.py; the rest are short
human sentences. SIP traffic is never logged here (it is on the bus for the console).

A call gets one line, when it ends or fails, with its status and duration: the console
shows calls live and the CDRs keep them. Two lines per call (at answer and at end) cost 6 %
of the server's CPU at 300 calls/s, and journald rate-limits a service past 10,000 lines per
30 s anyway.
"""

from __future__ import annotations

import logging
import logging.handlers
from pathlib import Path

from core.events import (
    CallEvent,
    ContactExpired,
    ContactRefreshed,
    ContactRegistered,
    ContactUnreachable,
    ContactUnregistered,
    Event,
    SecurityEvent,
    ServerEvent,
)
from core.printable import printable
from core.security.seclog import format_log_line

SECURITY_LOG_NAME = "security.log"
# The headless stderr format; under journald (which stamps each line itself) without the time.
LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
JOURNAL_LOG_FORMAT = "%(levelname)s %(name)s: %(message)s"


# A call's one line is written when it ends or fails (see the module docstring).
_LOGGED_CALL_STATES = frozenset({"ended", "failed"})
# What logging records as a line's source when it does not look for it.
_UNKNOWN_FILE = "(unknown file)"
_UNKNOWN_FUNCTION = "(unknown function)"


class EventLogger:
    """A bus listener: `bus.subscribe(EventLogger(logger))`."""

    def __init__(self, logger: logging.Logger) -> None:
        self.logger = logger
        self.security_logger = logger.getChild("security")

    def __call__(self, event: Event) -> None:
        if type(event) is CallEvent and event.state not in _LOGGED_CALL_STATES:
            return  # three of a call's four events: told apart at once, without `describe`
        if type(event) is ContactRefreshed:
            return  # every REGISTER refresh: `describe` has no line for it (None)
        if isinstance(event, SecurityEvent):
            line = format_log_line(event)
            if line is not None:
                self.security_logger.warning(line)
            return
        level = (
            logging.WARNING
            if isinstance(event, ServerEvent) and event.level != "info"
            else logging.INFO
        )
        logger = self.logger
        if not logger.isEnabledFor(level):
            return  # e.g. `log_level = "warning"`: no sentence built for nobody
        line = describe(event)
        if line is None:
            return
        line = printable(line)  # contacts and User-Agents are the wire's: no raw controls
        # The record made here, not by `logger.log`: that one first walks the stack for the
        # caller's file and line (which no format of ours shows), over a third of a call's
        # log line (29,000 of 77,000 instructions). The source is left as logging leaves it
        # when told not to look (`logging._srcfile = None`).
        logger.handle(
            logger.makeRecord(
                logger.name, level, _UNKNOWN_FILE, 0, line, (), None, _UNKNOWN_FUNCTION
            )
        )


def describe(event: Event) -> str | None:
    """A one-line sentence for an event, or None for events not worth a log line. Security
    events, bans and unbans among them, are logged in the seclog format instead."""
    match event:
        case ContactRegistered():
            nat = " (behind NAT)" if event.behind_nat else ""
            return (
                f"registered {event.user} at {event.contact} from "
                f"{event.transport}:{event.source[0]}:{event.source[1]}{nat}, "
                f"expires {event.expires}s, ua {event.user_agent!r}"
            )
        case ContactUnregistered():
            return f"unregistered {event.user} {event.contact} ({event.reason})"
        case ContactExpired():
            return f"registration expired: {event.user} {event.contact}"
        case ContactUnreachable():
            return (
                f"contact unreachable: {event.user} {event.contact} ({event.failures} pings lost)"
            )
        case CallEvent() if event.state == "ended":
            return (
                f"call ended {event.status}: {event.caller} -> {event.callee} "
                f"({event.call_id}), {event.duration:.1f} s, {event.reason}"
            )
        case CallEvent() if event.state == "failed":
            return (
                f"call failed {event.status}: {event.caller} -> {event.callee} "
                f"({event.call_id}), {event.reason}"
            )
        case ServerEvent():
            return event.message
        case ContactRefreshed():
            return None
    return None


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
