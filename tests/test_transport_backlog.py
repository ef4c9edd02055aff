"""The UDP backlog: datagrams are handled a few per loop turn, in order, and never without bound.

Driven over a real loopback socket against a real Transport; the handler records what it got.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator
from dataclasses import replace

import pytest
from support.ports import free_port

from core.net.flow import Flow
from core.net.transport import UDP_BATCH, Transport, starts_new_work
from core.settings import ListenAddress, TransportSettings


class Recorder:
    """An on_message handler that keeps what it was given, and can be told to fail once."""

    def __init__(self) -> None:
        self.received: list[bytes] = []
        self.fail_on: bytes | None = None

    def __call__(self, data: bytes, flow: Flow) -> None:
        self.received.append(data)
        if data == self.fail_on:
            raise RuntimeError("handler failed")


async def _transport(recorder: Recorder, **changes: object) -> tuple[Transport, int]:
    port = free_port()
    transport = Transport(replace(TransportSettings(), **changes), recorder)  # type: ignore[arg-type]
    await transport.start((ListenAddress("udp", "127.0.0.1", port),))
    return transport, port


@pytest.fixture
async def sender() -> AsyncIterator[socket.socket]:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        yield sock
    finally:
        sock.close()


async def _until(condition: object, timeout: float = 2.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not condition():  # type: ignore[operator]
        assert asyncio.get_running_loop().time() < deadline, "timed out"
        await asyncio.sleep(0.01)


async def test_datagrams_from_a_socket_are_handled_in_order(sender: socket.socket) -> None:
    recorder = Recorder()
    transport, port = await _transport(recorder)
    try:
        burst = [f"message {i}".encode() for i in range(3 * UDP_BATCH)]
        for data in burst:
            sender.sendto(data, ("127.0.0.1", port))
        await _until(lambda: len(recorder.received) == len(burst))
        assert recorder.received == burst
        assert transport.backlog_drops == 0
    finally:
        await transport.stop()


async def test_a_burst_is_handled_a_batch_per_loop_turn() -> None:
    recorder = Recorder()
    transport, port = await _transport(recorder)
    try:
        flow = Flow("udp", ("127.0.0.1", 40000), ("127.0.0.1", port))
        burst = [f"message {i}".encode() for i in range(2 * UDP_BATCH + 3)]
        for data in burst:  # as the reader queues what one turn's reads brought
            transport.enqueue_datagram(data, flow)
        seen: list[int] = []
        while len(recorder.received) < len(burst):
            await asyncio.sleep(0)  # one loop turn: other callbacks ran between batches
            seen.append(len(recorder.received))
        assert seen[:3] == [UDP_BATCH, 2 * UDP_BATCH, len(burst)]
        assert recorder.received == burst
    finally:
        await transport.stop()


async def test_the_backlog_is_bounded_and_counts_what_it_drops() -> None:
    # uvloop reads up to 32 datagrams per loop turn and asyncio one, so a socket cannot
    # overfill the backlog on every loop: the datagrams are queued as the reader queues them.
    recorder = Recorder()
    transport, port = await _transport(recorder, udp_backlog_messages=5)
    try:
        flow = Flow("udp", ("127.0.0.1", 40000), ("127.0.0.1", port))
        for i in range(20):
            transport.enqueue_datagram(f"message {i}".encode(), flow)
        assert transport.backlog_drops == 15
        await _until(lambda: len(recorder.received) == 5)
        assert recorder.received == [f"message {i}".encode() for i in range(5)]
        await asyncio.sleep(0.05)
        assert len(recorder.received) == 5  # the dropped ones are gone, not late
    finally:
        await transport.stop()


async def test_a_failing_handler_does_not_stall_the_backlog(
    sender: socket.socket, caplog: pytest.LogCaptureFixture
) -> None:
    recorder = Recorder()
    recorder.fail_on = b"message 0"
    transport, port = await _transport(recorder)
    try:
        for i in range(UDP_BATCH + 3):
            sender.sendto(f"message {i}".encode(), ("127.0.0.1", port))
        await _until(lambda: len(recorder.received) == UDP_BATCH + 3)
        # The rest of the burst is handled after the failure, and later datagrams too.
        sender.sendto(b"later", ("127.0.0.1", port))
        await _until(lambda: recorder.received[-1:] == [b"later"])
    finally:
        await transport.stop()


# -- shedding new requests under overload -------------------------------------------------
@pytest.mark.parametrize(
    ("first_bytes", "new_work"),
    [
        (b"INVITE sip:bob@pbx.test SIP/2.0\r\n", True),
        (b"REGISTER sip:pbx.test SIP/2.0\r\n", True),
        (b"OPTIONS sip:pbx.test SIP/2.0\r\n", True),
        (b"garbage", True),
        (b"SIP/2.0 200 OK\r\n", False),
        (b"ACK sip:bob@192.0.2.1 SIP/2.0\r\n", False),
        (b"CANCEL sip:bob@pbx.test SIP/2.0\r\n", False),
        (b"BYE sip:bob@192.0.2.1 SIP/2.0\r\n", False),
    ],
)
def test_what_counts_as_new_work(first_bytes: bytes, new_work: bool) -> None:
    assert starts_new_work(first_bytes) is new_work


class _Clock:
    """The transport's loop clock, moved by hand."""

    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@contextlib.asynccontextmanager
