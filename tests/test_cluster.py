"""The parts of the cluster that need no second process: links on a socketpair, the
replication rules, main's view of the workers' calls, and the divided limits."""

from __future__ import annotations

import asyncio
import socket
import sys
from dataclasses import replace

import pytest

from core.cluster.affinity import MAIN
from core.cluster.changes import (
    BanReplicator,
    BindingReplicator,
    ChangeApplier,
    LimiterReplicator,
    Replicator,
    WorkerBus,
    bind_message,
    divided_limits,
    flow_fields,
    flow_of,
    unbind_message,
)
from core.cluster.links import Links, link_pair
from core.cluster.media import MediaReporter, RemoteMedia, media_of
from core.cluster.messages import (
    Banned,
    Bind,
    CallCounted,
    CallReleased,
    CallsUp,
    Cdr,
    Init,
    Publish,
    Ready,
    Reload,
    Sip,
    Unbanned,
)
from core.cluster.remote import RemoteCalls, lost_call
from core.events import (
    CallEvent,
    ContactRegistered,
    EventBus,
    SipTraffic,
    SourceUnbanned,
)
from core.media.relay import MediaStats, StreamStats
from core.net.flow import Flow
from core.registrar.location import Binding, LocationService
from core.security.guard import Security
from core.settings import RegistrarSettings, SecuritySettings
from core.sip.uri import parse_uri
from core.trunks.tollfraud import CallLimiter
from core.users import UserDirectory, make_user

NOW = 1_800_000_000.0


class Inbox:
    """What a Links object received, and which peers it lost."""

    def __init__(self) -> None:
        self.messages: list[tuple[int, tuple, list[int]]] = []
        self.lost: list[int] = []
        self.arrived = asyncio.Event()

    def on_message(self, peer: int, message: tuple, fds: list[int]) -> None:
        self.messages.append((peer, message, fds))
        self.arrived.set()

    def on_lost(self, peer: int) -> None:
        self.lost.append(peer)
        self.arrived.set()

    async def wait(self, count: int) -> None:
        while len(self.messages) + len(self.lost) < count:
            self.arrived.clear()
            await asyncio.wait_for(self.arrived.wait(), 2.0)


def linked() -> tuple[Links, Inbox, Links, Inbox]:
    """Main (0) and worker 1 linked in this one process."""
    main_inbox, worker_inbox = Inbox(), Inbox()
    main = Links(main_inbox.on_message, main_inbox.on_lost)
    worker = Links(worker_inbox.on_message, worker_inbox.on_lost)
    ours, theirs = link_pair()
    main.attach(1, ours)
    worker.attach(MAIN, theirs)
    return main, main_inbox, worker, worker_inbox


# -- links ------------------------------------------------------------------------------------
async def test_messages_and_file_descriptors_travel_between_links() -> None:
    main, main_inbox, worker, worker_inbox = linked()
    try:
        flow = Flow("tcp", ("192.0.2.7", 5060), ("127.0.0.1", 5060), 42)
        assert main.send(1, Sip(b"OPTIONS ...", flow_fields(flow)))
        udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        with udp:
            assert main.send(1, Reload(), [udp.fileno()])
            await worker_inbox.wait(2)
        (_, first, _), (_, second, fds) = worker_inbox.messages
        assert type(first) is Sip and flow_of(first.flow) == flow and first.data == b"OPTIONS ..."
        assert type(second) is Reload
        with socket.socket(fileno=fds[0]) as passed:
            assert passed.type == socket.SOCK_DGRAM
        worker.send(MAIN, Ready())
        await main_inbox.wait(1)
        assert main_inbox.messages == [(1, Ready(), [])]
        assert repr(first).startswith("Sip(data=b'OPTIONS ...', flow=('tcp'")
    finally:
        main.close()
        worker.close()


async def test_a_peer_that_goes_away_is_reported_once_and_sends_to_it_are_counted() -> None:
    main, main_inbox, worker, _ = linked()
    worker.close()
    await main_inbox.wait(1)
    assert main_inbox.lost == [1]
    assert 1 not in main
    assert not main.send(1, Reload())
    assert main.dropped == 1
    main.close()


