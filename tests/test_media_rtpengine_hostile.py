"""A broken or hostile rtpengine: a loopback UDP server answering the ng protocol with
garbage, huge strings, deep nesting, other cookies, errors, or nothing at all. The client
raises `RtpEngineError` alone, within its bounded wait; a call goes on unanchored with a
warning in the feed; and a `query` answer of any shape reads as figures or as nothing."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from support.ports import free_port
from test_media_calls import call_between, hang_up, start

from core.events import ServerEvent
from core.media.bencode import Value, encode
from core.media.gate import RtpEngineSessions
from core.media.ngstats import media_stats
from core.media.rtpengine import MAX_SDP, RtpEngine, RtpEngineError

GOOD_SDP = (
    b"v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
    b"m=audio 44000 RTP/AVP 0\r\n"
)

Behaviour = Callable[[bytes, bytes], list[bytes]]  # (cookie, request) -> datagrams to send


def replying(payload: bytes) -> Behaviour:
    return lambda cookie, _request: [cookie + b" " + payload]


BEHAVIOURS: dict[str, Behaviour] = {
    "garbage": replying(b"\xff\x00 not bencode at all"),
    "truncated": replying(b"d6:result2:ok3:sdp50:v=0"),
    "deep nesting": replying(b"l" * 5_000 + b"e" * 5_000),
    "deep dictionaries": replying(b"d1:a" * 2_000 + b"i1e" + b"e" * 2_000),
    "huge string, not SDP": replying(b"d6:result2:ok3:sdp60000:" + b"x" * 60_000 + b"e"),
    "huge SDP": replying(encode({"result": "ok", "sdp": GOOD_SDP + b"a=x\r\n" * (MAX_SDP // 4)})),
    "huge length claimed": replying(b"d3:sdp99999999999:v=0e"),
    "not a dictionary": replying(b"i42e"),
    "SDP of the wrong type": replying(b"d6:result2:ok3:sdpi7ee"),
    "no SDP": replying(b"d6:result2:oke"),
    "error": replying(encode({"result": "error", "error-reason": "x" * 10_000})),
    "error without reason": replying(b"d6:result5:errore"),
    "no space": lambda cookie, _request: [cookie],
    "wrong cookie": lambda cookie, _request: [b"0123456789abcdef " + encode({"result": "ok"})],
    "silence": lambda _cookie, _request: [],
    "a flood of replies": lambda cookie, _request: [cookie + b" \x00"] * 50,
    "integer overflow": replying(b"d6:resulti" + b"9" * 30 + b"ee"),
}


class HostileRtpEngine(asyncio.DatagramProtocol):
    """Answers every ng request as `behaviour` says, and counts what it got."""

    def __init__(self, behaviour: Behaviour) -> None:
        self.behaviour = behaviour
        self.requests = 0
        self.replies = 0
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.requests += 1
        cookie, _space, request = data.partition(b" ")
        assert self.transport is not None
        for datagram in self.behaviour(cookie, request):
            self.transport.sendto(datagram, addr)
            self.replies += 1


async def serve(behaviour: Behaviour) -> tuple[HostileRtpEngine, asyncio.DatagramTransport, int]:
    port = free_port()
    transport, server = await asyncio.get_running_loop().create_datagram_endpoint(
        lambda: HostileRtpEngine(behaviour), local_addr=("127.0.0.1", port)
    )
    return server, transport, port


@pytest.mark.parametrize("name", list(BEHAVIOURS))
async def test_every_broken_answer_is_an_rtpengine_error_within_the_bounded_wait(
    name: str,
) -> None:
    server, transport, port = await serve(BEHAVIOURS[name])
    engine = await RtpEngine(("127.0.0.1", port), timeout=0.1, retries=2).open()
    try:
        started = time.monotonic()
        for command in (
            engine.offer("c", "a", GOOD_SDP, "127.0.0.31", "", 0),
            engine.answer("c", "a", "b", GOOD_SDP, "127.0.0.32", "", 0),
        ):
            with pytest.raises(RtpEngineError):
                await command
        with contextlib.suppress(
            RtpEngineError
        ):  # a dictionary without SDP is a fine `query` answer
            assert isinstance(await engine.query("c"), dict)
        assert time.monotonic() - started < 3 * 0.1 * 2 + 1.0
        assert engine._pending == {}
        assert server.requests >= 3
        assert server.replies >= 3 or name == "silence"  # it did answer, and badly
    finally:
        engine.close()
        transport.close()


@pytest.fixture
async def hostile_pbx(tmp_path: Path, request: pytest.FixtureRequest) -> AsyncIterator[object]:
    _server, transport, port = await serve(BEHAVIOURS[request.param])
    pbx = await start(tmp_path, engine="rtpengine", rtpengine=f"127.0.0.1:{port}")
    try:
        yield pbx
    finally:
        await pbx.stop()
        transport.close()


@pytest.mark.parametrize("hostile_pbx", ["garbage", "huge string, not SDP", "silence"],
                         indirect=True)  # fmt: skip
async def test_a_call_goes_on_unanchored_with_a_warning_when_rtpengine_misbehaves(
    hostile_pbx: object,
) -> None:
    """The phones' own SDP goes through (their private address: a silent call, but a call),
    the admin sees why in the feed, once for the lot, and hanging up works as ever."""
    from core.pbx import Pbx

    assert isinstance(hostile_pbx, Pbx)
    pbx = hostile_pbx
    alice, bob = await call_between(pbx)
    try:
        assert alice.dialog is not None and bob.dialog is not None
        assert alice.dialog.media_address() == ("127.0.0.99", bob.rtp.port)
        assert bob.dialog.media_address() == ("127.0.0.99", alice.rtp.port)
        events, _cursor, _missed = pbx.bus.feed.read_since(0)
        warnings = [
            event
            for event in events
            if isinstance(event, ServerEvent) and event.message.startswith("rtpengine:")
        ]
        assert len(warnings) == 1 and warnings[0].level == "warning", warnings
        assert "unanchored" in warnings[0].message
        sessions = pbx.core.media
        assert isinstance(sessions, RtpEngineSessions) and sessions.refused == 2
        assert sessions.established == set()  # rtpengine never took the call: never polled
        await hang_up(alice, bob)
    finally:
        alice.close()
        bob.close()


values: st.SearchStrategy[Value] = st.recursive(
    st.integers(min_value=-(2**70), max_value=2**70)
    | st.binary(max_size=12)
    | st.sampled_from([b"send", b"recv", b"RTCP", b"tags", b"medias", b"streams", b"stats"]),
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(
            st.sampled_from(
                [
                    b"tags",
                    b"medias",
                    b"streams",
                    b"stats",
                    b"packets",
                    b"bytes",
                    b"errors",
                    b"index",
                    b"flags",
                    b"SSRC",
                    b"last packet",
                    b"a",
                    b"",
                    b"average MOS",
                    b"packet loss",
                    b"jitter",
                    b"1",
                    b"last signal",
                ]
            ),
            inner,
            max_size=5,
        )
    ),
    max_leaves=40,
)


@settings(max_examples=400, deadline=None)
@given(st.dictionaries(st.sampled_from([b"tags", b"SSRC", b"last signal", b"x"]), values,
                       max_size=3))  # fmt: skip
def test_any_query_answer_reads_as_figures_or_nothing(reply: dict[bytes, Value]) -> None:
    stats = media_stats(reply, "a", time.time())
    if stats is not None:
        assert stats.idle_seconds >= 0 and all(s.caller_packets >= 0 for s in stats.streams)


def test_a_query_answer_gives_per_leg_counters_hold_and_rtcp_figures() -> None:
    """The shape rtpengine's documentation gives, with its SSRC reports: the caller's
    streams count what she sent, the report on the callee's SSRC is what she hears."""

    def party(tag: str, ssrc: int, packets: int, flags: list[str]) -> dict[str, object]:
        stream = {"SSRC": ssrc, "flags": ["RTP"], "last packet": 1_000,
                  "stats": {"packets": packets, "bytes": packets * 172, "errors": 1}}  # fmt: skip
        rtcp = {"flags": ["RTCP"], "last packet": 990,
                "stats": {"packets": 3, "bytes": 96, "errors": 0}}  # fmt: skip
        return {"tag": tag, "medias": [{"index": 1, "flags": flags, "streams": [stream, rtcp]}]}

    reply = {
        "result": "ok",
        "last signal": 900,
        "tags": {
            "atag": party("atag", 11, 100, ["send", "recv"]),
            "btag": party("btag", 22, 90, ["send", "recv"]),
        },
        "SSRC": {"22": {"average MOS": {"MOS": 41, "packet loss": 3, "jitter": 12}}, "11": {}},
    }
    from core.media.bencode import decode

    stats = media_stats(decode(encode(reply)), "atag", 1_004.5)  # type: ignore[arg-type]
    assert stats is not None and stats.idle_seconds == 4.5
    [stream] = stats.streams
    assert (stream.caller_packets, stream.callee_packets) == (103, 93)
    assert (stream.caller_bytes, stream.callee_bytes) == (100 * 172 + 96, 90 * 172 + 96)
    assert stream.dropped == 2 and not stream.on_hold
    assert (stream.caller_loss, stream.caller_jitter_ms) == (3.0, 12.0)
    assert (stream.callee_loss, stream.callee_jitter_ms) == (None, None)
    reply["tags"]["btag"] = party("btag", 22, 90, ["send"])  # type: ignore[index]
    held = media_stats(decode(encode(reply)), "atag", 1_004.5)  # type: ignore[arg-type]
    assert held is not None and held.streams[0].on_hold
    assert media_stats({b"result": b"ok"}, "atag", 0.0) is None


