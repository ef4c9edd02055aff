"""The embedded relay on loopback sockets: latching, forwarding, strangers, hold, timeouts."""

from __future__ import annotations

import asyncio
import socket
import time

import pytest

from core.media.latch import ANY_SOURCE, SDP_ADDRESS, SDP_PORT, SIGNALLING_IP, Latch
from core.media.relay import EmbeddedRelay, RelayFull
from core.media.sdp import SdpError, parse
from core.settings import MediaSettings


def sdp(port: int, address: str = "127.0.0.99", direction: str = "sendrecv") -> bytes:
    return (
        f"v=0\r\no=- 1 1 IN IP4 {address}\r\ns=-\r\nc=IN IP4 {address}\r\nt=0 0\r\n"
        f"m=audio {port} RTP/AVP 0\r\na={direction}\r\n"
    ).encode()


def test_latch_prefers_the_sdp_address_then_its_ip_then_the_signalling_ip() -> None:
    latch = Latch()
    latch.expect(("10.0.0.1", 4000), "198.51.100.7", now=0.0, window=3.0)
    assert not latch.admit(("203.0.113.9", 1000), 0.1)  # a stranger: not in the window
    assert latch.peer is None
    assert latch.admit(("198.51.100.7", 5000), 0.3)  # the phone's NAT address
    assert latch.rank == SIGNALLING_IP
    assert not latch.admit(("203.0.113.9", 1000), 0.4)
    assert latch.admit(("10.0.0.1", 4000), 0.5)  # the SDP address itself wins over all
    assert latch.rank == SDP_ADDRESS
    assert not latch.admit(("198.51.100.7", 5000), 0.6)
    # After the window only the latched source gets through, whatever its rank.
    assert latch.admit(("10.0.0.1", 4000), 10.0)
    assert not latch.admit(("10.0.0.1", 4002), 10.0)


def test_latch_takes_the_sdp_port_from_another_ip_below_the_phones_own_addresses() -> None:
    """A phone sending from another of its addresses keeps its port: latched at once (not
    after the window), yet the SIP source or the SDP address still wins over it."""
    latch = Latch()
    latch.expect(("10.0.0.1", 4000), "198.51.100.7", now=0.0, window=3.0)
    assert latch.admit(("192.0.2.50", 4000), 0.1)
    assert latch.rank == SDP_PORT
    assert latch.admit(("198.51.100.7", 6000), 0.2)
    assert latch.rank == SIGNALLING_IP
    assert not latch.admit(("192.0.2.50", 4000), 0.3)


def test_latch_without_a_packet_in_the_window_takes_the_first_then_locks() -> None:
    latch = Latch()
    latch.expect(("10.0.0.1", 4000), "198.51.100.7", now=0.0, window=1.0)
    assert latch.destination() == ("10.0.0.1", 4000)
    assert not latch.admit(("203.0.113.9", 1000), 0.5)
    assert latch.admit(("203.0.113.9", 1000), 5.0)  # the window closed empty: any source
    assert latch.rank == ANY_SOURCE
    assert not latch.admit(("198.51.100.7", 1000), 5.1)  # locked: the window is over
    # A new offer/answer re-opens it: the phone (higher rank) may now come back.
    latch.expect(("10.0.0.1", 4000), "198.51.100.7", now=6.0, window=1.0)
    assert latch.admit(("198.51.100.7", 1000), 6.1)
    assert latch.destination() == ("198.51.100.7", 1000)


class Phone:
    """A UDP endpoint on its own loopback address, counting what it receives."""

    def __init__(self, ip: str) -> None:
        self.sock = socket.socket(
            socket.AF_INET6 if ":" in ip else socket.AF_INET, socket.SOCK_DGRAM
        )
        self.sock.bind((ip, 0))
        self.sock.setblocking(False)
        self.address = self.sock.getsockname()
        self.received: list[bytes] = []

    def drain(self) -> None:
        while True:
            try:
                self.received.append(self.sock.recv(4096))
            except BlockingIOError:
                return

    def close(self) -> None:
        self.sock.close()


async def settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0.01)


def media_port(body: bytes) -> int:
    return parse(body).media[0].port


