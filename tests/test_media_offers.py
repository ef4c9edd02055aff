"""Offer/answer as both media front ends track it — the embedded relay's anchor (inside the
proxy) and the rtpengine gate (in front of it) — with recording engines: the same messages
must make the same engine calls, in the same order, whichever engine runs."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from core.events import EventBus
from core.media.anchor import MediaAnchor
from core.media.gate import RtpEngineGate, RtpEngineSessions
from core.net.flow import Flow
from core.net.identity import ServerIdentity
from core.registrar.location import LocationService
from core.settings import ListenAddress, MediaSettings, RegistrarSettings
from core.sip.message import Request, Response
from core.sip.parser import parse_message

ALICE = Flow("udp", ("203.0.113.7", 5060), ("127.0.0.1", 5060))
BOB = Flow("udp", ("198.51.100.9", 5060), ("127.0.0.1", 5060))
SETTINGS = MediaSettings(relay="always")


def sdp(address: str, version: int = 1) -> bytes:
    return (
        f"v=0\r\no=- 1 {version} IN IP4 {address}\r\ns=-\r\nc=IN IP4 {address}\r\nt=0 0\r\n"
        "m=audio 4000 RTP/AVP 0\r\n"
    ).encode()


def request(method: str, cseq: int, from_tag: str, to_tag: str = "", body: bytes = b"") -> Request:
    to = f";tag={to_tag}" if to_tag else ""
    text = (
        f"{method} sip:peer@pbx.test SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP 203.0.113.7;branch=z9hG4bK{cseq}\r\n"
        f"From: <sip:x@pbx.test>;tag={from_tag}\r\nTo: <sip:y@pbx.test>{to}\r\n"
        f"Call-ID: call-1\r\nCSeq: {cseq} {method}\r\n"
        "Contact: <sip:x@203.0.113.7>\r\n"
        + ("Content-Type: application/sdp\r\n" if body else "")
        + f"Content-Length: {len(body)}\r\n\r\n"
    ).encode() + body
    message = parse_message(text)
    assert isinstance(message, Request)
    return message


def response(status: int, cseq: int, from_tag: str, to_tag: str, body: bytes = b"") -> Response:
    text = (
        f"SIP/2.0 {status} Whatever\r\nVia: SIP/2.0/UDP 203.0.113.7;branch=z9hG4bK{cseq}\r\n"
        f"From: <sip:x@pbx.test>;tag={from_tag}\r\nTo: <sip:y@pbx.test>;tag={to_tag}\r\n"
        f"Call-ID: call-1\r\nCSeq: {cseq} INVITE\r\n"
        + ("Content-Type: application/sdp\r\n" if body else "")
        + f"Content-Length: {len(body)}\r\n\r\n"
    ).encode() + body
    message = parse_message(text)
    assert isinstance(message, Response)
    return message


Call = tuple[str, str, str, bytes]  # (command, from-tag, to-tag, SDP)


class SyncEngine:
    """The embedded relay's interface, recording; the SDP comes back as it went in."""

    def __init__(self) -> None:
        self.calls: list[Call] = []

    def offer(self, call_id: str, from_tag: str, sdp: bytes, *_rest: Any) -> bytes:
        self.calls.append(("offer", from_tag, "", sdp))
        return sdp

    def answer(self, call_id: str, from_tag: str, to_tag: str, sdp: bytes, *_rest: Any) -> bytes:
        self.calls.append(("answer", from_tag, to_tag, sdp))
        return sdp

    def delete(self, call_id: str) -> None:
        self.calls.append(("delete", "", "", b""))


class AsyncEngine(SyncEngine):
    """rtpengine's client interface, recording."""

    async def offer(self, call_id: str, from_tag: str, sdp: bytes, *_rest: Any) -> bytes:  # type: ignore[override]
        return SyncEngine.offer(self, call_id, from_tag, sdp)

    async def answer(
        self, call_id: str, from_tag: str, to_tag: str, sdp: bytes, *_rest: Any
    ) -> bytes:  # type: ignore[override]
        return SyncEngine.answer(self, call_id, from_tag, to_tag, sdp)

    def close(self) -> None:
        pass


class Downstream:
    """The proxy behind the gate, or the wire behind the anchor: what went through."""

    def __init__(self) -> None:
        self.bodies: list[bytes] = []

    def route_to_user(self, request: Request, caller: str | None, flow: Flow, now: float) -> None:
        self.bodies.append(request.body)

    def in_dialog(self, request: Request, flow: Flow, now: float) -> None:
        self.bodies.append(request.body)

    def on_response(self, response: Response, flow: Flow, now: float) -> bool:
        self.bodies.append(response.body)
        return True