async def test_messages_queued_in_one_turn_travel_as_one_batch_in_order() -> None:
    main, _, worker, worker_inbox = linked()
    try:
        for number in range(50):
            main.send(1, CallReleased(f"call-{number}"))
        main.broadcast(Reload())
        await worker_inbox.wait(51)
        assert [message for _, message, _ in worker_inbox.messages] == [
            *(CallReleased(f"call-{number}") for number in range(50)),
            Reload(),
        ]
        assert worker.received == 51
    finally:
        main.close()
        worker.close()


async def test_a_full_link_drops_instead_of_blocking() -> None:
    main, _, worker, _ = linked()
    try:
        payload = b"x" * 70_000
        batches = 0
        while main.dropped == 0:  # nobody reads: the buffer fills up
            main.send(1, Sip(payload, None))  # type: ignore[arg-type]  # past FLUSH_BYTES
            batches += 1
            assert batches < 10_000, "the link never filled"
        main.broadcast(Reload())
        main.flush()
        assert main.dropped == 2
    finally:
        main.close()
        worker.close()


# -- replication --------------------------------------------------------------------------------
def binding(user: str = "alice", contact: str = "sip:alice@192.0.2.10:5062") -> Binding:
    return Binding(
        user=user,
        contact=contact,
        uri=parse_uri(contact),  # type: ignore[arg-type]
        flow=Flow("tcp", ("192.0.2.10", 40000), ("127.0.0.1", 5060), 7),
        expires_at=NOW + 3600,
        updated_at=NOW,
        registered_at=NOW,
        refreshed_at=NOW,
        call_id="reg-1",
        cseq=3,
    )


class Sent:
    def __init__(self) -> None:
        self.to_peers: list[tuple[int | None, tuple]] = []

    def send(self, peer: int, message: tuple, fds=None) -> bool:
        self.to_peers.append((peer, message))
        return True

    def broadcast(self, message: tuple, *, skip: int | None = None) -> None:
        self.to_peers.append((skip, message))


def test_a_worker_sends_its_own_changes_to_main_but_not_those_it_adopts() -> None:
    sent = Sent()
    replicator = Replicator(sent, 2)  # type: ignore[arg-type]
    location = LocationService(RegistrarSettings(), EventBus())
    location.publishers.append(BindingReplicator(replicator))
    location.save(binding())
    assert [(peer, type(message)) for peer, message in sent.to_peers] == [(MAIN, Bind)]
    location.adopt(binding(contact="sip:alice@192.0.2.11"))  # another process's
    assert len(sent.to_peers) == 1


def test_a_refresh_in_place_reaches_the_other_processes_at_the_flush_with_its_expiry() -> None:
    sent = Sent()
    worker = LocationService(RegistrarSettings(), EventBus())
    worker.publishers.append(BindingReplicator(Replicator(sent, 2)))  # type: ignore[arg-type]
    original = binding()
    worker.save(original)
    worker.refresh(original, NOW + 7200, NOW + 3600, NOW + 3600, 4)
    assert len(sent.to_peers) == 1  # not yet: refreshes leave together, once a second
    assert worker.flush() == 1
    peer, message = sent.to_peers[-1]
    assert peer == MAIN and type(message) is Bind

    elsewhere = LocationService(RegistrarSettings(), EventBus())
    changes = ChangeApplier(
        location=elsewhere,
        security=Security(SecuritySettings(), EventBus()),
        limiter=CallLimiter(max_global=0),
        users=UserDirectory(),
        clock=lambda: NOW + 3600,
    )
    elsewhere.adopt(binding())  # what the other process held before the refresh
    assert changes.apply(message)
    [held] = elsewhere.lookup("alice", NOW + 3600)
    assert (held.cseq, held.expires_at) == (4, NOW + 7200)
    assert elsewhere.expire(NOW + 3601) == []  # the old expiry no longer applies