async def test_relay_carries_rtp_both_ways_and_ignores_a_stranger() -> None:
    relay = EmbeddedRelay(MediaSettings(port_min=41000, port_max=41100), "127.0.0.1", time.time)
    alice, bob, mallory = Phone("127.0.0.11"), Phone("127.0.0.12"), Phone("127.0.0.13")
    now = time.time()
    try:
        to_bob = relay.offer("c1", "atag", sdp(4000), "127.0.0.11", "127.0.0.1", now)
        to_alice = relay.answer("c1", "atag", "btag", sdp(4002), "127.0.0.12", "127.0.0.1", now)
        assert parse(to_bob).media[0].address == "127.0.0.1"
        alice_port, bob_port = media_port(to_alice), media_port(to_bob)
        assert alice_port != bob_port
        for index in range(20):
            alice.sock.sendto(b"A%d" % index, ("127.0.0.1", alice_port))
            bob.sock.sendto(b"B%d" % index, ("127.0.0.1", bob_port))
            await settle()
        mallory.sock.sendto(b"M", ("127.0.0.1", alice_port))
        mallory.sock.sendto(b"M", ("127.0.0.1", bob_port))
        await settle()
        alice.sock.sendto(b"A-last", ("127.0.0.1", alice_port))
        await settle()
        alice.drain()
        bob.drain()
        mallory.drain()
        # A0 went to the address Bob's SDP named (nowhere): Bob had not been heard from yet.
        assert bob.received == [b"A%d" % i for i in range(1, 20)] + [b"A-last"]
        assert alice.received == [b"B%d" % i for i in range(20)]
        assert mallory.received == []
        stats = relay.stats("c1", time.time())
        assert stats is not None
        assert stats.caller_packets == 21 and stats.callee_packets == 20
        assert stats.streams[0].dropped == 2
    finally:
        relay.delete("c1")
        for phone in (alice, bob, mallory):
            phone.close()
    assert relay.ports.free == relay.ports.capacity


async def test_hold_keeps_ports_and_reinvite_relatches() -> None:
    relay = EmbeddedRelay(MediaSettings(port_min=41100, port_max=41200), "127.0.0.1", time.time)
    now = time.time()
    first = relay.offer("c2", "atag", sdp(4000), "127.0.0.11", "127.0.0.1", now)
    relay.answer("c2", "atag", "btag", sdp(4002), "127.0.0.12", "127.0.0.1", now)
    held = relay.offer("c2", "atag", sdp(4000, "0.0.0.0", "sendonly"), "127.0.0.11", "x", now)
    assert media_port(held) == media_port(first)
    assert b"c=IN IP4 0.0.0.0" in held and b"a=sendonly" in held
    stats = relay.stats("c2", now)
    assert stats is not None and stats.streams[0].on_hold
    # A re-INVITE from the callee (its own From tag) updates the callee side.
    again = relay.offer("c2", "btag", sdp(4010), "127.0.0.12", "127.0.0.1", now)
    assert media_port(again) != media_port(first)  # faces the caller
    relay.delete("c2")


async def test_silence_expires_the_session_hold_waits_longer() -> None:
    settings = MediaSettings(port_min=41200, port_max=41300, timeout_seconds=60.0)
    relay = EmbeddedRelay(settings, "127.0.0.1", time.time)
    relay.offer("talk", "a", sdp(4000), "127.0.0.11", "127.0.0.1", 1000.0)
    relay.offer("hold", "a", sdp(4000, direction="inactive"), "127.0.0.11", "127.0.0.1", 1000.0)
    assert relay.expire(1059.0) == []
    assert relay.expire(1060.0) == ["talk"]
    assert list(relay.sessions) == ["hold"]
    assert relay.expire(1000.0 + settings.hold_timeout_seconds) == ["hold"]
    assert relay.ports.free == relay.ports.capacity


async def test_bounded_by_sessions_and_ports() -> None:
    relay = EmbeddedRelay(
        MediaSettings(port_min=41300, port_max=41308, max_sessions=5), "127.0.0.1", time.time
    )
    relay.offer("one", "a", sdp(4000), "127.0.0.11", "127.0.0.1", 0.0)  # 2 pairs of 4
    relay.offer("two", "a", sdp(4000), "127.0.0.11", "127.0.0.1", 0.0)
    with pytest.raises(RelayFull):
        relay.offer("three", "a", sdp(4000), "127.0.0.11", "127.0.0.1", 0.0)
    with pytest.raises(SdpError):
        relay.offer("bad", "a", b"garbage", "127.0.0.11", "127.0.0.1", 0.0)
    assert "bad" not in relay.sessions
    for call_id in list(relay.sessions):
        relay.delete(call_id)
    assert relay.ports.free == relay.ports.capacity


async def test_rtcp_goes_between_the_odd_ports() -> None:
    """RFC 3550 §11: RTCP on the port above RTP, relayed between the sides' RTCP ports."""
    relay = EmbeddedRelay(MediaSettings(port_min=41400, port_max=41500), "127.0.0.1", time.time)
    alice, bob = Phone("127.0.0.11"), Phone("127.0.0.12")
    try:
        now = time.time()
        to_bob = relay.offer("c5", "atag", sdp(4000), "127.0.0.11", "127.0.0.1", now)
        to_alice = relay.answer("c5", "atag", "btag", sdp(4002), "127.0.0.12", "127.0.0.1", now)
        alice_rtcp, bob_rtcp = media_port(to_alice) + 1, media_port(to_bob) + 1
        bob.sock.sendto(b"bob-rtcp", ("127.0.0.1", bob_rtcp))  # Bob is heard first: latched
        await settle()
        alice.sock.sendto(b"alice-rtcp", ("127.0.0.1", alice_rtcp))
        await settle()
        bob.drain()
        assert bob.received == [b"alice-rtcp"]
        stats = relay.stats("c5", now)
        assert stats is not None and stats.caller_packets == 1 and stats.callee_packets == 1
    finally:
        relay.delete("c5")
        alice.close()
        bob.close()


