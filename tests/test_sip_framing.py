"""Cutting a TCP stream into messages (RFC 3261 §18.3) and keep-alives (RFC 5626 §4.4.1)."""

from __future__ import annotations

from pathlib import Path

import pytest

from core.sip import KEEPALIVE, KeepAlive, SipParseError, StreamFramer, parse_message

VECTORS = Path(__file__).parent / "vectors"


def message(body: bytes = b"", *, length_line: bytes | None = None, call_id: bytes = b"1") -> bytes:
    length = length_line if length_line is not None else b"Content-Length: %d\r\n" % len(body)
    return (
        b"MESSAGE sip:bob@example.com SIP/2.0\r\n"
        b"Via: SIP/2.0/TCP 192.0.2.1:50601;branch=z9hG4bK" + call_id + b"\r\n"
        b"Call-ID: " + call_id + b"@192.0.2.1\r\n" + length + b"\r\n" + body
    )


def test_whole_messages_and_keepalives_in_one_feed() -> None:
    first, second = message(b"hello", call_id=b"a"), message(call_id=b"b")
    framer = StreamFramer()
    assert framer.feed(b"\r\n\r\n" + first + b"\r\n\r\n" + second) == [
        KEEPALIVE,
        first,
        KEEPALIVE,
        second,
    ]
    assert framer.pending == 0
    assert isinstance(KEEPALIVE, KeepAlive)


def test_byte_at_a_time() -> None:
    stream = message(b"hello") + b"\r\n\r\n" + message(b"again\r\n\r\nwith a blank line in it")
    framer = StreamFramer()
    out: list[bytes | KeepAlive] = []
    for index in range(len(stream)):
        out.extend(framer.feed(stream[index : index + 1]))
    assert out == StreamFramer().feed(stream)
    assert len(out) == 3 and framer.pending == 0
    assert parse_message(out[2], stream=True).body == b"again\r\n\r\nwith a blank line in it"  # type: ignore[arg-type]


def test_lone_crlf_pong_and_partial_ping() -> None:
    framer = StreamFramer()
    assert framer.feed(b"\r\n") == [] and framer.pending == 2  # could be half a ping
    assert framer.feed(b"\r") == [] and framer.pending == 3
    assert framer.feed(b"\n") == [KEEPALIVE] and framer.pending == 0
    assert framer.feed(b"\r\n" + message()) == [message()]  # a pong before a message
    assert framer.feed(b"\n\n" + message()) == [message()]  # stray LFs are ignored too


def test_bursts_of_pings_and_pongs() -> None:
    """30,000 pings in one feed are each answered, in linear time, with nothing left behind."""
    framer = StreamFramer(max_buffer=131_072)
    assert framer.feed(b"\r\n\r\n" * 30_000) == [KEEPALIVE] * 30_000
    burst = b"\r\n\r\n" * 20_000 + b"\r\n" + message() + b"\n" * 40_000
    assert framer.feed(burst) == [KEEPALIVE] * 20_000 + [message()]
    assert framer.pending == 0


def test_body_arrives_later() -> None:
    full = message(b"0123456789")
    framer = StreamFramer()
    assert framer.feed(full[:-4]) == []
    assert framer.feed(full[-4:-1]) == []
    assert framer.feed(full[-1:] + b"\r\n\r\n") == [full, KEEPALIVE]


def test_compact_folded_and_padded_content_length() -> None:
    for line in (b"l: 3\r\n", b"Content-Length:\r\n 3\r\n", b"content-length  :   003\r\n"):
        data = message(b"abc", length_line=line)
        assert StreamFramer().feed(data + message()) == [data, message()]


def test_bare_lf_head() -> None:
    data = message(b"hi").replace(b"\r\n", b"\n")
    framer = StreamFramer()
    assert framer.feed(data[:10]) == []
    assert framer.feed(data[10:]) == [data]
    assert parse_message(data, stream=True).body == b"hi"


@pytest.mark.parametrize(
    ("length_line", "reason"),
    [
        (b"", "Missing Content-Length"),
        (b"Content-Length: ten\r\n", "Bad Content-Length"),
        (b"Content-Length: -1\r\n", "Bad Content-Length"),
        (b"Content-Length: \xb2\r\n", "Bad Content-Length"),  # superscript two in Latin-1
        (b"Content-Length: 1\r\nl: 2\r\n", "Conflicting Content-Length"),
    ],
)
def test_unframeable_heads_are_400(length_line: bytes, reason: str) -> None:
    with pytest.raises(SipParseError) as caught:
        StreamFramer().feed(message(length_line=length_line))
    assert (caught.value.status, caught.value.reason) == (400, reason)


def test_oversized_inputs_are_413() -> None:
    with pytest.raises(SipParseError) as caught:
        StreamFramer(max_message=1_000).feed(message(length_line=b"Content-Length: 5000\r\n"))
    assert caught.value.status == 413
    never_ending = StreamFramer(max_message=1_000, max_buffer=10_000)
    with pytest.raises(SipParseError) as caught:
        for _ in range(20):
            never_ending.feed(b"X-Header: " + b"a" * 90 + b"\r\n")
    assert caught.value.status == 413
    with pytest.raises(SipParseError) as caught:
        StreamFramer(max_buffer=100).feed(b"a" * 101)
    assert (caught.value.status, caught.value.reason) == (413, "Message Too Large")


def test_slow_head_is_not_rescanned() -> None:
    """A head dripped a byte at a time costs linear work: each feed searches only new bytes."""
    framer = StreamFramer(max_message=70_000, max_buffer=140_000)
    head = b"OPTIONS sip:a@b SIP/2.0\r\nX-Pad: " + b"a" * 60_000
    for index in range(len(head)):
        assert framer.feed(head[index : index + 1]) == []
        assert framer._searched == framer.pending  # everything fed so far has been searched
    assert framer.feed(b"\r\nContent-Length: 0\r\n\r\n") == [
        head + b"\r\nContent-Length: 0\r\n\r\n"
    ]


@pytest.mark.parametrize("path", sorted(VECTORS.glob("real/*.sip")), ids=lambda path: path.stem)
def test_real_vectors_frame_after_serialisation(path: Path) -> None:
    wire = parse_message(path.read_bytes()).to_bytes()
    framer = StreamFramer()
    halfway = len(wire) // 2
    assert framer.feed(wire[:halfway]) == []
    assert framer.feed(wire[halfway:] + wire) == [wire, wire]
