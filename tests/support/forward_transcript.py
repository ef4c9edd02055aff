"""Every datagram the proxy's forwarding side sends for a seeded set of requests, as one digest.

A request (INVITE, MESSAGE, OPTIONS, a re-INVITE in a dialog) with one to four Vias in any
layout, Record-Route, our credentials and a carrier's, Max-Forwards or none, is forwarded to
one to three contacts (forking) through the Forwarder; each branch answers 180 and a final
response (a 2xx, 486, 603, ...), so the 100 Trying, the branch copies, the relayed answers,
the CANCELs and the best answer all go out; one request in five comes back looped and gets
our 482 (Outbox.reply). Everything is deterministic (fixed secrets, clock and tags), so the
digest of the transcript is a fingerprint of the forwarding code's output on the wire.

Only what every tree has is imported: the same module runs on a tree from before a change
(`cd <old tree> && python tests/support/forward_transcript.py`) to give the digest a test
then holds the new one to.
"""

from __future__ import annotations

import hashlib
import random
import sys

from core.events import EventBus
from core.net.flow import Flow
from core.net.identity import ServerIdentity
from core.outbox import Outbox
from core.proxy.calls import CallTable
from core.proxy.decisions import NoCarriers
from core.proxy.forwarder import DIALOG_CREATING, Forwarder, request_hash
from core.proxy.routing import RecordRouter, branch_id, has_looped, push_via
from core.route import stamp_via
from core.settings import ListenAddress, ProxySettings
from core.sip.errors import SipParseError
from core.sip.message import Request, Response, make_response
from core.sip.parser import parse_message
from core.sip.timers import TimerSettings
from core.sip.uri import parse_uri

US = "192.0.2.10"
IDENTITY = ServerIdentity("pbx.test", [ListenAddress("udp", US, 5060)])
SECRET = b"forward-transcript-secret-0123456789"
NOW = 1_000_000.0
HOSTS = ["host", "h\u00f6st"]  # a Call-ID with a non-ASCII byte goes through as sent


def _via(rng: random.Random, index: int) -> str:
    host = rng.choice(["203.0.113.7", "phone.example", "[2001:db8::7]", "198.51.100.9"])
    port = rng.choice(["", ":5060", ":5062"])
    params = [f"branch=z9hG4bK{index}x{rng.getrandbits(32):x}"]
    if rng.random() < 0.5:
        params.append("rport")
    if rng.random() < 0.2:
        params.append("received=10.1.1.1")
    spelled = ";".join(params)
    if rng.random() < 0.2:
        return f"SIP / 2.0 / UDP {host}{port} ; {spelled.replace(';', ' ; ')}"
    return f"SIP/2.0/{rng.choice(['UDP', 'TCP'])} {host}{port};{spelled}"


def _request(rng: random.Random, index: int) -> bytes:
    method = rng.choice(["INVITE", "INVITE", "MESSAGE", "OPTIONS", "SUBSCRIBE"])
    vias = [_via(rng, index) for _ in range(rng.randint(1, 4))]
    if rng.random() < 0.5:
        via_lines = [f"Via: {via}" for via in vias]
    else:
        via_lines = [f"Via: {', '.join(vias)}"]
    lines = [f"{method} sip:bob@pbx.test SIP/2.0", *via_lines]
    forwards = rng.choice(["Max-Forwards: 70", "Max-Forwards: 3", "Max-Forwards: 1", ""])
    if forwards:
        lines.append(forwards)
    if rng.random() < 0.3:
        lines.append("Record-Route: <sip:edge.example;lr>, <sip:core.example;lr>")
    for _ in range(rng.randint(0, 2)):
        realm = rng.choice(["pbx.test", "carrier.example", "PBX.TEST"])
        spacing = rng.choice(["", " ", "\t"])
        lines.append(
            f"{rng.choice(['Proxy-Authorization', 'proxy-authorization'])}: Digest "
            f'username="alice", realm{spacing}={spacing}"{realm}", nonce="n{index}", '
            f'uri="sip:bob@pbx.test", response="0123456789abcdef0123456789abcdef"'
        )
    to_tag = ";tag=b0" if rng.random() < 0.15 else ""
    lines += [
        f'From: "Alice" <sip:alice@pbx.test>;tag=a{index}',
        f"To: <sip:bob@pbx.test>{to_tag}",
        f"Call-ID: call-{index}@{rng.choice(HOSTS)}",
        f"CSeq: {rng.randint(1, 9_999)} {method}",
        "Contact: <sip:alice@203.0.113.7:5062>",
        "User-Agent: transcript",
    ]
    body = ""
    if method == "INVITE":
        body = "v=0\r\no=- 1 1 IN IP4 203.0.113.7\r\ns=-\r\nc=IN IP4 203.0.113.7\r\nt=0 0\r\n"
        lines.append("Content-Type: application/sdp")
    lines.append(f"Content-Length: {len(body.encode())}")
    return ("\r\n".join(lines) + "\r\n\r\n" + body).encode("utf-8")