def test_main_sends_its_own_changes_to_every_worker() -> None:
    sent = Sent()
    replicator = Replicator(sent, MAIN)  # type: ignore[arg-type]
    replicator.emit(Unbanned("192.0.2.8"))
    assert sent.to_peers == [(None, Unbanned("192.0.2.8"))]


def test_a_call_counted_elsewhere_is_released_here_without_an_announcement() -> None:
    sent = Sent()
    limiter = CallLimiter(max_global=0, listener=LimiterReplicator(Replicator(sent, 1)))  # type: ignore[arg-type]
    alice = make_user("alice", "alice-secret-1", "pbx.test")
    assert limiter.admit(alice, "mine", NOW) is None
    limiter.count_in("alice", "theirs", NOW, hourly=False)
    limiter.release("theirs")  # its own process announces its end
    limiter.release("mine")
    assert [message for _, message in sent.to_peers] == [
        CallCounted("alice", "mine", NOW),
        CallReleased("mine"),
    ]


def test_changes_from_another_process_are_applied_quietly() -> None:
    bus = EventBus()
    sent = Sent()
    replicator = Replicator(sent, MAIN)  # type: ignore[arg-type]
    location = LocationService(RegistrarSettings(), bus)
    location.publishers.append(BindingReplicator(replicator))
    security = Security(SecuritySettings(), bus, publisher=BanReplicator(replicator))
    limiter = CallLimiter(max_global=0, listener=LimiterReplicator(replicator))
    users = UserDirectory()
    users.put(make_user("alice", "alice-secret-1", "pbx.test", max_calls_per_hour=5))
    changes = ChangeApplier(
        location=location,
        security=security,
        limiter=limiter,
        users=users,
        clock=lambda: NOW,
    )

    original = binding()
    assert changes.apply(bind_message(original))
    [held] = location.lookup("alice", NOW)
    assert held.flow == original.flow  # the TCP connection is kept: main holds it
    assert (held.call_id, held.cseq, held.expires_at) == ("reg-1", 3, NOW + 3600)
    assert changes.apply(unbind_message(original))
    assert location.lookup("alice", NOW) == []

    assert changes.apply(Banned("192.0.2.66", NOW + 600, "flood", 900))
    [ban] = security.bans(NOW)
    assert (ban.ip, ban.reason, ban.until_wall) == ("192.0.2.66", "flood", NOW + 600)
    assert changes.apply(Unbanned("192.0.2.66"))
    assert security.bans(NOW) == []

    assert changes.apply(CallCounted("alice", "call-1", NOW))
    assert limiter.active("alice") == 1
    assert changes.apply(CallReleased("call-1"))
    assert limiter.active("alice") == 0

    # A worker started again learns from main what the others carry (core/cluster/main.py).
    assert changes.apply(CallsUp(([("call-2", "alice")], {"alice": [NOW - 60, NOW]})))
    assert limiter.active("alice") == 1 and "call-2" in limiter

    assert not changes.apply(Cdr(None))  # type: ignore[arg-type]
    assert not changes.apply(Init(None, None))  # type: ignore[arg-type]
    events, _, _ = bus.feed.read_since(0)
    assert events == []  # the process that made each change announced it
    assert sent.to_peers == []  # and passed it on

    # The same tables' own changes do go out.
    security.ban("192.0.2.77", 60.0, "admin", NOW)
    location.save(binding(contact="sip:alice@192.0.2.12"))
    assert [type(message) for _, message in sent.to_peers] == [Banned, Bind]


