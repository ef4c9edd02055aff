"""Every datagram the proxy sends for a seeded set of in-dialog requests, as one digest.

ACKs (with and without a late answer's SDP), BYEs, INFOs and UPDATEs of dialogs we are not
following (the path after a restart: relayed on our Record-Route token) go through
`DialogRelay.in_dialog`: loose routing with one or two of our Route entries on top, a route
set beyond us (a loose or a strict router next), a strict router before us (our URI as the
Request-URI, the real one last in Route), compact header names, Max-Forwards or none, our
credentials and someone else's, identity headers a phone asserts, several Vias. Some are
refused: a token for other ends (403), no Route of ours (404), a tel: next hop (416). The
datagrams (relayed requests, the BYE's transactions' sends, our answers) are deterministic
(fixed secrets, clock, tags and branches), so the digest is a fingerprint of the in-dialog
relay's output on the wire.

Only what every tree has is imported: the same module runs on a tree from before a change
(`cd <old tree> && python tests/support/dialog_transcript.py`) to give the digest a test
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
from core.proxy.dialog_relay import DialogRelay
from core.proxy.forwarder import Forwarder
from core.proxy.routing import RecordRouter
from core.route import stamp_via
from core.settings import ListenAddress, ProxySettings
from core.sip.errors import SipParseError
from core.sip.message import Request
from core.sip.parser import parse_message
from core.sip.timers import TimerSettings

US = "192.0.2.10"
IDENTITY = ServerIdentity("pbx.test", [ListenAddress("udp", US, 5060)])
SECRET = b"dialog-transcript-secret-0123456789"
NOW = 1_000_000.0
EXPIRES = int(NOW + 3_600)

# (long name, compact name) of the headers a phone may send either way (RFC 3261 §7.3.3).
_NAMES = {
    "Via": "v",
    "From": "f",
    "To": "t",
    "Call-ID": "i",
    "Content-Length": "l",
    "Content-Type": "c",
    "Contact": "m",
}


def _name(rng: random.Random, name: str) -> str:
    compact = _NAMES.get(name)
    return compact if compact is not None and rng.random() < 0.3 else name


def _request(rng: random.Random, index: int, router: RecordRouter) -> tuple[bytes, Flow]:
    caller = f"203.0.113.{rng.randint(1, 3)}"
    flow = Flow("udp", (caller, rng.choice([5060, 5062])), (US, 5060))
    method = rng.choice(["ACK", "ACK", "BYE", "BYE", "INFO", "UPDATE"])
    callee = f"198.51.100.{rng.randint(1, 3)}"
    target = f"sip:bob@{callee}:{rng.choice([5060, 5070])}"
    call_id = f"dlg-{index}-{rng.getrandbits(24):x}@{caller}"
    from_tag, to_tag = f"f{index}", f"t{index}"
    beyond = rng.random()
    # Where the request goes after us: the Request-URI, or a proxy beyond us (loose, strict).
    hop = callee if beyond < 0.6 else "198.51.100.50"
    ends = (caller, hop)
    if rng.random() < 0.08:
        ends = (caller, "198.51.100.99")  # a token made for other ends: 403
    token = router.token(call_id, rng.choice([from_tag, to_tag]), ends, EXPIRES)
    ours = f"<sip:{US}:5060;lr;pbx={token}>"
    routes: list[str] = []
    if rng.random() < 0.9:
        routes.append(ours)
        if rng.random() < 0.2:
            routes.append(f"<sip:{US};lr>")  # a second entry of ours, no token
    if 0.6 <= beyond < 0.8:
        routes.append("<sip:198.51.100.50;lr>")
    elif beyond >= 0.8:
        routes.append("<sip:198.51.100.50:5080>")  # a strict router next (§16.6 step 6)
    if rng.random() < 0.04:
        routes = [ours, "<tel:+15551234>"]  # nowhere a SIP flow goes: 416
    uri = target
    if routes and routes[0] == ours and rng.random() < 0.2:
        # A strict router before us (RFC 2543): our URI is the Request-URI, the real one last.
        uri = ours[1:-1]
        routes = [*routes[1:], f"<{target}>"]
    vias = [f"SIP/2.0/UDP {caller}:{flow.remote[1]};branch=z9hG4bK{rng.getrandbits(40):x};rport"]
    for _ in range(rng.randint(0, 2)):
        vias.append(f"SIP/2.0/UDP 10.0.0.{rng.randint(1, 9)};branch=z9hG4bK{rng.getrandbits(30):x}")
    body = b""
    if (method == "ACK" and rng.random() < 0.3) or (method == "UPDATE" and rng.random() < 0.5):
        body = f"v=0\r\nc=IN IP4 {caller}\r\nm=audio 4000 RTP/AVP 0\r\n".encode()
    lines = [f"{method} {uri} SIP/2.0"]
    if rng.random() < 0.5:
        lines += [f"{_name(rng, 'Via')}: {via}" for via in vias]
    else:
        lines.append(f"{_name(rng, 'Via')}: {', '.join(vias)}")
    if routes:
        if rng.random() < 0.5:
            lines += [f"Route: {route}" for route in routes]
        else:
            lines.append(f"Route: {', '.join(routes)}")
    if rng.random() < 0.8:
        lines.append(f"Max-Forwards: {rng.choice([70, 69, 5, 1])}")
    lines += [
        f"{_name(rng, 'From')}: <sip:alice@pbx.test>;tag={from_tag}",
        f"{_name(rng, 'To')}: <sip:bob@pbx.test>;tag={to_tag}",
        f"{_name(rng, 'Call-ID')}: {call_id}",
        f"CSeq: {rng.randint(1, 9)} {method}",
        f"{_name(rng, 'Contact')}: <sip:alice@{caller}:5062>",
    ]
    if rng.random() < 0.3:
        lines.append('Proxy-Authorization: Digest username="alice", realm="pbx.test", nonce="n"')
    if rng.random() < 0.2:
        lines.append('Proxy-Authorization: Digest username="a", realm="carrier.example"')
    if rng.random() < 0.3:
        lines.append("P-Asserted-Identity: <sip:boss@pbx.test>")
    if rng.random() < 0.5:
        lines.append("User-Agent: transcript/1.0")
    if body:
        lines.append(f"{_name(rng, 'Content-Type')}: application/sdp")
    lines.append(f"{_name(rng, 'Content-Length')}: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body, flow


def transcript(count: int = 400, seed: int = 21) -> list[tuple[bytes, Flow]]:
    """The datagrams sent for `count` seeded in-dialog requests, in order."""
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
    router = forwarder.record_router = RecordRouter(SECRET, lifetime=3_600.0, clock=lambda: NOW)
    relay = DialogRelay(forwarder)
    rng = random.Random(seed)
    for index in range(count):
        data, flow = _request(rng, index, router)
        request = parse_message(data)
        assert isinstance(request, Request)
        try:
            request.top_via  # noqa: B018 - sanity's parse of the Vias
            request.routes  # noqa: B018 - and of the Route entries
        except SipParseError:
            continue
        stamp_via(request, flow)
        relay.in_dialog(request, flow, NOW)
    return sent


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
    sys.exit(0)
