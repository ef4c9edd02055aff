"""When the proxy anchors a call, and what becomes of hostile or unlucky SDP: the anchor
with the real embedded relay on loopback, messages parsed from text."""

from __future__ import annotations

import random
import time

import pytest

from core.events import EventBus
from core.media.anchor import MediaAnchor, _media_at, wants_anchor
from core.media.relay import EmbeddedRelay
from core.media.sdp import parse
from core.net.flow import Flow
from core.net.identity import ServerIdentity
from core.proxy.calls import Call
from core.registrar.location import LocationService
from core.settings import ListenAddress, MediaSettings, RegistrarSettings
from core.sip.message import Request, Response
from core.sip.parser import parse_message
from core.sip.uri import SipUri, parse_uri

CALLER = Flow("udp", ("203.0.113.7", 5060), ("127.0.0.1", 5060))
CALLEE = Flow("udp", ("198.51.100.9", 5060), ("127.0.0.1", 5060))


def sdp(address: str, port: int = 4000) -> str:
    return (
        f"v=0\r\no=- 1 1 IN IP4 {address}\r\ns=-\r\nc=IN IP4 {address}\r\nt=0 0\r\n"
        f"m=audio {port} RTP/AVP 0\r\n"
    )


def invite(body: str, contact_host: str = "203.0.113.7") -> Request:
    text = (
        "INVITE sip:bob@pbx.test SIP/2.0\r\n"
        "Via: SIP/2.0/UDP 203.0.113.7:5060;branch=z9hG4bK1\r\n"
        "From: <sip:alice@pbx.test>;tag=a1\r\nTo: <sip:bob@pbx.test>\r\n"
        "Call-ID: call-1\r\nCSeq: 1 INVITE\r\n"
        f"Contact: <sip:alice@{contact_host}:5060>\r\n"
        f"Content-Type: application/sdp\r\nContent-Length: {len(body)}\r\n\r\n{body}"
    )
    message = parse_message(text.encode())
    assert isinstance(message, Request)
    return message


def answer(body: str) -> Response:
    text = (
        "SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP 203.0.113.7:5060;branch=z9hG4bK1\r\n"
        "From: <sip:alice@pbx.test>;tag=a1\r\nTo: <sip:bob@pbx.test>;tag=b1\r\n"
        "Call-ID: call-1\r\nCSeq: 1 INVITE\r\n"
        f"Content-Type: application/sdp\r\nContent-Length: {len(body)}\r\n\r\n{body}"
    )
    message = parse_message(text.encode())
    assert isinstance(message, Response)
    return message


class Cdrs:
    def __init__(self) -> None:
        self.finished: list[str] = []

    def call_finished(self, call: Call) -> None:
        self.finished.append(call.call_id)


def make_anchor(**media: object) -> tuple[MediaAnchor, EmbeddedRelay, Cdrs]:
    settings = MediaSettings(port_min=41500, port_max=41600, **media)  # type: ignore[arg-type]
    relay = EmbeddedRelay(settings, "127.0.0.1", time.time)
    identity = ServerIdentity("pbx.test", [ListenAddress("udp", "127.0.0.1", 5060)])
    location = LocationService(RegistrarSettings(), EventBus(100, 100))
    cdrs = Cdrs()
    return MediaAnchor(settings, relay, location, identity, time.time, cdrs), relay, cdrs


def bob_uri(host: str) -> SipUri:
    uri = parse_uri(f"sip:bob@{host}:5060")
    assert isinstance(uri, SipUri)
    return uri


