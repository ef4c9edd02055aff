"""Outbound failover driven in memory: the real Proxy and Trunks, a recording wire, a fake clock.

What loopback sockets cannot stage quickly: a gateway the transport cannot send to, and one
that never answers until Timer B (32 s) gives up — here time is an argument, so the test
skips forward instead of waiting.
"""

from __future__ import annotations

import asyncio

from core.events import CallEvent, EventBus, ServerEvent
from core.net.flow import Flow
from core.net.identity import ServerIdentity
from core.proxy.calls import CallTable
from core.proxy.proxy import Proxy
from core.registrar.location import LocationService
from core.settings import DialplanSettings, ListenAddress, ProxySettings, Settings
from core.sip.message import Message, Request, Response, make_response
from core.sip.parser import parse_message
from core.store.database import CarrierRow
from core.trunks.gateways import REFRESH_SECONDS
from core.trunks.trunks import STATE_GRACE_SECONDS, Trunks
from core.users import UserDirectory, make_user

DOMAIN = "pbx.test"
LISTEN = ListenAddress("udp", "127.0.0.1", 5060)
ALICE = Flow("udp", ("127.0.0.1", 40000), ("127.0.0.1", 5060))
FIRST = ("127.0.0.2", 5070)
SECOND = ("127.0.0.3", 5080)


class Wire:
    """The route as the proxy sees it: sends are recorded; some destinations refuse."""

    def __init__(self) -> None:
        self.identity = ServerIdentity(DOMAIN, [LISTEN])
        self.server_header = ("Server", "pbxtui-test")
        self.sent: list[tuple[Message, Flow]] = []
        self.unreachable: set[tuple[str, int]] = set()

    def send(self, data: bytes, flow: Flow) -> bool:
        if flow.remote in self.unreachable:
            return False
        self.sent.append((parse_message(data), flow))
        return True

    def reply(
        self,
        request: Request,
        flow: Flow,
        status: int,
        reason: str | None = None,
        extra: list[tuple[str, str]] | None = None,
    ) -> None:
        response = make_response(request, status, reason, to_tag="local", extra=extra)
        self.send(response.to_bytes(), flow)

    def to(self, remote: tuple[str, int], what: str | int) -> list[Message]:
        return [
            message
            for message, flow in self.sent
            if flow.remote == remote
            and (
                (isinstance(message, Request) and message.method == what)
                or (isinstance(message, Response) and message.status == what)
            )
        ]


def build(**alice: object) -> tuple[Proxy, Trunks, Wire, EventBus]:
    settings = Settings(domain=DOMAIN, dialplan=DialplanSettings(country_code="44"))
    bus = EventBus()
    wire = Wire()
    users = UserDirectory(
        [make_user("alice", "alice-secret-1", DOMAIN, outbound_policy="national", **alice)]  # type: ignore[arg-type]
    )
    calls = CallTable(bus, 100)
    trunks = Trunks(settings, identity=wire.identity, users=users, calls=calls, bus=bus)
    proxy = Proxy(
        settings=ProxySettings(),
        realm=DOMAIN,
        relay=wire,
        users=users,
        location=LocationService(settings.registrar, bus),
        calls=calls,
        bus=bus,
        route_secret=b"secret",
        carriers=trunks,
    )
    trunks.load(
        [
            CarrierRow("first", (f"{FIRST[0]}/32",), gateway=f"{FIRST[0]}:{FIRST[1]}", priority=1),
            CarrierRow(
                "second", (f"{SECOND[0]}/32",), gateway=f"{SECOND[0]}:{SECOND[1]}", priority=2
            ),
        ],
        [],
    )
    return proxy, trunks, wire, bus


