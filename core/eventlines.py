"""The event log's per-event work, compiled: which events get a line, the line, its record.

`pbxtui/eventlog.py` is the event log (formats, the security file); this is the part that runs
for every event on the bus, natively (setup.py COMPILED_MODULES). The record itself is still
logging's (makeRecord, Logger.handle, the user's handlers): logging's per-record work is made
cheaper where pbxtui configures it (no thread, process or task look-ups, which no format of
ours shows; `configure_logging` in pbxtui/run.py), not by building records behind its back.
"""

from __future__ import annotations

import logging
from logging import Logger
from typing import Final

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
)
from core.printable import printable
from core.security.seclog import format_log_line

# What logging records as a line's source when it does not look for it (`logging._srcfile`
# None): no format of ours shows it, and the look costs a stack walk.
UNKNOWN_FILE: Final = "(unknown file)"
UNKNOWN_FUNCTION: Final = "(unknown function)"

INFO: Final = logging.INFO
WARNING: Final = logging.WARNING


class EventLogger:
    """A bus listener: `bus.subscribe(EventLogger(logger))`. One line per notable event at
    INFO (WARNING for a server warning or error), security events in the seclog format on
    the child logger "security"."""

    def __init__(self, logger: Logger) -> None:
        self.logger = logger
        self.security_logger = logger.getChild("security")

    def __call__(self, event: Event) -> None:
        if type(event) is CallEvent:
            state = event.state
            if state != "ended" and state != "failed":
                return  # three of a call's four events: told apart at once
            level = INFO
        elif type(event) is ContactRefreshed:
            return  # every REGISTER refresh: `describe` has no line for it (None)
        elif isinstance(event, SecurityEvent):
            line = format_log_line(event)
            if line is not None:
                self.security_logger.warning(line)
            return
        elif isinstance(event, ServerEvent) and event.level != "info":
            level = WARNING
        else:
            level = INFO
        logger = self.logger
        if not logger.isEnabledFor(level):
            return  # e.g. `log_level = "warning"`: no sentence built for nobody
        text = describe(event)
        if text is None:
            return
        # Contacts and User-Agents are the wire's: no raw controls.
        log_line(logger, level, printable(text))


def describe(event: Event) -> str | None:
    """A one-line sentence for an event, or None for events not worth a log line. Security
    events, bans and unbans among them, are logged in the seclog format instead."""
    if isinstance(event, CallEvent):
        if event.state == "ended":
            return (
                f"call ended {event.status}: {event.caller} -> {event.callee} "
                f"({event.call_id}), {event.duration:.1f} s, {event.reason}"
            )
        if event.state == "failed":
            return (
                f"call failed {event.status}: {event.caller} -> {event.callee} "
                f"({event.call_id}), {event.reason}"
            )
        return None
    if isinstance(event, ContactRegistered):
        nat = " (behind NAT)" if event.behind_nat else ""
        return (
            f"registered {event.user} at {event.contact} from "
            f"{event.transport}:{event.source[0]}:{event.source[1]}{nat}, "
            f"expires {event.expires}s, ua {event.user_agent!r}"
        )
    if isinstance(event, ContactUnregistered):
        return f"unregistered {event.user} {event.contact} ({event.reason})"
    if isinstance(event, ContactExpired):
        return f"registration expired: {event.user} {event.contact}"
    if isinstance(event, ContactUnreachable):
        return f"contact unreachable: {event.user} {event.contact} ({event.failures} pings lost)"
    if isinstance(event, ServerEvent):
        return event.message
    return None


def log_line(logger: Logger, level: int, line: str) -> None:
    """What `logger.log(level, line)` does once the level is known to be enabled, without
    the caller lookup: the record made by the logger's own makeRecord (so a record factory
    or a Logger subclass is honoured) and handed to its handlers by `Logger.handle`. That
    lookup walks the stack for a file and line no format of ours shows (`logging._srcfile`
    None leaves the same placeholders)."""
    logger.handle(
        logger.makeRecord(logger.name, level, UNKNOWN_FILE, 0, line, (), None, UNKNOWN_FUNCTION)
    )