def test_a_limiter_snapshot_carries_calls_up_and_hourly_windows_to_a_new_worker() -> None:
    main = CallLimiter(max_global=3)
    alice = make_user("alice", "alice-secret-1", "pbx.test", max_concurrent_calls=1)
    bob = make_user("bob", "bob-secret-22", "pbx.test", max_calls_per_hour=2)
    main.count_in("alice", "a1", NOW, hourly=False)
    main.count_in("bob", "b1", NOW - 10, hourly=True)
    main.release("b1")  # ended, but still one of bob's two calls this hour
    main.count_in("bob", "b2", NOW - 5, hourly=True)

    restarted = CallLimiter(max_global=3)
    restarted.adopt(main.snapshot())
    assert (restarted.active("alice"), restarted.active("bob")) == (1, 1)
    refusal = restarted.admit(alice, "a2", NOW)
    assert refusal is not None and refusal.status == 486
    refusal = restarted.admit(bob, "b3", NOW)
    assert refusal is not None and refusal.reason == "Hourly call limit reached"
    restarted.release("a1")
    assert restarted.admit(alice, "a2", NOW) is None
    assert restarted.snapshot()[1] == {"bob": [NOW - 10, NOW - 5]}


def test_outbound_calls_counted_elsewhere_hold_the_limits_here() -> None:
    limiter = CallLimiter(max_global=0)
    alice = make_user("alice", "alice-secret-1", "pbx.test", max_concurrent_calls=1)
    limiter.count_in("alice", "elsewhere", NOW, hourly=False)
    refusal = limiter.admit(alice, "here", NOW)
    assert refusal is not None and refusal.status == 486
    limiter.release("elsewhere")
    assert limiter.admit(alice, "here", NOW) is None


def test_a_worker_bus_sends_events_to_main_but_not_expiries_main_announces() -> None:
    sent: list[tuple] = []
    bus = WorkerBus(sent.append)
    heard: list = []
    bus.subscribe(heard.append)
    registered = ContactRegistered("alice", "sip:alice@x", ("192.0.2.1", 5060), "udp", 60)
    bus.publish(registered)
    bus.publish(SourceUnbanned("unbanned", "192.0.2.5", detail="expired"))
    bus.publish(SourceUnbanned("unbanned", "192.0.2.6", detail="admin"))
    traffic = SipTraffic("in", "udp", ("192.0.2.1", 5060), ("127.0.0.1", 5060), b"OPTIONS")
    bus.capture_traffic = False
    bus.publish(traffic)
    bus.capture_traffic = True
    bus.publish(traffic)
    assert all(type(message) is Publish for message in sent)
    assert [message.event for message in sent] == [
        registered,
        SourceUnbanned("unbanned", "192.0.2.6", detail="admin", at=sent[1].event.at),
        traffic,
    ]
    assert len(heard) == 3  # local listeners (the trunks) hear every feed event


# -- main's view ---------------------------------------------------------------------------------
def call_event(call_id: str, state: str, at: float) -> CallEvent:
    return CallEvent(call_id, state, "alice", "bob", source="192.0.2.1", at=at)


def test_main_follows_the_workers_calls_from_their_events() -> None:
    calls = RemoteCalls(capacity=2, max_age=100.0)
    calls.follow(call_event("a", "trying", NOW), worker=1)
    calls.follow(call_event("a", "answered", NOW + 2), worker=1)
    [info] = calls.snapshot()
    assert (info.state, info.started_at, info.answered_at) == ("answered", NOW, NOW + 2)
    calls.follow(call_event("b", "trying", NOW + 3), worker=2)
    calls.follow(call_event("c", "trying", NOW + 4), worker=2)  # over capacity: oldest goes
    assert [info.call_id for info in calls.snapshot()] == ["b", "c"]
    calls.follow(call_event("b", "ended", NOW + 5), worker=2)
    assert [info.call_id for info in calls.snapshot()] == ["c"]
    assert [info.call_id for info in calls.forget_worker(2)] == ["c"] and len(calls) == 0
    calls.follow(call_event("d", "trying", NOW), worker=1)
    calls.sweep(NOW + 99)
    assert len(calls) == 1
    calls.sweep(NOW + 100)  # its end was never heard of
    assert len(calls) == 0


