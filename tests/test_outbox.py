"""The outbox's own answers: the bytes written straight from the request are the ones
make_response would serialise, with the same deterministic To-tag and reply cache."""

from __future__ import annotations

import hashlib
import random
import zlib

import pytest

from core.events import EventBus
from core.net.flow import Flow
from core.net.identity import ServerIdentity
from core.outbox import Outbox, may_be_local_tag
from core.settings import ListenAddress
from core.sip import Request, parse_message
from core.sip.message import keyed_lines, make_response

SECRET = b"s" * 40
FLOW = Flow("udp", ("198.51.100.7", 5070), ("192.0.2.1", 5060))
OPTIONS = (
    b"OPTIONS sip:pbx.test SIP/2.0\r\n"
    b"Via: SIP/2.0/UDP 198.51.100.7:5070;branch=z9hG4bK-77;rport\r\n"
    b"f: <sip:100@pbx.test>;tag=ab\r\nt: <sip:pbx.test>\r\ni: c1@x\r\nCSeq: 3 OPTIONS\r\n"
    b"Max-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
)


def request(data: bytes = OPTIONS) -> Request:
    message = parse_message(data)
    assert isinstance(message, Request)
    return message


@pytest.fixture
def sent() -> list[tuple[bytes, Flow]]:
    return []


@pytest.fixture
def outbox(sent: list[tuple[bytes, Flow]]) -> Outbox:
    identity = ServerIdentity("pbx.test", [ListenAddress("udp", "0.0.0.0", 5060)])

    def send(data: bytes, flow: Flow) -> bool:
        sent.append((data, flow))
        return True

    return Outbox(
        identity=identity, bus=EventBus(), send=send, clock=lambda: 0.0, tag_secret=SECRET
    )


def test_local_tag_is_the_seeded_crc_of_call_id_and_from_tag(outbox: Outbox) -> None:
    seed = int.from_bytes(hashlib.blake2b(b"pbxtui to-tag", key=SECRET).digest()[:4], "big")
    expected = f"pbx{zlib.crc32(b'c1@x|ab', seed)}"
    assert outbox.local_tag(request()) == expected
    assert outbox.local_tag(request()) == expected  # nothing kept between calls


@pytest.mark.parametrize("seed", range(5))
def test_every_local_tag_may_be_ours_and_a_callees_may_not(outbox: Outbox, seed: int) -> None:
    """The route compares an ACK's To-tag with ours only when `may_be_local_tag` says it
    could be one: it must say so of every tag `local_tag` makes (else the ACK of our own
    407 would be relayed), whatever the Call-ID and From (broken ones included)."""
    rng = random.Random(seed)
    for _ in range(200):
        call_id = "".join(rng.choice("abc123@.-") for _ in range(rng.randint(1, 40)))
        from_line = rng.choice(
            [f"f: <sip:100@pbx.test>;tag={rng.getrandbits(40):x}", "f: <sip:100@pbx.test",
             "f: <sip:100@pbx.test>", f"From: \"A\" <sip:a@b>;tag={rng.random()}"]
        )  # fmt: skip
        data = OPTIONS.replace(b"i: c1@x", f"i: {call_id}".encode()).replace(
            b"f: <sip:100@pbx.test>;tag=ab", from_line.encode()
        )
        assert may_be_local_tag(outbox.local_tag(request(data)))
    for tag in (None, "", "a8f3c2", "1928374", "pb", "PBX123", "pbx12345678901", "xpbx1"):
        assert not may_be_local_tag(tag)


@pytest.mark.parametrize(
    ("status", "extra"),
    [(200, [("Allow", "OPTIONS"), ("Accept", "application/sdp")]), (484, None),
     (405, [("Allow", "OPTIONS, REGISTER")]), (403, [("l", "3")]), (100, None)],
)  # fmt: skip
def test_reply_sends_what_make_response_serialises(
    outbox: Outbox,
    sent: list[tuple[bytes, Flow]],
    status: int,
    extra: list[tuple[str, str]] | None,
) -> None:
    asked = request()
    outbox.reply(asked, FLOW, status, extra=extra)
    keyed = keyed_lines([("Server", "pbxtui"), *(extra or [])])
    tag = outbox.local_tag(asked)
    expected = make_response(asked, status, to_tag=tag, keyed=keyed).to_bytes()
    assert sent == [(expected, FLOW)]
    # A retransmission gets the same bytes from the cache (final answers only).
    assert outbox.resend_cached_reply(request(), FLOW, 1.0) is (status >= 200)


def test_reply_in_dialog_keeps_the_to_tag_and_never_answers_an_ack(
    outbox: Outbox, sent: list[tuple[bytes, Flow]]
) -> None:
    in_dialog = request(OPTIONS.replace(b"t: <sip:pbx.test>", b"t: <sip:pbx.test>;tag=9"))
    outbox.reply(in_dialog, FLOW, 481)
    assert b"\r\nTo: <sip:pbx.test>;tag=9\r\n" in sent[0][0]
    outbox.reply(request(OPTIONS.replace(b"OPTIONS", b"ACK")), FLOW, 400)
    assert len(sent) == 1


def test_reply_refuses_extra_headers_that_would_not_serialise(outbox: Outbox) -> None:
    with pytest.raises(ValueError, match="one line"):
        outbox.reply(request(), FLOW, 200, extra=[("X", "a\r\nInjected: 1")])
