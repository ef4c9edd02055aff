"""Listeners that name what they want (core/events.py): each gets exactly those events, in
subscription order, while the rings and the counts stay what every reader saw before; the
headless log subscribed to its events only writes the lines it wrote subscribed to all."""

from __future__ import annotations

import logging
import random

from core.cluster.changes import WorkerBus
from core.cluster.messages import Publish
from core.control.codec import EVENT_TYPES
from core.events import (
    CallEvent,
    ContactExpired,
    ContactRefreshed,
    ContactRegistered,
    ContactUnreachable,
    ContactUnregistered,
    Event,
    EventBus,
    SecurityEvent,
    ServerEvent,
    SipTraffic,
    SourceBanned,
    SourceUnbanned,
)
from pbxtui.eventlog import LOGGED_CALL_STATES, LOGGED_EVENTS, EventLogger, subscribe_event_log

CALL_STATES = ("trying", "ringing", "answered", "ended", "failed")
SOURCE = ("192.0.2.10", 5060)


def sample_events(rng: random.Random, count: int) -> list[Event]:
    """A random stream of every kind of event the core publishes, traffic among them."""
    makers = [
        lambda: ContactRegistered("alice", "sip:alice@192.0.2.10", SOURCE, "udp", 600),
        lambda: ContactRefreshed("alice", "sip:alice@192.0.2.10", SOURCE, 600),
        lambda: ContactUnregistered("bob", "sip:bob@192.0.2.11", SOURCE, "admin"),
        lambda: ContactExpired("carol", "sip:carol@192.0.2.12"),
        lambda: ContactUnreachable("dave", "sip:dave@192.0.2.13", rng.randrange(1, 9)),
        lambda: SecurityEvent(
            rng.choice(("auth-failed", "scanner-dropped", "tls-required", "loop")),
            f"198.51.100.{rng.randrange(256)}",
            detail="why",
            user=rng.choice(("", "alice")),
        ),
        lambda: SourceBanned("flood-banned", "198.51.100.7", "flood", count=50, reason="flood"),
        lambda: SourceUnbanned("unbanned", "198.51.100.7", detail=rng.choice(("admin", "expired"))),
        lambda: CallEvent(
            f"call-{rng.randrange(5)}",
            rng.choice((*CALL_STATES, "odd")),
            "alice",
            "bob",
            status=rng.choice((0, 200, 486)),
            reason="because",
            duration=rng.uniform(0, 99),
        ),
        lambda: ServerEvent("something happened", level=rng.choice(("info", "warning", "error"))),
        lambda: SipTraffic("in", "udp", SOURCE, ("127.0.0.1", 5060), b"OPTIONS"),
        lambda: Event(),
    ]
    return [rng.choice(makers)() for _ in range(count)]


def feed_of(bus: EventBus) -> list[Event]:
    events, _cursor, _missed = bus.feed.read_since(0)
    return events


def test_a_listener_gets_exactly_what_it_asked_for_in_subscription_order() -> None:
    rng = random.Random(21)
    events = sample_events(rng, 2_000)
    bus = EventBus(feed_capacity=10_000)
    heard: list[tuple[str, Event]] = []
    bus.subscribe(lambda event: heard.append(("all", event)))
    bus.subscribe(lambda event: heard.append(("contacts", event)), (ContactRegistered,))
    bus.subscribe(
        lambda event: heard.append(("security", event)), [SecurityEvent, ServerEvent]
    )  # subclasses included: bans and unbans
    bus.subscribe(lambda event: heard.append(("ends", event)), (CallEvent,), ("ended", "failed"))
    bus.subscribe(lambda event: heard.append(("states", event)), None, {"ringing"})
    bus.subscribe(lambda event: heard.append(("nothing", event)), ())
    for event in events:
        bus.publish(event)

    expected: list[tuple[str, Event]] = []
    for event in events:
        if type(event) is SipTraffic:
            continue  # never a listener's
        expected.append(("all", event))
        if isinstance(event, ContactRegistered):
            expected.append(("contacts", event))
        if isinstance(event, (SecurityEvent, ServerEvent)):
            expected.append(("security", event))
        if isinstance(event, CallEvent) and event.state in ("ended", "failed"):
            expected.append(("ends", event))
        if not isinstance(event, CallEvent) or event.state == "ringing":
            expected.append(("states", event))
    assert heard == expected
    assert {name for name, _event in heard} == {"all", "contacts", "security", "ends", "states"}