def test_a_call_whose_worker_died_is_accounted_for_as_ending_then() -> None:
    calls = RemoteCalls(capacity=10, max_age=100.0)
    answered = CallEvent("a", "answered", "alice", "+441632960555", source="[2001:db8::5]:5060")
    for state, at in (("trying", NOW), ("answered", NOW + 2)):
        calls.follow(replace(answered, state=state, direction="outbound", at=at), worker=1)
    calls.follow(call_event("b", "ringing", NOW + 3), worker=1)
    (cdr, ended), (unanswered, failed) = [
        lost_call(info, NOW + 62) for info in calls.forget_worker(1)
    ]
    assert (cdr.call_id, cdr.caller, cdr.callee, cdr.direction) == (
        "a",
        "alice",
        "+441632960555",
        "outbound",
    )
    assert (cdr.source_ip, cdr.started_at, cdr.answered_at, cdr.ended_at) == (
        "2001:db8::5",
        NOW,
        NOW + 2,
        NOW + 62,
    )
    assert (cdr.status, cdr.reason, cdr.duration) == (200, "worker process stopped", 60.0)
    assert (ended.state, ended.status, ended.duration) == ("ended", 200, 60.0)
    assert (unanswered.source_ip, unanswered.status, unanswered.duration) == ("192.0.2.1", 0, 0.0)
    assert (unanswered.direction, failed.state) == ("internal", "failed")


@pytest.mark.parametrize(("workers", "flood", "per_ip"), [(1, 200, 10), (2, 100, 5), (3, 67, 4)])
def test_limits_are_divided_among_the_workers(workers: int, flood: int, per_ip: int) -> None:
    settings = SecuritySettings(flood_limit=200, auth_fail_limit_per_ip=10)
    divided = divided_limits(settings, workers)
    assert (divided.flood_limit, divided.auth_fail_limit_per_ip) == (flood, per_ip)
    assert divided_limits(SecuritySettings(flood_limit=1), 8).flood_limit == 1


async def test_a_worker_that_cannot_start_stops_the_server_with_a_reason(
    tmp_path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from conftest import make_settings
    from support.ports import free_port

    from core.pbx import Pbx, StartError

    # The worker command exits at once, as a broken installation's would.
    monkeypatch.setattr(sys, "executable", "/bin/false")
    pbx = Pbx(make_settings(tmp_path / "pbx.db", free_port(), workers=2))
    with pytest.raises(StartError, match=r"worker process \d exited at start"):
        await pbx.start()
    # Nothing is left listening: the port can be bound again at once.
    port = pbx.settings.listen[0].port
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind(("127.0.0.1", port))


def test_media_reports_carry_only_changes_and_are_bounded() -> None:
    """A worker reports a call's media counters when they changed, at most `limit` calls a
    report (the rest next time), and None once a call is no longer relayed; main holds
    counters only for calls it follows, and a silent call's idle time grows from the report."""
    streams = {f"call-{n}": 0 for n in range(5)}

    def stats(call_id: str, now: float) -> MediaStats:
        packets = streams[call_id]
        stream = StreamStats(packets, packets * 172, packets, packets * 172, 0, False)
        return MediaStats((stream,), 0.5)

    reporter = MediaReporter(lambda: streams, stats, limit=3)
    assert [call_id for call_id, _ in reporter.report(0.0)] == ["call-0", "call-1", "call-2"]
    assert [call_id for call_id, _ in reporter.report(1.0)] == ["call-3", "call-4"]
    assert reporter.report(2.0) == []  # nothing moved
    streams["call-1"] = 50
    del streams["call-4"]
    [(gone, nothing), (moved, fields)] = reporter.report(3.0)
    assert (gone, nothing) == ("call-4", None) and moved == "call-1"
    assert fields is not None and media_of(fields).caller_packets == 50

    now = [100.0]
    held = RemoteMedia(lambda: now[0])
    held.update((("call-1", fields), ("stranger", fields)), {"call-1"}.__contains__)
    assert len(held) == 1 and held.stats("stranger") is None
    now[0] += 4.0
    media = held.stats("call-1")
    assert media is not None and media.idle_seconds == 4.5 and media.callee_packets == 50
    held.update((("call-1", None),), {"call-1"}.__contains__)
    assert held.stats("call-1") is None and len(held) == 0
