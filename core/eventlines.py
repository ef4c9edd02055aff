"""The event log's per-event work, compiled: which events get a line, the line, its record.

`pbxtui/eventlog.py` is the event log (formats, the security file); this is the part that runs
for every event on the bus, natively (setup.py COMPILED_MODULES). Interpreted, a call's one
log line cost ~33,000 instructions, most of them in logging's record building and dispatch:
a dozen Python frames (makeRecord, LogRecord.__init__, getLevelName, basename, splitext,
current_thread, Logger.handle, filter, callHandlers) before the first handler runs.

The record built here is the one logging would build, attribute for attribute and in the same
order (tests/test_eventlines.py compares them), made without those frames. The same handlers
get it, walked up the logger tree as `Logger.callHandlers` walks it. Wherever something could
make logging's own path differ (a record factory, a Logger subclass, a logger filter, a
disabled logger, no handler at all, a Python whose LogRecord this does not know), the line
takes logging's own path instead.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import threading
import time
from logging import Logger, LogRecord
from typing import Any, Final

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
# LogRecord's own derivation of the two, once.
_UNKNOWN_FILENAME: Final = os.path.basename(UNKNOWN_FILE)
_UNKNOWN_MODULE: Final = os.path.splitext(_UNKNOWN_FILENAME)[0]

INFO: Final = logging.INFO
WARNING: Final = logging.WARNING

# logging's module globals, read by name: the level names (mutated in place by addLevelName,
# never replaced), the start time, the record factory (replaced by setLogRecordFactory).
_LOGGING: Final[dict[str, Any]] = vars(logging)
_LEVEL_NAMES: Final[dict[int, str]] = _LOGGING["_levelToName"]
_START_TIME: Final = float(_LOGGING["_startTime"])  # an int of ns from 3.13 (not used there)
# The LogRecord.__init__ written out below is 3.11's and 3.12's (3.13 takes time in ns).
_KNOWN_RECORD: Final = (3, 11) <= sys.version_info < (3, 13)


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
    the caller lookup (no format of ours shows it) and without logging's per-record frames
    when nothing could make them differ (see the module docstring)."""
    if type(logger) is not Logger or not _KNOWN_RECORD or logger.filters or logger.disabled:
        logger.handle(general_record(logger, level, line))
        return
    if _LOGGING["_logRecordFactory"] is not LogRecord:
        record = general_record(logger, level, line)
    else:
        record = fast_record(logger.name, level, line, time.time())
    call_handlers(logger, record)


def general_record(logger: Logger, level: int, line: str) -> LogRecord:
    """The record as logging makes it (the logger's makeRecord, the installed factory)."""
    return logger.makeRecord(logger.name, level, UNKNOWN_FILE, 0, line, (), None, UNKNOWN_FUNCTION)


def fast_record(name: str, level: int, line: str, ct: float) -> LogRecord:
    """`LogRecord(name, level, UNKNOWN_FILE, 0, line, (), None, UNKNOWN_FUNCTION)` made at
    time `ct`: 3.11's and 3.12's __init__ written out, attributes in its order, honouring
    logThreads / logMultiprocessing / logProcesses (and 3.12's logAsyncioTasks)."""
    record: LogRecord = LogRecord.__new__(LogRecord)
    record.name = name
    record.msg = line
    record.args = ()
    levelname = _LEVEL_NAMES.get(level)
    record.levelname = levelname if levelname is not None else logging.getLevelName(level)
    record.levelno = level
    record.pathname = UNKNOWN_FILE
    record.filename = _UNKNOWN_FILENAME
    record.module = _UNKNOWN_MODULE
    record.exc_info = None
    record.exc_text = None
    record.stack_info = None
    record.lineno = 0
    record.funcName = UNKNOWN_FUNCTION
    record.created = ct
    record.msecs = int((ct - int(ct)) * 1000) + 0.0
    record.relativeCreated = (ct - _START_TIME) * 1000
    if logging.logThreads:
        record.thread = threading.get_ident()
        record.threadName = threading.current_thread().name
    else:
        record.thread = None
        record.threadName = None
    if not logging.logMultiprocessing:
        record.processName = None
    else:
        record.processName = "MainProcess"
        mp: Any = sys.modules.get("multiprocessing")
        if mp is not None:
            with contextlib.suppress(Exception):
                record.processName = mp.current_process().name
    if logging.logProcesses and hasattr(os, "getpid"):
        record.process = os.getpid()
    else:
        record.process = None
    if sys.version_info >= (3, 12):
        record.taskName = None
        if logging.logAsyncioTasks:
            aio: Any = sys.modules.get("asyncio")
            if aio:
                with contextlib.suppress(Exception):
                    record.taskName = aio.current_task().get_name()
    return record


def call_handlers(logger: Logger, record: LogRecord) -> None:
    """`logger.callHandlers(record)`: every handler from `logger` up the tree until a logger
    that does not propagate, each if the record's level reaches the handler's. With no
    handler anywhere, logging's own (lastResort, or the one-off warning)."""
    node: Logger | None = logger
    found = 0
    while node is not None:
        for handler in node.handlers:
            found += 1
            if record.levelno >= handler.level:
                handler.handle(record)
        if not node.propagate:
            break
        node = node.parent
    if found == 0:
        logger.callHandlers(record)