async def _clocked(
    recorder: Recorder, monkeypatch: pytest.MonkeyPatch, shed_after: float
) -> AsyncIterator[tuple[Transport, _Clock, Flow]]:
    """A transport shedding after `shed_after` seconds, on a clock the test moves."""
    transport, port = await _transport(recorder, udp_shed_after_seconds=shed_after)
    clock = _Clock(1_000.0)
    monkeypatch.setattr(transport.intake, "clock", clock)
    try:
        yield transport, clock, Flow("udp", ("127.0.0.1", 40000), ("127.0.0.1", port))
    finally:
        await transport.stop()


async def test_a_backlog_that_waited_too_long_sheds_new_requests_but_keeps_what_ends_calls(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    recorder = Recorder()
    async with _clocked(recorder, monkeypatch, 0.3) as (transport, clock, flow):
        queued = [b"INVITE 1", b"INVITE 2"]
        for data in queued:
            transport.enqueue_datagram(data, flow)
        clock.now += 0.2  # the oldest has waited 0.2 s: still taken
        transport.enqueue_datagram(b"INVITE 3", flow)
        clock.now += 0.2  # 0.4 s: past the limit
        late = [b"INVITE 4", b"SIP/2.0 200 OK", b"REGISTER 5", b"ACK 6", b"BYE 7", b"CANCEL 8"]
        for data in late:
            transport.enqueue_datagram(data, flow)
        assert transport.shed_requests == 2
        kept = [*queued, b"INVITE 3", b"SIP/2.0 200 OK", b"ACK 6", b"BYE 7", b"CANCEL 8"]
        await _until(lambda: len(recorder.received) == len(kept))
        assert recorder.received == kept
        # Drained: new requests are taken again.
        transport.enqueue_datagram(b"INVITE 9", flow)
        await _until(lambda: recorder.received[-1:] == [b"INVITE 9"])
        assert transport.shed_requests == 2


async def test_shedding_can_be_turned_off(monkeypatch: pytest.MonkeyPatch) -> None:
    recorder = Recorder()
    async with _clocked(recorder, monkeypatch, 0.0) as (transport, clock, flow):
        burst = [f"INVITE {i}".encode() for i in range(50)]
        for data in burst:
            transport.enqueue_datagram(data, flow)
            clock.now += 1.0
        await _until(lambda: len(recorder.received) == len(burst))
        assert transport.shed_requests == 0


async def test_the_admin_is_told_when_the_server_sheds_requests(tmp_path) -> None:
    from conftest import start_pbx

    from core.events import ServerEvent

    pbx = await start_pbx(tmp_path)
    try:
        cursor = pbx.bus.feed.next_seq
        pbx.transport.shed_requests += 40  # as enqueue_datagram counts them under overload
        pbx._report_shedding()
        pbx._report_shedding()  # nothing new shed since: no second warning
        events, _, _ = pbx.bus.feed.read_since(cursor)
        warnings = [e for e in events if isinstance(e, ServerEvent) and e.level == "warning"]
        assert len(warnings) == 1
        assert warnings[0].message.startswith("overloaded: 40 new requests dropped")
        assert pbx.stats().dropped == 40
        # A full backlog loses any kind of message: that is said too, apart.
        pbx.transport.backlog_drops += 7
        pbx._report_shedding()
        events, _, _ = pbx.bus.feed.read_since(cursor)
        warnings = [e for e in events if isinstance(e, ServerEvent) and e.level == "warning"]
        assert len(warnings) == 2
        assert warnings[1].message.startswith("overloaded: 7 messages lost in the last second")
    finally:
        await pbx.stop()


# -- the fast lane: what a running server hands datagrams to --------------------------------
async def test_the_fast_lane_takes_datagrams_reports_faults_and_runs_once_per_batch(
    sender: socket.socket,
) -> None:
    generic = Recorder()
    lane = Recorder()
    lane.fail_on = b"message 1"
    batches: list[int] = []
    faults: list[tuple[str, Flow]] = []
    transport, port = await _transport(generic)
    try:
        transport.fast_lane(
            lane,
            lambda: batches.append(len(lane.received)),
            lambda error, flow: faults.append((str(error), flow)),
        )
        burst = [f"message {i}".encode() for i in range(UDP_BATCH + 3)]
        for data in burst:
            sender.sendto(data, ("127.0.0.1", port))
        await _until(lambda: len(lane.received) == len(burst))
        assert lane.received == burst  # the failure did not stop the batch it was in
        assert generic.received == []
        assert [error for error, _flow in faults] == ["handler failed"]
        assert faults[0][1].remote[1] == sender.getsockname()[1]
        await _until(lambda: batches[-1:] == [len(burst)])
        # Once after each batch handled, not per message: a burst queued as one loop turn's
        # reads is handled in batches of UDP_BATCH.
        batches.clear()
        flow = Flow("udp", ("127.0.0.1", 40000), ("127.0.0.1", port))
        for data in burst:
            transport.enqueue_datagram(data, flow)
        await _until(lambda: len(lane.received) == 2 * len(burst))
        assert batches == [len(burst) + UDP_BATCH, 2 * len(burst)]
        # Closed again (a server stopping): back to the handler the transport was built with.
        transport.fast_lane(None)
        sender.sendto(b"after", ("127.0.0.1", port))
        await _until(lambda: generic.received == [b"after"])
        assert len(lane.received) == 2 * len(burst)
    finally:
        await transport.stop()


async def test_keep_alive_padding_and_oversized_datagrams_are_not_queued(
    sender: socket.socket,
) -> None:
    recorder = Recorder()
    transport, port = await _transport(recorder, max_message_bytes=100)
    try:
        for data in (b"\r\n\r\n", b"\r\n", b"\x00\x00\x00\x00", b"x" * 101, b"\r\n\r"):
            sender.sendto(data, ("127.0.0.1", port))
        await _until(lambda: transport.received_messages == 5)
        await _until(lambda: recorder.received == [b"\r\n\r"])
        assert transport.oversized == 1
        assert transport.intake.backlog_drops == transport.backlog_drops == 0
    finally:
        await transport.stop()


async def test_an_ipv4_mapped_source_is_seen_as_plain_ipv4() -> None:
    # A dual-stack socket (not ours: ours are IPv6-only) shows IPv4 peers as ::ffff:a.b.c.d.
    recorder = Recorder()
    transport, port = await _transport(recorder)
    seen: list[Flow] = []
    transport.fast_lane(lambda data, flow: seen.append(flow))
    try:
        receiver = transport.intake.receiver(("::", port))
        receiver.datagram_received(b"OPTIONS", ("::ffff:192.0.2.7", 5060, 0, 0))
        receiver.datagram_received(b"OPTIONS", ("::ffff:7", 5061, 0, 0))
        await _until(lambda: len(seen) == 2)
        assert [flow.remote for flow in seen] == [("192.0.2.7", 5060), ("::ffff:7", 5061)]
        assert seen[0].local == ("::", port) and seen[0].transport == "udp"
    finally:
        await transport.stop()


async def test_udp_sends_take_the_fast_lane_only_to_an_address_from_a_socket_read_here() -> None:
    recorder = Recorder()
    transport, port = await _transport(recorder)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as peer:
        peer.bind(("127.0.0.1", 0))
        peer.setblocking(False)
        target = peer.getsockname()
        local = ("127.0.0.1", port)
        loop = asyncio.get_running_loop()
        try:
            out = transport.udp_out
            # First to a new host: the general send learns it is an address.
            assert out.send(b"one", Flow("udp", target, local))
            assert (out.sent, transport.sent_messages) == (0, 1)
            assert out.send(b"two", Flow("udp", target, local))
            assert (out.sent, transport.sent_messages) == (1, 2)
            # A host name is looked up off the loop by the general send, never sent as is.
            assert out.send(b"three", Flow("udp", ("localhost", target[1]), local))
            # From a local address no socket here reads: the general send picks one.
            assert out.send(b"four", Flow("udp", target, ("127.0.0.1", 1)))
            got = [await asyncio.wait_for(loop.sock_recv(peer, 100), 2.0) for _ in range(4)]
            assert sorted(got) == [b"four", b"one", b"three", b"two"]
            assert out.sent == 1 and transport.sent_messages == 4
            # Nothing goes out once the transport has stopped.
            await transport.stop()
            assert not out.send(b"five", Flow("udp", target, local))
        finally:
            await transport.stop()
