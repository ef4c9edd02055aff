"""The headless event log: which events get a line, and what the line says."""

from __future__ import annotations

import io
import logging

from core.events import (
    CallEvent,
    ContactExpired,
    ContactRefreshed,
    ContactRegistered,
    ContactUnreachable,
    ContactUnregistered,
    Event,
    EventBus,
    ServerEvent,
)
from core.printable import printable
from core.proxy.calls import Call, CallTable
from pbxtui.eventlog import EventLogger, describe


def test_a_call_gets_one_line_when_it_ends_with_status_and_duration() -> None:
    bus = EventBus()
    table = CallTable(bus, capacity=10)
    call = Call("c1@x", "alice", "bob", ("192.0.2.10", 5060), started_at=100.0)
    table.start(call)
    table.ringing(call, 101.0)
    table.answered(call, 103.0)
    table.ended(call, 115.5, "BYE from caller")
    events, _, _ = bus.feed.read_since(0)
    lines = [describe(event) for event in events]
    assert lines == [
        None,  # trying
        None,  # ringing
        None,  # answered: the console shows it live; the line comes at the end
        "call ended 200: alice -> bob (c1@x), 12.5 s, BYE from caller",
    ]


def test_a_failed_call_says_its_status_and_reason() -> None:
    event = CallEvent("c2@x", "failed", "alice", "carol", status=486, reason="busy")
    assert describe(event) == "call failed 486: alice -> carol (c2@x), busy"


def test_lines_reach_the_log_at_their_level() -> None:
    stream = io.StringIO()
    logger = logging.getLogger("test-eventlog")
    logger.propagate = False
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logging.Formatter("%(levelname)s %(message)s"))
    logger.handlers[:] = [handler]
    logger.setLevel(logging.INFO)
    log_event = EventLogger(logger)
    log_event(CallEvent("c3@x", "answered", "alice", "bob", status=200))
    log_event(
        ContactRegistered("alice", "sip:alice@192.0.2.10:5060", ("192.0.2.10", 5060), "udp", 600)
    )
    log_event(ServerEvent("database unreachable", level="error"))
    assert stream.getvalue().splitlines() == [
        "INFO registered alice at sip:alice@192.0.2.10:5060 from udp:192.0.2.10:5060, "
        "expires 600s, ua ''",
        "WARNING database unreachable",
    ]


class _Records(logging.Handler):
    """Keeps the records it is handed."""

    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


def _logger(name: str, level: int) -> tuple[logging.Logger, _Records]:
    logger = logging.getLogger(name)
    logger.propagate = False
    handler = _Records()
    logger.handlers[:] = [handler]
    logger.setLevel(level)
    logger.filters.clear()
    logger.disabled = False
    return logger, handler


def _events() -> list[Event]:
    """Every kind of line, wire text with controls among them."""
    return [
        CallEvent("c1@x", "ended", "alice", "bob", status=200, reason="caller hung up",
                  duration=12.46),
        CallEvent("c2@x", "failed", "al\x1bice", "carol", status=486, reason="busy"),
        CallEvent("c3@x", "ringing", "alice", "bob"),
        ContactRegistered("alice", "sip:alice@192.0.2.10\x07", ("192.0.2.10", 5060), "udp", 600,
                          user_agent="Phone\u202e 1", behind_nat=True),
        ContactRefreshed("alice", "sip:alice@192.0.2.10", ("192.0.2.10", 5060), 600),
        ContactUnregistered("bob", "sip:bob@192.0.2.11", reason="admin"),
        ContactExpired("bob", "sip:bob@192.0.2.11"),
        ContactUnreachable("bob", "sip:bob@192.0.2.11", 3),
        ServerEvent("listening on udp:0.0.0.0:5060"),
        ServerEvent("database unreachable", level="error"),
    ]  # fmt: skip


def test_the_record_says_what_logger_log_said_and_reaches_the_same_handlers() -> None:
    """EventLogger builds each record itself (no caller lookup): same message, level, logger
    and args as `logger.log(level, line)` would give, nothing else the formats show."""
    counts: dict[int, int] = {}
    for level in (logging.DEBUG, logging.INFO, logging.WARNING, logging.ERROR):
        logger, handler = _logger("test-eventlog-records", level)
        log_event = EventLogger(logger)
        reference, expected = _logger("test-eventlog-reference", level)
        for event in _events():
            log_event(event)
            line = describe(event)
            if line is not None:
                warning = isinstance(event, ServerEvent) and event.level != "info"
                reference.log(logging.WARNING if warning else logging.INFO, printable(line))
        assert len(handler.records) == len(expected.records)
        for got, want in zip(handler.records, expected.records, strict=True):
            assert got.getMessage() == want.getMessage()
            assert (got.levelno, got.levelname, got.args, got.exc_info) == (
                want.levelno, want.levelname, want.args, want.exc_info,
            )  # fmt: skip
            assert got.name == "test-eventlog-records"
            formatter = logging.Formatter("%(levelname)s %(name)s: %(message)s")
            assert formatter.format(got).replace("records", "reference") == formatter.format(want)
        counts[level] = len(handler.records)
    # Eight events make a line (not ringing nor a refresh), one of them a warning.
    assert counts == {logging.DEBUG: 8, logging.INFO: 8, logging.WARNING: 1, logging.ERROR: 0}


def test_a_disabled_or_filtered_logger_gets_no_line() -> None:
    logger, handler = _logger("test-eventlog-disabled", logging.INFO)
    log_event = EventLogger(logger)
    logger.disabled = True
    for event in _events():
        log_event(event)
    assert handler.records == []
    logger.disabled = False
    logger.addFilter(lambda record: "bob" not in record.getMessage())
    for event in _events():
        log_event(event)
    assert [r.getMessage() for r in handler.records] == [
        "call failed 486: al\\x1bice -> carol (c2@x), busy",
        "registered alice at sip:alice@192.0.2.10\\x07 from udp:192.0.2.10:5060 (behind NAT), "
        "expires 600s, ua 'Phone\\u202e 1'",
        "listening on udp:0.0.0.0:5060",
        "database unreachable",
    ]
    logger.filters.clear()


class _CountingLogger(logging.Logger):
    """A logger that counts how often its level is asked."""

    asked = 0

    def isEnabledFor(self, level: int) -> bool:
        self.asked += 1
        return super().isEnabledFor(level)


def test_a_refresh_gets_no_line_and_is_told_apart_without_asking_the_level() -> None:
    """ContactRefreshed (every REGISTER refresh) returns at once, as `describe` says None."""
    refreshed = ContactRefreshed("alice", "sip:alice@192.0.2.10", ("192.0.2.10", 5060), 600)
    assert describe(refreshed) is None
    logger = _CountingLogger("test-eventlog-refresh", logging.DEBUG)
    handler = _Records()
    logger.addHandler(handler)
    log_event = EventLogger(logger)
    log_event(refreshed)
    assert (logger.asked, handler.records) == (0, [])
    log_event(ContactExpired("bob", "sip:bob@192.0.2.11"))  # the counter does count
    assert logger.asked == 1
    assert [r.getMessage() for r in handler.records] == [
        "registration expired: bob sip:bob@192.0.2.11"
    ]