@pytest.mark.parametrize(
    ("relay", "contact", "sdp_address", "target", "expected"),
    [
        ("auto", "203.0.113.7", "203.0.113.7", "198.51.100.9", False),  # nobody NATed
        ("auto", "192.168.1.5", "203.0.113.7", "198.51.100.9", True),  # caller's Contact
        ("auto", "203.0.113.7", "192.168.1.5", "198.51.100.9", True),  # caller's SDP
        ("auto", "203.0.113.7", "203.0.113.7", "10.0.0.9", True),  # callee's contact
        ("never", "192.168.1.5", "192.168.1.5", "10.0.0.9", False),
        ("always", "203.0.113.7", "203.0.113.7", "198.51.100.9", True),
    ],
)
def test_when_a_call_is_anchored(
    relay: str, contact: str, sdp_address: str, target: str, expected: bool
) -> None:
    settings = MediaSettings(relay=relay)
    location = LocationService(RegistrarSettings(), EventBus(100, 100))
    request = invite(sdp(sdp_address), contact)
    decided = wants_anchor(settings, location, request, CALLER, bob_uri(target), CALLEE, 0.0)
    assert decided is expected


async def test_offer_and_answer_are_rewritten_and_the_call_end_frees_the_ports() -> None:
    anchor, relay, cdrs = make_anchor(relay="always")
    request = invite(sdp("192.168.1.5"))
    offer = anchor.request_body(request, CALLER, CALLEE, bob_uri("198.51.100.9"))
    assert parse(offer).media[0].address == "127.0.0.1"
    body = anchor.response_body(answer(sdp("10.0.0.9")), CALLEE, CALLER)
    assert parse(body).media[0].address == "127.0.0.1"
    # The 200 again (its ACK was lost): rewritten the same, the relay left as it was.
    session = relay.sessions["call-1"]
    windows = [port.latch.open_until for stream in session.streams if stream
               for pair in stream.ports for port in pair]  # fmt: skip
    assert anchor.response_body(answer(sdp("10.0.0.9")), CALLEE, CALLER) == body
    assert windows == [port.latch.open_until for stream in session.streams if stream
                       for pair in stream.ports for port in pair]  # fmt: skip
    assert relay.ports.free == relay.ports.capacity - 2
    # BYE, CANCEL, a final failure, a media timeout: every end reaches the call table's sink.
    call = Call("call-1", "alice", "bob", CALLER.remote, 0.0)
    anchor.call_finished(call)
    assert relay.sessions == {} and relay.ports.free == relay.ports.capacity
    assert cdrs.finished == ["call-1"]  # the CDR writer behind the anchor still hears of it


@pytest.mark.parametrize(
    "body",
    [
        "v=0\r\nm=audio 99999 RTP/AVP 0\r\n",  # a port out of range
        "not sdp at all",
        "v=0\r\n" + "m=audio 4000 RTP/AVP 0\r\n" * 40,  # more streams than we relay
        "v=0\r\nc=IN IP4\r\nm=audio 4000 RTP/AVP 0\r\n",
    ],
)
async def test_sdp_the_anchor_cannot_read_goes_on_untouched(body: str) -> None:
    anchor, relay, _cdrs = make_anchor(relay="always")
    request = invite(body)
    assert anchor.request_body(request, CALLER, CALLEE, bob_uri("198.51.100.9")) == request.body
    assert anchor.refused == 1 and relay.sessions == {}


async def test_a_full_relay_lets_the_call_through_unanchored() -> None:
    anchor, relay, _cdrs = make_anchor(relay="always", max_sessions=1)
    first = invite(sdp("192.168.1.5"))
    anchor.request_body(first, CALLER, CALLEE, bob_uri("198.51.100.9"))
    second = invite(sdp("192.168.1.6"))
    second.headers.set("Call-ID", "call-2")
    assert anchor.request_body(second, CALLER, CALLEE, bob_uri("198.51.100.9")) == second.body
    assert list(relay.sessions) == ["call-1"]
    anchor.close()
    assert relay.ports.free == relay.ports.capacity