def _looped(request: Request) -> Request:
    """`request` as it comes back after we forwarded it once and someone sent it back."""
    ours = branch_id(request_hash(request), 0)
    headers = request.headers.copy()
    push_via(headers, IDENTITY, Flow("udp", ("198.51.100.9", 5060), (US, 5060)), ours)
    headers.prepend("Via", "SIP/2.0/UDP 198.51.100.9:5060;branch=z9hG4bKback")
    return Request(request.method, request.uri, headers, request.body)


def transcript(count: int = 160, seed: int = 21) -> list[tuple[bytes, Flow]]:
    """The datagrams sent for `count` seeded requests, in order."""
    sent: list[tuple[bytes, Flow]] = []

    def capture(data: bytes, flow: Flow) -> bool:
        sent.append((data, flow))
        return True

    bus = EventBus()
    outbox = Outbox(identity=IDENTITY, bus=bus, send=capture, clock=lambda: NOW, tag_secret=SECRET)
    forwarder = Forwarder(
        settings=ProxySettings(),
        realm="pbx.test",
        relay=outbox,
        calls=CallTable(bus, 1_000),
        carriers=NoCarriers(),
        bus=bus,
        route_secret=SECRET,
        timers=TimerSettings(trying_delay=0.0),
    )
    forwarder.record_router = RecordRouter(SECRET, lifetime=3_600.0, clock=lambda: NOW)
    rng = random.Random(seed)
    for index in range(count):
        flow = Flow("udp", ("203.0.113.7", rng.choice([5060, 5062])), (US, 5060))
        request = parse_message(_request(rng, index))
        assert isinstance(request, Request)
        try:
            request.top_via  # noqa: B018 - sanity's parse of the Vias
        except SipParseError:
            continue
        stamp_via(request, flow)
        if index % 5 == 4:
            looped = _looped(request)
            if has_looped(looped, IDENTITY):
                forwarder.loop_detected(looped, flow, NOW)
            continue
        context = forwarder.open(request, flow, NOW)
        if context is None:
            continue
        hashed = request_hash(request)
        branches = []
        for target in range(rng.randint(1, 3)):
            out = Flow("udp", (f"198.51.100.{target + 1}", 5060 + target), (US, 5060))
            uri = parse_uri(f"sip:bob@198.51.100.{target + 1}:{5060 + target}")
            branches.append(
                forwarder.branch(
                    context,
                    uri,
                    ("<sip:path.example;lr>",) if target == 2 else (),
                    flow,
                    out,
                    branch_id(hashed, target),
                    request.method in DIALOG_CREATING,
                )
            )
        for branch in branches:
            forwarder.start(branch, NOW)
        finals = [rng.choice([200, 486, 603, 404, 302, 407]) for _ in branches]
        for number, branch in enumerate(branches):
            if request.method == "INVITE":
                _answer(forwarder, branch.request, branch.flow, 180, f"r{number}")
        for number, (branch, status) in enumerate(zip(branches, finals, strict=True)):
            _answer(forwarder, branch.request, branch.flow, status, f"r{number}")
            if status < 300 and request.method == "INVITE":
                # A cancelled branch's 487 comes after our CANCEL.
                for other in branches[number + 1 :]:
                    _answer(forwarder, other.request, other.flow, 487, "late")
                break
    return sent


def _answer(forwarder: Forwarder, request: Request, flow: Flow, status: int, tag: str) -> None:
    """The callee's answer to the branch copy it received, back through the parser."""
    received = parse_message(request.to_bytes())
    assert isinstance(received, Request)
    response = make_response(received, status, to_tag=tag)
    if status < 300 and request.method == "INVITE":
        response.headers.add("Contact", f"<sip:bob@{flow.remote[0]}:{flow.remote[1]}>")
        response.headers.add("Record-Route", "<sip:edge.example;lr>")
    parsed = parse_message(response.to_bytes())
    assert isinstance(parsed, Response)
    forwarder.on_response(parsed, flow, NOW)


def digest(sent: list[tuple[bytes, Flow]]) -> str:
    """SHA-256 over every datagram and where it went."""
    hashed = hashlib.sha256()
    for data, flow in sent:
        hashed.update(f"{flow.transport} {flow.remote} {len(data)}\n".encode())
        hashed.update(data)
    return hashed.hexdigest()


if __name__ == "__main__":
    datagrams = transcript()
    print(len(datagrams), digest(datagrams))
    if "-v" in sys.argv:
        for data, flow in datagrams:
            print(flow.remote, data.decode("utf-8", "surrogateescape").split("\r\n")[0])
