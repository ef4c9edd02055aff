"""The headless event log: which events get a line, and what the line says."""

from __future__ import annotations

import io
import logging

from core.events import CallEvent, ContactRegistered, EventBus, ServerEvent
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