NATED = "192.168.1.5"
HOME = CALLER.remote[0]


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (sdp(HOME), False),
        (sdp(NATED), True),
        (sdp("0.0.0.0"), False),  # on hold: nothing to latch
        # The session c= is home, a media c= is not: the media-level one decides.
        (sdp(HOME) + f"c=IN IP4 {NATED}\r\n", True),
        (sdp(HOME) + f"c=IN IP4 {HOME}/127\r\n", False),
        # No session-level c=: a media section without its own has no address at all.
        (f"v=0\r\no=- 1 1 IN IP4 {HOME}\r\ns=-\r\nt=0 0\r\nm=audio 4000 RTP/AVP 0\r\n", True),
        (f"v=0\r\ns=-\r\nt=0 0\r\nm=audio 4000 RTP/AVP 0\r\nc=IN IP4 {HOME}\r\n", False),
        # Lone CRs end lines too; bare LFs as well.
        (sdp(NATED).replace("\r\n", "\r"), True),
        (sdp(NATED).replace("\r\n", "\n"), True),
        (sdp(HOME).replace("\r\n", "\n"), False),
        (f"v=0\r\nc=IN IP4 {HOME}\r\nm=audio 4000 RTP/AVP 0\rc=IN IP4 {NATED}\r\n", True),
        # Unreadable SDP is never anchored, whatever its addresses say.
        (f"v=0\r\nc=IN IP4 {NATED} extra\r\nm=audio 4000 RTP/AVP 0\r\n", False),
        (f"c=IN IP4 {NATED}\r\nm=audio 4000 RTP/AVP 0\r\n", False),
    ],
)
def test_the_caller_sdp_decides_anchoring_by_its_addresses(body: str, expected: bool) -> None:
    """Media from anywhere but the INVITE's source address (a hold address aside) means the
    caller is behind NAT; the decision skips the full SDP parse when the offer's own lines
    already show it at home, and must agree with the parse in every shape."""
    settings = MediaSettings(relay="auto")
    location = LocationService(RegistrarSettings(), EventBus(100, 100))
    request = invite(body, HOME)
    decided = wants_anchor(
        settings, location, request, CALLER, bob_uri("198.51.100.9"), CALLEE, 0.0
    )
    assert decided is expected


_HOLD = (b"0.0.0.0", b"::")


def _media_at_by_lines(body: bytes, ip: str) -> bool:
    """`_media_at` as first written, walking every line: the reference it must agree with."""
    if b"\r" in body.replace(b"\r\n", b""):
        return False
    home = ip.encode("ascii", "replace")
    session_address = False
    in_media = False
    for line in body.replace(b"\r\n", b"\n").split(b"\n"):
        if line.startswith(b"m="):
            in_media = True
        elif line.startswith(b"c="):
            fields = line[2:].split(b" ")
            if len(fields) != 3:
                return False
            address = fields[2].split(b"/", 1)[0]
            if address != home and address not in _HOLD:
                return False
            if not in_media:
                session_address = True
    return session_address


@pytest.mark.parametrize(
    "body",
    [
        sdp("203.0.113.7").encode(),
        sdp("198.51.100.1").encode(),
        sdp("0.0.0.0").encode(),
        b"",
        b"c=IN IP4 203.0.113.7",  # first line, no newline at all
        b"c=IN IP4 203.0.113.7\n",
        b"v=0\nc=IN IP4 203.0.113.7/127\nm=audio 1 RTP/AVP 0\nc=IN IP4 203.0.113.7\n",
        b"v=0\nm=audio 1 RTP/AVP 0\nc=IN IP4 203.0.113.7\n",  # media-level c= only
        b"v=0\r\nc=IN IP4 203.0.113.7\r\nm=audio 1 RTP/AVP 0\r\nc=IN IP4 192.0.2.9\r\n",
        b"v=0\r\nc=IN IP4  203.0.113.7\r\n",  # two spaces: four fields
        b"v=0\r\nc=IN IP6 ::\r\nm=audio 1 RTP/AVP 0\r\n",
        b"v=0\rc=IN IP4 192.0.2.9\r\n",  # a lone CR
        b"v=0\r\r\nc=IN IP4 203.0.113.7\r\n",
        b"v=0\nxc=IN IP4 192.0.2.9\nc=IN IP4 203.0.113.7\n",  # not a c= line
        b"v=0\nm=audio\nm=video\nc=IN IP4 203.0.113.7\nc=IN IP4 203.0.113.7",
        b"c=IN IP4 203.0.113.7\n\nc=\n",
        b"\nc=IN IP4 203.0.113.7\n",
        "c=IN IP4 203.0.113.7\nc=IN IP4 é\n".encode(),
    ],
)
def test_the_media_address_scan_agrees_with_walking_every_line(body: bytes) -> None:
    for ip in ("203.0.113.7", "192.0.2.9", "::1"):
        assert _media_at(body, ip) == _media_at_by_lines(body, ip)