def invite(
    call_id: str = "call-1", number: str = "01632960555", uri: str | None = None, extra: str = ""
) -> Request:
    text = (
        f"INVITE {uri or f'sip:{number}@{DOMAIN}'} SIP/2.0\r\n"
        "Via: SIP/2.0/UDP 127.0.0.1:40000;branch=z9hG4bKalice1;rport=40000\r\n"
        "Max-Forwards: 70\r\n"
        f"From: <sip:alice@{DOMAIN}>;tag=a1\r\n"
        f"To: <sip:{number}@{DOMAIN}>\r\n"
        f"Call-ID: {call_id}\r\n"
        "CSeq: 2 INVITE\r\n"
        "Contact: <sip:alice@127.0.0.1:40000>\r\n"
        f"{extra}"
        "Content-Length: 0\r\n\r\n"
    )
    request = parse_message(text.encode())
    assert isinstance(request, Request)
    return request


def answer(request: Message, status: int, tag: str = "gw") -> Response:
    assert isinstance(request, Request)
    return make_response(request, status, to_tag=tag)


def call_states(bus: EventBus) -> list[tuple[str, int]]:
    events, _cursor, _missed = bus.feed.read_since(0)
    return [(e.state, e.status) for e in events if isinstance(e, CallEvent)]


def test_transport_failure_moves_on_to_the_next_gateway() -> None:
    proxy, _trunks, wire, bus = build()
    wire.unreachable.add(FIRST)
    proxy.route_to_user(invite(), "alice", ALICE, 0.0)
    assert wire.to(ALICE.remote, 100)
    [second] = wire.to(SECOND, "INVITE")
    assert second.cseq is not None and second.cseq.number == 3  # a new transaction: CSeq + 1
    assert isinstance(second, Request) and str(second.uri).startswith(
        "sip:+441632960555@127.0.0.3:5080"
    )
    proxy.on_response(answer(second, 200), Flow("udp", SECOND, ALICE.local), 0.5)
    [ok] = wire.to(ALICE.remote, 200)
    assert ok.cseq is not None and ok.cseq.number == 2  # alice's own CSeq again
    assert call_states(bus)[-1] == ("answered", 200)
    events, _cursor, _missed = bus.feed.read_since(0)
    assert any(isinstance(e, ServerEvent) and "first" in e.message for e in events)


def test_a_gateway_that_never_answers_fails_over_at_timer_b() -> None:
    proxy, _trunks, wire, _bus = build()
    proxy.route_to_user(invite(), "alice", ALICE, 0.0)
    assert len(wire.to(FIRST, "INVITE")) == 1
    assert wire.to(SECOND, "INVITE") == []
    proxy.on_timer(31.0)  # Timer A retransmissions only
    assert len(wire.to(FIRST, "INVITE")) > 1 and wire.to(SECOND, "INVITE") == []
    proxy.on_timer(32.5)  # Timer B (64*T1): the first gateway is given up
    assert len(wire.to(SECOND, "INVITE")) == 1
    assert wire.to(ALICE.remote, 408) == [] and wire.to(ALICE.remote, 500) == []


def test_a_busy_callee_is_not_a_reason_to_fail_over() -> None:
    proxy, trunks, wire, bus = build()
    proxy.route_to_user(invite(), "alice", ALICE, 0.0)
    [first] = wire.to(FIRST, "INVITE")
    proxy.on_response(answer(first, 486), Flow("udp", FIRST, ALICE.local), 0.2)
    assert wire.to(SECOND, "INVITE") == []
    assert len(wire.to(ALICE.remote, 486)) == 1
    assert call_states(bus)[-1] == ("failed", 486)
    assert trunks.limiter.active("alice") == 0


def test_every_gateway_failing_ends_the_call_and_frees_the_limits() -> None:
    proxy, trunks, wire, _bus = build(max_concurrent_calls=1)
    proxy.route_to_user(invite(), "alice", ALICE, 0.0)
    assert trunks.limiter.active("alice") == 1
    [first] = wire.to(FIRST, "INVITE")
    proxy.on_response(answer(first, 503, "a"), Flow("udp", FIRST, ALICE.local), 0.1)
    [second] = wire.to(SECOND, "INVITE")
    proxy.on_response(answer(second, 502, "b"), Flow("udp", SECOND, ALICE.local), 0.2)
    [final] = wire.to(ALICE.remote, 502)
    assert final.cseq is not None and final.cseq.number == 2
    assert trunks.limiter.active("alice") == 0
    # The per-call state outlives the call by Timer J, then goes.
    assert trunks.outbound_state("call-1") is not None
    trunks.expire(0.2 + STATE_GRACE_SECONDS)
    assert trunks.outbound_state("call-1") is None