class FrontEnd:
    """One message API over either front end: `send` a message from a side, let it pass."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        location = LocationService(RegistrarSettings(), EventBus(100, 100))
        self.downstream = Downstream()
        if kind == "embedded":
            self.engine: SyncEngine = SyncEngine()
            identity = ServerIdentity("pbx.test", [ListenAddress("udp", "127.0.0.1", 5060)])
            self.anchor = MediaAnchor(SETTINGS, self.engine, location, identity, time.time)  # type: ignore[arg-type]
            self.calls = self.anchor.calls
        else:
            self.engine = AsyncEngine()
            self.sessions = RtpEngineSessions(self.engine)  # type: ignore[arg-type]
            self.gate = RtpEngineGate(SETTINGS, self.sessions, self.downstream, location,  # type: ignore[arg-type]
                                      time.time)  # fmt: skip
            self.calls = self.sessions.calls

    async def send(self, message: Request | Response, flow: Flow) -> None:
        other = BOB if flow is ALICE else ALICE
        if self.kind == "embedded":
            if isinstance(message, Request):
                body = self.anchor.request_body(message, flow, other, None)
            else:
                body = self.anchor.response_body(message, flow, other)
            self.downstream.bodies.append(body)
        elif isinstance(message, Response):
            self.gate.on_response(message, flow, time.time())
        elif message.to_tag is None:
            self.gate.route_to_user(message, "x", flow, time.time())
        else:
            self.gate.in_dialog(message, flow, time.time())
        for _ in range(5):
            await asyncio.sleep(0)

    def failed(self, message: Request) -> None:
        (self.anchor if self.kind == "embedded" else self.sessions).offer_failed(message)


@pytest.fixture(params=["embedded", "rtpengine"])
def front(request: pytest.FixtureRequest) -> FrontEnd:
    return FrontEnd(request.param)


async def establish(front: FrontEnd) -> None:
    await front.send(request("INVITE", 1, "a1", body=sdp("192.168.1.5")), ALICE)
    assert front.calls["call-1"].offerer == "a1"
    await front.send(response(183, 1, "a1", "b1", sdp("10.0.0.9")), BOB)
    assert front.calls["call-1"].offerer == "a1"  # an early answer: its 2xx is still to come
    await front.send(response(200, 1, "a1", "b1", sdp("10.0.0.9")), BOB)


async def test_a_final_answer_ends_the_offer_in_both_front_ends(front: FrontEnd) -> None:
    """RFC 3264 §4 / RFC 3261 §13.2.1: the 2xx's answer completes the exchange. The gate
    used to keep the offer open, and so took the next SDP from the caller's side — the offer
    in the 2xx to her SDP-less re-INVITE — for an answer."""
    await establish(front)
    assert front.calls["call-1"].offerer == ""
    # Alice re-INVITEs without SDP: Bob offers in the 2xx, Alice answers in the ACK.
    await front.send(request("INVITE", 2, "a1", "b1"), ALICE)
    await front.send(response(200, 2, "a1", "b1", sdp("10.0.0.10", 2)), BOB)
    assert front.calls["call-1"].offerer == "b1"
    await front.send(request("ACK", 2, "a1", "b1", sdp("192.168.1.6", 2)), ALICE)
    assert front.calls["call-1"].offerer == ""
    assert front.engine.calls == [
        ("offer", "a1", "", sdp("192.168.1.5")),
        ("answer", "a1", "b1", sdp("10.0.0.9")),  # the 2xx repeats it: the engine is spared
        ("offer", "b1", "", sdp("10.0.0.10", 2)),  # an offer, not an answer
        ("answer", "b1", "a1", sdp("192.168.1.6", 2)),
    ]


async def test_a_failed_reoffer_gives_the_engine_the_last_good_exchange_again(
    front: FrontEnd,
) -> None:
    await establish(front)
    reinvite = request("INVITE", 2, "b1", "a1", sdp("10.9.9.9", 2))  # Bob moves; refused
    await front.send(reinvite, BOB)
    assert front.calls["call-1"].offerer == "b1"
    front.engine.calls.clear()
    front.failed(reinvite)
    for _ in range(5):
        await asyncio.sleep(0)
    assert front.calls["call-1"].offerer == ""
    assert front.engine.calls == [
        ("offer", "a1", "", sdp("192.168.1.5")),
        ("answer", "a1", "b1", sdp("10.0.0.9")),
    ]
    # A failure of a request that carried no offer, or of nothing anchored: nothing happens.
    front.engine.calls.clear()
    front.failed(request("INVITE", 3, "a1", "b1"))
    front.failed(request("UPDATE", 4, "b1", "a1"))
    for _ in range(5):
        await asyncio.sleep(0)
    assert front.engine.calls == []


async def test_a_first_invite_failing_restores_nothing(front: FrontEnd) -> None:
    """No exchange succeeded yet: the call's end frees the session, nothing is replayed."""
    invite = request("INVITE", 1, "a1", body=sdp("192.168.1.5"))
    await front.send(invite, ALICE)
    front.engine.calls.clear()
    front.failed(invite)
    for _ in range(5):
        await asyncio.sleep(0)
    assert front.engine.calls == [] and front.calls["call-1"].offerer == ""