def test_the_media_address_scan_agrees_on_random_bodies() -> None:
    pieces = [
        *(b"c=IN IP4 203.0.113.7", b"c=IN IP4 192.0.2.9", b"c=IN IP4 0.0.0.0/2", b"m=audio"),
        *(b"c=", b"v=0", b"c=IN IP4 203.0.113.7 x", b"\r", b"\n", b"\r\n", b"c", b"m="),
    ]
    chooser = random.Random(21)
    for _ in range(3000):
        body = b"".join(chooser.choice(pieces) for _ in range(chooser.randrange(8)))
        assert _media_at(body, "203.0.113.7") == _media_at_by_lines(body, "203.0.113.7"), body


def test_the_media_address_scan_agrees_on_random_bodies_with_any_bytes() -> None:
    """The scan reads the body as Latin-1 text: bytes outside ASCII, a "?" standing in for a
    non-ASCII address, CRs and tabs must give the answer the line walk gives on bytes."""
    pieces = [
        *(b"c=IN IP4 203.0.113.7", b"c=IN IP4 ?", b"c=IN IP4 \xe9", b"c=IN IP6 ::", b" "),
        *(b"\xff", b"\xc3\xa9", b"/", b"\t", b"\r", b"\n", b"\r\n", b"c=", b"m=", b"\x00"),
    ]
    chooser = random.Random(1918)
    for _ in range(4000):
        body = b"".join(chooser.choice(pieces) for _ in range(chooser.randrange(10)))
        for ip in ("203.0.113.7", "é", "?", "::"):
            assert _media_at(body, ip) == _media_at_by_lines(body, ip), (body, ip)


def _bodiless(method: str, from_tag: str, to_tag: str, cseq: int) -> Request:
    text = (
        f"{method} sip:bob@198.51.100.9:5060 SIP/2.0\r\n"
        "Via: SIP/2.0/UDP 203.0.113.7:5060;branch=z9hG4bK9\r\n"
        f"From: <sip:alice@pbx.test>;tag={from_tag}\r\nTo: <sip:bob@pbx.test>;tag={to_tag}\r\n"
        f"Call-ID: call-1\r\nCSeq: {cseq} {method}\r\nContent-Length: 0\r\n\r\n"
    )
    message = parse_message(text.encode())
    assert isinstance(message, Request)
    return message


@pytest.mark.parametrize("method", ["ACK", "BYE", "UPDATE", "INFO", "PRACK", "REFER"])
async def test_a_bodiless_request_other_than_invite_leaves_the_anchor_as_it_was(
    method: str,
) -> None:
    """The forwarder does not ask the anchor about a bodiless request other than an INVITE
    (core/proxy/forwarder.py): asked, the anchor changes nothing and answers the empty body,
    with the call anchored and its offer outstanding, settled or failed, from either side."""
    anchor, relay, _cdrs = make_anchor(relay="always")
    anchor.request_body(invite(sdp("192.168.1.5")), CALLER, CALLEE, bob_uri("198.51.100.9"))
    anchored = anchor.calls["call-1"]
    for step in range(3):
        if step == 1:
            anchor.response_body(answer(sdp("10.0.0.9")), CALLEE, CALLER)
        if step == 2:
            anchored.offered_late(5)
        before = repr(anchored)
        sessions = repr(relay.sessions["call-1"].streams)
        for from_tag, to_tag in (("a1", "b1"), ("b1", "a1")):
            request = _bodiless(method, from_tag, to_tag, 4 + step)
            assert anchor.request_body(request, CALLER, CALLEE, None) == b""
            assert repr(anchored) == before
            assert repr(relay.sessions["call-1"].streams) == sessions
    anchor.close()