async def test_polling_ends_only_calls_rtpengine_lost_and_ignores_its_garbage() -> None:
    """`expire` queries established calls; "Unknown call-id" for one of them is its media
    timeout, garbage or silence is not (the call stays, without fresh figures)."""
    answers = {b"gone": b"d12:error-reason15:Unknown call-id6:result5:errore",
               b"garbage": b"\xff", b"silent": b""}  # fmt: skip

    def behaviour(cookie: bytes, request: bytes) -> list[bytes]:
        for call_id, answer in answers.items():
            if b"7:call-id%d:%s" % (len(call_id), call_id) in request:
                return [cookie + b" " + answer] if answer else []
        return []

    _server, transport, port = await serve(behaviour)
    engine = await RtpEngine(("127.0.0.1", port), timeout=0.05, retries=2).open()
    sessions = RtpEngineSessions(engine)
    sessions.poll_seconds = 1.0  # every call in one tick (else each tick asks its share)
    try:
        from core.media.anchor import AnchoredCall

        for call_id in ("gone", "garbage", "silent", "ringing"):
            sessions.calls[call_id] = AnchoredCall(caller="a")
            sessions.established.add(call_id)
        ringing = {"ringing"}.__contains__
        assert sessions.expire(100.0, ringing) == []
        await asyncio.sleep(0.4)
        assert sessions.expire(101.0, ringing) == ["gone"]
        assert set(sessions.calls) == {"garbage", "silent", "ringing"}
        assert sessions.timed_out == 1 and sessions.figures == {}
    finally:
        sessions.close()
        transport.close()