async def test_the_phones_rtcp_reports_give_loss_and_jitter() -> None:
    """What each phone reports of what it hears (RFC 3550 §6.4), in % and ms; SRTCP is not
    read (its blocks are encrypted), only relayed."""
    relay = EmbeddedRelay(MediaSettings(port_min=41600, port_max=41700), "127.0.0.1", time.time)
    alice, bob = Phone("127.0.0.11"), Phone("127.0.0.12")
    try:
        now = time.time()
        to_bob = relay.offer("c6", "atag", sdp(4000), "127.0.0.11", "127.0.0.1", now)
        to_alice = relay.answer("c6", "atag", "btag", sdp(4002), "127.0.0.12", "127.0.0.1", now)
        rr = bytes([0x81, 201, 0, 7]) + bytes(4) + bytes(4) + bytes([64, 0, 0, 9]) + bytes(4)
        alice.sock.sendto(
            rr + (160).to_bytes(4, "big") + bytes(8), ("127.0.0.1", media_port(to_alice) + 1)
        )
        bob.sock.sendto(b"\x80\x00not rtcp at all", ("127.0.0.1", media_port(to_bob)))
        await settle()
        stats = relay.stats("c6", now)
        assert stats is not None
        (stream,) = stats.streams
        assert stream.caller_loss == 25.0 and stream.caller_jitter_ms == 20.0  # 64/256, 160/8k
        assert stream.callee_loss is None and stream.callee_jitter_ms is None
    finally:
        relay.delete("c6")
        alice.close()
        bob.close()


async def test_a_ringing_call_is_not_timed_out_its_silence_counts_from_the_answer() -> None:
    relay = EmbeddedRelay(MediaSettings(port_min=41700, port_max=41800), "127.0.0.1", time.time)
    relay.offer("ring", "a", sdp(4000), "127.0.0.11", "127.0.0.1", 1000.0)
    ringing = {"ring"}
    assert relay.expire(1100.0, ringing.__contains__) == []  # 100 s of ringing: kept
    ringing.clear()  # answered at 1100
    assert relay.expire(1159.0, ringing.__contains__) == []
    assert relay.expire(1160.0, ringing.__contains__) == ["ring"]


def families(relay: EmbeddedRelay, call_id: str) -> list[int]:
    [stream] = relay.sessions[call_id].streams
    assert stream is not None
    return [pair[0].sock.family for pair in stream.ports]


async def test_a_side_that_moves_to_ipv6_gets_a_pair_of_that_family() -> None:
    """Each side's pair is of the family it signals in; a re-INVITE from a caller now on IPv6
    moves its pair to IPv6 (a new port, the old one freed), and its audio flows again."""
    try:
        socket.socket(socket.AF_INET6, socket.SOCK_DGRAM).close()
        Phone("::1").close()
    except OSError:
        pytest.skip("no IPv6 loopback (::1)")
    relay = EmbeddedRelay(MediaSettings(port_min=41800, port_max=41900), "127.0.0.1", time.time)
    alice, bob = Phone("::1"), Phone("127.0.0.12")
    now = time.time()
    try:
        relay.offer("c1", "atag", sdp(4000), "127.0.0.11", "127.0.0.1", now)
        relay.answer("c1", "atag", "btag", sdp(4002), "127.0.0.12", "127.0.0.1", now)
        assert families(relay, "c1") == [socket.AF_INET, socket.AF_INET]
        to_bob = relay.offer("c1", "atag", sdp(alice.address[1], "::1"), "::1", "127.0.0.1", now)
        to_alice = relay.answer(
            "c1", "atag", "btag", sdp(bob.address[1], "127.0.0.12"), "127.0.0.12", "::1", now
        )
        assert families(relay, "c1") == [socket.AF_INET6, socket.AF_INET]
        assert relay.ports.free == relay.ports.capacity - 1  # the IPv4 pair alice left
        assert parse(to_alice).media[0].address == "::1"
        alice.sock.sendto(b"A", ("::1", media_port(to_alice)))
        bob.sock.sendto(b"B", ("127.0.0.1", media_port(to_bob)))
        await settle()
        alice.drain()
        bob.drain()
        assert (alice.received, bob.received) == ([b"B"], [b"A"])
    finally:
        relay.delete("c1")
        alice.close()
        bob.close()
    assert relay.ports.free == relay.ports.capacity