def test_the_rings_and_counts_are_the_same_whoever_listens() -> None:
    events = sample_events(random.Random(5), 3_000)
    quiet = EventBus(traffic_capacity=500, feed_capacity=700)  # rings that wrap
    busy = EventBus(traffic_capacity=500, feed_capacity=700)
    busy.subscribe(lambda event: None)
    busy.subscribe(lambda event: None, (ContactRefreshed,))
    subscribe_event_log(busy, quiet_logger("test-subscriptions-rings"))
    for event in events:
        quiet.publish(event)
        busy.publish(event)
    assert feed_of(busy) == feed_of(quiet) and len(feed_of(quiet)) == 700
    assert busy.feed.next_seq == quiet.feed.next_seq
    assert busy.traffic.read_since(0) == quiet.traffic.read_since(0)
    assert busy.counts == quiet.counts
    feed_events = [event for event in events if type(event) is not SipTraffic]
    assert sum(quiet.counts.values()) == len(feed_events) == quiet.feed.next_seq
    refreshes = sum(type(event) is ContactRefreshed for event in events)
    assert quiet.counts["refreshed"] == refreshes > 0


def test_listeners_coming_and_going_are_seen_at_the_next_event() -> None:
    bus = EventBus()
    heard: list[str] = []
    registered = ContactRegistered("alice", "sip:alice@x", SOURCE, "udp", 60)
    bus.publish(registered)  # nobody listens yet
    stop_all = bus.subscribe(lambda event: heard.append("all"))
    bus.publish(registered)
    stop_contacts = bus.subscribe(lambda event: heard.append("contacts"), (ContactRegistered,))
    bus.publish(registered)
    stop_all()
    bus.publish(registered)
    bus.publish(ServerEvent("up"))
    stop_contacts()
    bus.publish(registered)
    assert heard == ["all", "all", "contacts", "contacts"]
    try:
        stop_all()
    except ValueError:
        pass  # as before: unsubscribing twice is an error
    else:
        raise AssertionError("a second unsubscribe passed silently")


def test_one_listener_subscribed_twice_is_called_twice_and_unsubscribed_once_each() -> None:
    bus = EventBus()
    heard: list[Event] = []
    first = bus.subscribe(heard.append)
    bus.subscribe(heard.append, (ServerEvent,))
    up = ServerEvent("up")
    bus.publish(up)
    assert heard == [up, up]
    first()
    bus.publish(up)
    bus.publish(ContactExpired("a", "sip:a@x"))
    assert heard == [up, up, up]


def test_a_worker_bus_tells_its_listeners_what_they_asked_for_and_main_everything() -> None:
    sent: list[object] = []
    bus = WorkerBus(sent.append)
    everything: list[Event] = []
    ends: list[Event] = []
    bus.subscribe(everything.append)
    bus.subscribe(ends.append, (CallEvent,), ("ended",))
    events = [CallEvent("c", state, "alice", "bob") for state in CALL_STATES] + [
        ContactRefreshed("alice", "sip:alice@x", SOURCE, 60)
    ]
    for event in events:
        bus.publish(event)
    assert everything == events
    assert ends == [events[3]]
    assert [message.event for message in sent if isinstance(message, Publish)] == events
    assert len(sent) == len(events)
    assert len(bus.feed) == 0 and bus.counts == {}  # a worker keeps nothing


# -- the headless log ----------------------------------------------------------------------
class Lines(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[tuple[str, int, str]] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append((record.name, record.levelno, record.getMessage()))


def quiet_logger(name: str, level: int = logging.INFO) -> logging.Logger:
    logger = logging.getLogger(name)
    logger.propagate = False
    logger.handlers[:] = []
    logger.setLevel(level)
    return logger


def logged_lines(events: list[Event], filtered: bool, level: int) -> list[tuple[str, int, str]]:
    name = f"test-subscriptions-{'filtered' if filtered else 'all'}"
    logger = quiet_logger(name, level)
    lines = Lines()
    logger.addHandler(lines)
    security = logger.getChild("security")
    security.propagate = True
    bus = EventBus()
    if filtered:
        subscribe_event_log(bus, logger)
    else:
        bus.subscribe(EventLogger(logger))
    for event in events:
        bus.publish(event)
    logger.removeHandler(lines)
    return [(line_name.replace(name, "log"), lvl, text) for line_name, lvl, text in lines.lines]


def test_the_log_subscribed_to_its_events_writes_the_lines_it_wrote_subscribed_to_all() -> None:
    for seed in range(4):
        events = sample_events(random.Random(seed), 1_500)
        for level in (logging.DEBUG, logging.INFO, logging.WARNING):
            everything = logged_lines(events, filtered=False, level=level)
            assert logged_lines(events, filtered=True, level=level) == everything
            if level == logging.INFO:
                # Not vacuous: lines of every sort were written.
                texts = " ".join(text for _name, _level, text in everything)
                assert "registered alice" in texts and "call ended" in texts
                assert "call failed" in texts and "something happened" in texts
                assert any(name == "log.security" for name, _level, _text in everything)


def test_every_event_class_is_either_logged_or_known_to_have_no_line() -> None:
    """A new event class must be sorted here: else the log would silently never see it."""
    no_line = {Event, SipTraffic, ContactRefreshed}
    for cls in (Event, *EVENT_TYPES):
        assert issubclass(cls, LOGGED_EVENTS) != (cls in no_line), cls.__name__
    assert set(LOGGED_CALL_STATES) < set(CALL_STATES)