def test_a_challenge_without_credentials_fails_over() -> None:
    """The first carrier has no credentials configured: its 401 is no answer we can give."""
    proxy, _trunks, wire, _bus = build()
    proxy.route_to_user(invite(), "alice", ALICE, 0.0)
    [first] = wire.to(FIRST, "INVITE")
    challenge = answer(first, 401)
    challenge.headers.add("WWW-Authenticate", 'Digest realm="first.example", nonce="n"')
    proxy.on_response(challenge, Flow("udp", FIRST, ALICE.local), 0.1)
    assert len(wire.to(FIRST, "INVITE")) == 1
    [second] = wire.to(SECOND, "INVITE")
    assert second.headers.get("authorization") is None


def test_a_tel_uri_goes_out_and_the_phone_chooses_no_route_or_identity() -> None:
    proxy, _trunks, wire, _bus = build(caller_id="+441632960100")
    extra = (
        "Route: <sip:elsewhere.example;lr>\r\n"
        "P-Preferred-Identity: <sip:+15550000000@elsewhere.example>\r\n"
    )
    proxy.route_to_user(invite(uri="tel:+44-1632-960555", extra=extra), "alice", ALICE, 0.0)
    [sent] = wire.to(FIRST, "INVITE")
    assert isinstance(sent, Request)
    assert str(sent.uri) == f"sip:+441632960555@{FIRST[0]}:{FIRST[1]};user=phone"
    assert sent.headers.get("route") is None
    assert sent.headers.get("p-preferred-identity") is None
    assert sent.headers.get_all("p-asserted-identity") == [f"<sip:+441632960100@{DOMAIN}>"]


async def test_gateway_names_are_resolved_and_refreshed() -> None:
    _proxy, trunks, _wire, _bus = build()
    named = CarrierRow("named", ("127.0.0.4/32",), gateway="localhost:5099", priority=0)
    await trunks.reload([named], [])
    [target] = trunks.gateways.targets()
    assert (target.ip, target.port, target.uri_hostport) == ("127.0.0.1", 5099, "localhost:5099")
    trunks.expire(1_000.0)  # schedules the next look-up
    assert trunks._refresh_task is None
    trunks.expire(1_000.0 + REFRESH_SECONDS)
    task = trunks._refresh_task
    assert task is not None
    await asyncio.wait_for(task, 5)
    assert trunks._refresh_task is None and trunks.gateways.targets()[0].port == 5099
    await trunks.close()


def test_refused_credentials_fail_over_too() -> None:
    proxy, trunks, wire, _bus = build()
    trunks.load(
        [
            CarrierRow(
                "first",
                (f"{FIRST[0]}/32",),
                gateway=f"{FIRST[0]}:{FIRST[1]}",
                username="pbx",
                password="wrong",
                priority=1,
            ),
            CarrierRow("second", (f"{SECOND[0]}/32",), gateway=f"{SECOND[0]}:{SECOND[1]}"),
        ],
        [],
    )
    proxy.route_to_user(invite(), "alice", ALICE, 0.0)
    gateway = Flow("udp", FIRST, ALICE.local)
    for expected_cseq in (2, 3):  # alice's own, then + 1 for the answered challenge
        sent = wire.to(FIRST, "INVITE")[-1]
        assert sent.cseq is not None and sent.cseq.number == expected_cseq
        challenge = answer(sent, 407, f"c{expected_cseq}")
        challenge.headers.add("Proxy-Authenticate", 'Digest realm="first.example", nonce="n"')
        proxy.on_response(challenge, gateway, 0.1)
    assert len(wire.to(FIRST, "INVITE")) == 2  # answered once, not twice
    assert wire.to(FIRST, "INVITE")[1].headers.get("proxy-authorization") is not None
    [second] = wire.to(SECOND, "INVITE")
    assert second.headers.get("proxy-authorization") is None
    assert wire.to(ALICE.remote, 407) == []
