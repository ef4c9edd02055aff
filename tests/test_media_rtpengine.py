"""rtpengine over its ng protocol: bencode by hand, and the real daemon (Debian's
rtpengine-daemon, userspace forwarding) on loopback with a config file of its own."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from support.ports import free_port
from support.rtpengine import rtpengine_daemon
from support.softphone import RtpEndpoint

from core.media.bencode import BencodeError, decode, encode
from core.media.rtpengine import RtpEngine, RtpEngineError
from core.media.sdp import parse


def test_bencode_round_trip_and_key_order() -> None:
    data = encode({"sdp": b"v=0", "command": "offer", "n": -3, "flags": ["a", ["b"]]})
    assert data == b"d7:command5:offer5:flagsl1:al1:bee1:ni-3e3:sdp3:v=0e"
    assert decode(data) == {b"command": b"offer", b"flags": [b"a", [b"b"]], b"n": -3,
                            b"sdp": b"v=0"}  # fmt: skip


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"i12",
        b"ie",
        b"i1-2e",
        b"5:abc",
        b"l",
        b"d1:ae",
        b"di1ei2ee",
        b"x",
        b"1:ab",
        b"l" * 100 + b"e" * 100,
        b"99999999999:a",
    ],
)
def test_bad_bencode_raises_bencode_error(data: bytes) -> None:
    with pytest.raises(BencodeError):
        decode(data)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200))
def test_arbitrary_bytes_raise_nothing_but_bencode_error(data: bytes) -> None:
    with contextlib.suppress(BencodeError):
        decode(data)


def sdp(port: int) -> bytes:
    return (
        f"v=0\r\no=- 1 1 IN IP4 127.0.0.99\r\ns=-\r\nc=IN IP4 127.0.0.99\r\nt=0 0\r\n"
        f"m=audio {port} RTP/AVP 0\r\na=candidate:1 1 UDP 1 127.0.0.99 {port} typ host\r\n"
        "a=sendrecv\r\n"
    ).encode()


@pytest.fixture
async def rtpengine(tmp_path: Path) -> AsyncIterator[RtpEngine]:
    with rtpengine_daemon(tmp_path) as port:
        client = await RtpEngine(("127.0.0.1", port), timeout=0.3, retries=10).open()
        try:
            assert await client.ping()
            yield client
        finally:
            client.close()


async def test_calls_through_rtpengine_carry_audio_both_ways(rtpengine: RtpEngine) -> None:
    alice, bob, mallory = RtpEndpoint("127.0.0.31"), RtpEndpoint("127.0.0.32"), None
    try:
        to_bob = await rtpengine.offer("rc1", "atag", sdp(alice.port), "127.0.0.31", "", 0)
        to_alice = await rtpengine.answer("rc1", "atag", "btag", sdp(bob.port), "127.0.0.32", "", 0)
        assert b"a=candidate" not in to_bob
        (bob_sees,) = parse(to_bob).media
        (alice_sees,) = parse(to_alice).media
        assert bob_sees.address == alice_sees.address == "127.0.0.1"
        # 4 s: rtpengine commits to a source 3 s after the offer/answer.
        await asyncio.gather(
            alice.stream((alice_sees.address, alice_sees.port), b"alice", 200),
            bob.stream((bob_sees.address, bob_sees.port), b"bob", 200),
        )
        # A stranger sprays every port, RTP and RTCP, once the phones have been learnt:
        # nothing gets in, and nothing of the phones' is turned towards her.
        mallory = RtpEndpoint("127.0.0.33")
        await asyncio.gather(
            *(
                mallory.stream((seen.address, seen.port + offset), b"mallory", 25)
                for seen in (alice_sees, bob_sees)
                for offset in (0, 1)
            ),
            alice.stream((alice_sees.address, alice_sees.port), b"alice", 25),
            bob.stream((bob_sees.address, bob_sees.port), b"bob", 25),
        )
        await asyncio.sleep(0.2)
        assert alice.from_marker(b"bob") >= 200 and bob.from_marker(b"alice") >= 200
        assert alice.from_marker(b"mallory") == 0 and bob.from_marker(b"mallory") == 0
        # (These phones send no RTCP: an RTCP port nobody claimed may answer her with her own
        # packets, the "any source once the window is over" rule; nothing of theirs.)
        assert not any(packet[12:].startswith((b"alice", b"bob")) for packet in mallory.received)
        stats = await rtpengine.query("rc1")
        assert stats.get(b"result") == b"ok"
        await rtpengine.delete("rc1")
        with pytest.raises(RtpEngineError):
            await rtpengine.query("rc1")
    finally:
        for endpoint in (alice, bob, mallory):
            if endpoint is not None:
                endpoint.close()


async def test_silence_from_rtpengine_is_an_error_not_a_hang() -> None:
    engine = await RtpEngine(("127.0.0.1", free_port()), timeout=0.05, retries=2).open()
    try:
        with pytest.raises(RtpEngineError):
            await engine.offer("c", "t", sdp(4000), "127.0.0.31", "", 0)
        assert engine._pending == {}
    finally:
        engine.close()
