"""The registrar's plain-refresh path (`Registrar._refresh`) against its general path.

Two registrars get the same REGISTERs, one with `fast_refresh` off: every answer must be the
same bytes, and the bindings, the events, the sinks' calls and the security reports the same,
over long random sequences of what phones do (refresh, change of Contact, removal, wildcard,
CSeq out of order, new Call-ID, NAT, Path, Require, reg-id, refused contacts, expiry).
"""

from __future__ import annotations

import itertools
import math
import random
from dataclasses import dataclass, fields, replace

import pytest

from core.events import Event, EventBus
from core.net.flow import Flow
from core.net.identity import ServerIdentity
from core.registrar.location import Binding, LocationService, rounded
from core.registrar.registrar import Registrar
from core.security.destinations import Destinations
from core.settings import ListenAddress, RegistrarSettings
from core.sip.message import Request, Response
from core.sip.parser import parse_message
from core.sip.uri import parse_uri

LOCAL = ("198.51.100.1", 5060)
WALL = 1_700_000_000.0
USERS = ("alice", "bob")


class RecordingSink:
    """Every sink call, with the binding's state at that moment."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, tuple[object, ...]]] = []

    def binding_saved(self, binding: Binding) -> None:
        self.calls.append(("saved", snapshot(binding)))

    def binding_removed(self, binding: Binding) -> None:
        self.calls.append(("removed", snapshot(binding)))


def snapshot(binding: Binding) -> tuple[object, ...]:
    return (
        binding.user,
        binding.contact,
        binding.flow,
        binding.expires_at,
        binding.updated_at,
        binding.registered_at,
        binding.refreshed_at,
        binding.q,
        binding.call_id,
        binding.cseq,
        binding.user_agent,
        binding.behind_nat,
        binding.instance_id,
        binding.reg_id,
        binding.path,
        binding.last_pong,
        binding.ping_failures,
        binding.reachable,
        binding.next_ping_at,
        binding.key,
    )


def event_fields(event: Event) -> tuple[object, ...]:
    """An event without its wall-clock `at` (read from the system as it is built)."""
    kept = [getattr(event, field.name) for field in fields(event) if field.name != "at"]
    return (type(event).__name__, *kept)


class Side:
    """A registrar, its location service, bus, sink, and a carrier list it refuses."""

    def __init__(
        self, fast: bool, settings: RegistrarSettings, carriers: set[str], *, as_bytes: bool = False
    ) -> None:
        self.as_bytes = as_bytes  # answer through `register_answer` (what the route sends)
        self.bus = EventBus()
        self.location = LocationService(settings, self.bus, max_contacts=4)
        self.sink = RecordingSink()
        self.location.sinks.append(self.sink)
        identity = ServerIdentity("pbx.test", [ListenAddress("udp", "198.51.100.1", 5060)])
        self.registrar = Registrar(
            settings,
            self.location,
            self.bus,
            destinations=Destinations(identity, lambda host: host in carriers),
        )
        self.registrar.fast_refresh = fast
        self.cursor = 0

    def send(self, data: bytes, user: str, flow: Flow, now: float) -> bytes:
        request = parse_message(data)
        assert isinstance(request, Request)
        if self.as_bytes:
            status, answer = self.registrar.register_answer(
                request, user, flow, now, wall=WALL + now, to_tag="pbxtag"
            )
            assert answer.startswith(f"SIP/2.0 {status} ".encode())
            return answer
        response = self.registrar.register(
            request, user, flow, now, wall=WALL + now, to_tag="pbxtag"
        )
        assert isinstance(response, Response)
        return response.to_bytes()

    def state(self, now: float) -> tuple[object, ...]:
        events, self.cursor, missed = self.bus.feed.read_since(self.cursor)
        assert missed == 0
        calls = self.sink.calls
        self.sink.calls = []
        return (
            [snapshot(binding) for binding in self.location.all_bindings()],
            {user: [snapshot(b) for b in self.location.lookup(user, now)] for user in USERS},
            len(self.location),
            self.location.pending,
            [event_fields(event) for event in events],
            calls,
        )


@dataclass
class Phone:
    """What one phone sends: its Contact, Call-ID, CSeq, user agent, and where from."""

    user: str
    port: int
    call_id: str
    cseq: int = 1
    agent: str = "TestPhone/1.0"
    via_port: int = 0  # 0: the source port (no NAT)
    source_port: int = 0  # 0: `port`
    transport: str = "udp"

    @property
    def host(self) -> str:
        return "203.0.113.5" if self.user == "alice" else "203.0.113.6"

    def flow(self) -> Flow:
        return Flow(self.transport, (self.host, self.source_port or self.port), LOCAL)

    def contact(self, params: str = "") -> str:
        return f"<sip:{self.user}@{self.host}:{self.port}>{params}"


_branches = itertools.count(1)


def request(
    phone: Phone,
    *,
    contacts: tuple[str, ...] | None = None,
    expires: str | None = "3600",
    extra: tuple[str, ...] = (),
    to_user: str | None = None,
) -> bytes:
    via_port = phone.via_port or phone.source_port or phone.port
    lines = [
        "REGISTER sip:pbx.test SIP/2.0",
        f"Via: SIP/2.0/{phone.transport.upper()} {phone.host}:{via_port}"
        f";branch=z9hG4bK{next(_branches)};rport",
        "Max-Forwards: 70",
        f"From: <sip:{phone.user}@pbx.test>;tag=f1",
        f"To: <sip:{to_user or phone.user}@pbx.test>",
        f"Call-ID: {phone.call_id}",
        f"CSeq: {phone.cseq} REGISTER",
        f"User-Agent: {phone.agent}",
        *(f"Contact: {contact}" for contact in (contacts or (phone.contact(),))),
        *([f"Expires: {expires}"] if expires is not None else []),
        *extra,
        "Content-Length: 0",
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def next_request(rng: random.Random, phone: Phone, carriers: set[str]) -> bytes:
    """One REGISTER of `phone`, mostly a plain refresh, otherwise one of the changes phones
    (and attackers) make; changes `phone` as the phone itself would."""
    phone.cseq += 1
    if carriers and rng.randrange(4) == 0:
        carriers.clear()  # the carrier's ranges changed back (roll 32)
    roll = rng.randrange(40)
    if roll < 16:
        return request(phone)  # the plain refresh
    if roll == 16:
        return request(phone, expires=rng.choice(["0", "30", "59", "60", "120", "7200", None]))
    if roll == 17:
        phone.port = rng.choice([5060, 5062, 5064])  # another Contact (a reboot)
        return request(phone)
    if roll == 18:
        return request(phone, contacts=("*",), expires=rng.choice(["0", "0", "60", None]))
    if roll == 19:
        phone.cseq -= rng.choice([1, 2, 5])  # a reordered or replayed REGISTER
        return request(phone)
    if roll == 20:
        phone.call_id = f"reg-{rng.randrange(4)}@{phone.user}"  # a new Call-ID (or back)
        phone.cseq = rng.choice([1, 2, 50])
        return request(phone)
    if roll == 21:
        other = replace(phone, port=phone.port + 1000)
        return request(phone, contacts=(phone.contact(), other.contact()))
    if roll == 22:
        phone.agent = rng.choice(["TestPhone/1.0", "TestPhone/2.0"])
        return request(phone)
    if roll == 23:
        phone.via_port = rng.choice([0, 0, 40000])  # the Via says another port: NAT
        return request(phone)
    if roll == 24:
        phone.source_port = rng.choice([0, 0, 41000])  # the packet comes from another port
        return request(phone)
    if roll == 25:
        return request(phone, extra=("Path: <sip:edge.example;lr>",))
    if roll == 26:
        tag = rng.choice(["path", "outbound", "100rel"])
        return request(phone, extra=(f"Require: {tag}",))
    if roll == 27:
        q = rng.choice(["1", "1.0", "0.5", "2"])
        return request(phone, contacts=(phone.contact(f";q={q}"),))
    if roll == 28:
        params = rng.choice(
            [
                ';+sip.instance="<urn:uuid:1>"',
                ';+sip.instance="<urn:uuid:1>";reg-id=1',
                ";reg-id=1",
                ';+sip.instance=""',
            ]
        )
        supported = rng.choice([(), ("Supported: outbound",), ("Supported: path",)])
        return request(phone, contacts=(phone.contact(params),), extra=supported)
    if roll == 29:
        return request(phone, to_user="mallory")
    if roll == 30:
        return request(phone, contacts=(), expires=None)[:0] + query(phone)
    if roll == 31:
        param = rng.choice([";expires=600", ";expires=0", ";expires=10", ";expires=x"])
        return request(phone, contacts=(phone.contact(param),))
    if roll == 32:
        # The phone's address becomes a carrier's, or stops being one (a reload).
        carriers.symmetric_difference_update({phone.host})
        return request(phone)
    if roll == 33:
        return request(phone, contacts=(f"<sip:{phone.user}@198.51.100.1:5060>",))
    if roll == 34:
        return request(phone, contacts=("<tel:+15551234>",))
    if roll == 35:
        return request(phone, expires=rng.choice(["abc", "-1", "99999999999"]))
    if roll == 36:
        # The same Contact written otherwise: the same binding, another text.
        return request(phone, contacts=(f"<sip:{phone.user}@{phone.host.upper()}:{phone.port}>",))
    if roll == 37:
        return request(phone, contacts=(phone.contact(";+sip.ice"),))
    if roll == 38:
        phone.transport = rng.choice(["udp", "tcp"])
        return request(phone)
    return request(phone, contacts=(f"<sip:{phone.user}@{phone.host}:{phone.port};transport=tcp>",))


_VIA_SHAPES = (
    "SIP/2.0/UDP {host}:{port};branch=z9hG4bK{n};rport",
    "SIP/2.0/UDP {host}:{port};rport;branch=z9hG4bK{n}",
    "SIP/2.0/UDP {host};branch=z9hG4bK{n}",
    "SIP/2.0/UDP {host}:{port} ;branch=z9hG4bK{n};received=192.0.2.1",
    "SIP/2.0/TCP [2001:db8::7]:5070;branch=z9hG4bK{n};alias",
    "sip/2.0/udp edge.example.com;branch=z9hG4bK{n};ttl=3;maddr=239.1.1.1",
    "SIP/2.0/UDP {host}:{port};branch=1234-old",
)


def reshape(rng: random.Random, data: bytes) -> bytes:
    """`data` with its wire shape varied as phones and proxies vary it: several Vias (one
    header or several, compact or not), other Via shapes, a To-tag, compact names, other
    Contact text, header case. Only the text differs: what it means stays a REGISTER."""
    if rng.randrange(3) == 0:
        return data
    head, _blank, _body = data.partition(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    out = [lines[0]]
    for line in lines[1:]:
        name, _colon, value = line.partition(": ")
        if name == "Via":
            extra = [
                rng.choice(_VIA_SHAPES).format(host="192.0.2.77", port=5080, n=rng.randrange(99))
                for _ in range(rng.choice([0, 0, 1, 2]))
            ]
            if extra and rng.randrange(2):
                out.append(f"Via: {value}, " + ", ".join(extra))
            else:
                out.append(f"{rng.choice(['Via', 'v', 'VIA'])}: {value}")
                out.extend(f"Via: {via}" for via in extra)
        elif name == "To" and rng.randrange(3) == 0:
            out.append(f"To: {value};tag={rng.choice(['a1', 'pbxtag', 'x-9'])}")
        elif name == "To" and rng.randrange(3) == 0:
            out.append(f't: "Display Name" {value}')
        elif name == "Contact" and rng.randrange(4) == 0:
            out.append(f"m: {value}")
        elif name == "From" and rng.randrange(4) == 0:
            out.append(f"f:{value}")
        elif name == "Call-ID" and rng.randrange(4) == 0:
            out.append(f"i: {value}")
        elif name == "CSeq" and rng.randrange(4) == 0:
            out.append(f"CSEQ:  {value}")
        else:
            out.append(line)
    if rng.randrange(4) == 0:
        out.insert(rng.randrange(1, len(out) + 1), "X-Other: something;else")
    return ("\r\n".join(out) + "\r\n\r\n").encode()


def query(phone: Phone) -> bytes:
    """A REGISTER without Contact: which bindings are there (§10.2.3)."""
    data = request(phone)
    return b"".join(line + b"\r\n" for line in data.split(b"\r\n")[:-1] if b"Contact" not in line)


@pytest.mark.parametrize("seed", range(12))
def test_the_plain_refresh_path_answers_and_changes_as_the_general_path(seed: int) -> None:
    rng = random.Random(seed)
    settings = replace(
        RegistrarSettings(),
        max_contacts_per_user=rng.choice([2, 3]),
        max_expires=rng.choice([3_600, 600]),
    )
    carriers: set[str] = set()
    fast = Side(True, settings, carriers)
    general = Side(False, settings, carriers)
    # The route's way: the fast path's 200 written as bytes, the rest as Response bytes.
    written = Side(True, settings, carriers, as_bytes=True)
    phones = {user: Phone(user, 5060, f"reg-0@{user}") for user in USERS}
    now = 0.0
    for step in range(400):
        if rng.randrange(25) == 0:
            now += rng.choice([0.4, 0.5, 59.5, 600.0, 3_599.5, 4_000.0])
        if rng.randrange(30) == 0:
            assert fast.location.flush() == general.location.flush() == written.location.flush()
        phone = phones[rng.choice(USERS)]
        data = reshape(rng, next_request(rng, phone, carriers))
        flow = phone.flow()
        answers = [side.send(data, phone.user, flow, now) for side in (fast, general, written)]
        assert answers[0] == answers[1] == answers[2], (seed, step, data)
        state = general.state(now)
        assert fast.state(now) == state == written.state(now), (seed, step, data)
        now += rng.choice([0.0, 0.001, 1.0, 30.0])
    assert fast.location.flush() == general.location.flush() == written.location.flush()
    assert fast.state(now) == general.state(now) == written.state(now)
    # The comparison covered the fast path, many times, and everything else too.
    assert fast.registrar.fast_refreshes > 100
    assert written.registrar.fast_refreshes == fast.registrar.fast_refreshes
    assert general.registrar.fast_refreshes == 0


def test_a_plain_refresh_takes_the_fast_path_and_an_unchanged_second_one_too() -> None:
    settings = RegistrarSettings()
    side = Side(True, settings, set())
    phone = Phone("alice", 5060, "reg-1@alice")
    flow = phone.flow()
    assert b"SIP/2.0 200 OK" in side.send(request(phone), "alice", flow, 0.0)
    assert side.registrar.fast_refreshes == 0  # a new binding: the general path
    for count in (1, 2):
        phone.cseq += 1
        answer = side.send(request(phone), "alice", flow, 10.0 * count)
        assert b"Contact: <sip:alice@203.0.113.5:5060>;expires=3600\r\n" in answer
        assert side.registrar.fast_refreshes == count
    [binding] = side.location.lookup("alice", 20.0)
    assert (binding.cseq, binding.expires_at, side.location.pending) == (3, 3_620.0, 1)
    phone.cseq += 1
    side.send(request(phone, expires="0"), "alice", flow, 30.0)
    assert side.registrar.fast_refreshes == 2  # a removal: the general path
    assert side.location.lookup("alice", 30.0) == []


@pytest.mark.parametrize("seed", range(4))
def test_the_written_200_is_the_response_bytes_for_every_binding_set(seed: int) -> None:
    """`_answer_bytes` against `_answer(...).to_bytes()` directly: one to four bindings of
    every kind (q, instance, reg-id, expiring), outbound or not, with and without a To-tag,
    over requests of many shapes."""
    rng = random.Random(100 + seed)
    side = Side(False, RegistrarSettings(), set())
    registrar = side.registrar
    phone = Phone("alice", 5060, "reg-9@alice")
    compared = 0
    for step in range(150):
        params = rng.choice(
            ["", ";q=0.5", ";q=0.25", ';+sip.instance="<urn:uuid:7>"', ";expires=30", ";x=y"]
        )
        contacts = tuple(
            phone.contact(params).replace(":5060", f":{5060 + rng.randrange(6)}")
            for _ in range(rng.choice([1, 1, 2]))
        )
        phone.cseq += 1
        data = reshape(
            rng, request(phone, contacts=contacts, expires=rng.choice(["60", "3600", None]))
        )
        parsed = parse_message(data)
        assert isinstance(parsed, Request)
        now = step * rng.choice([0.5, 7.0])
        wall = WALL + now + rng.choice([0.0, 0.25, 0.9995])
        registrar.register(parsed, "alice", phone.flow(), now, wall=wall, to_tag="pbxtag")
        for outbound in (False, True):
            for to_tag in ("pbxtag", None, ""):
                want = registrar._answer(parsed, "alice", now, wall, False, outbound, to_tag)
                got = registrar._answer_bytes(parsed, "alice", now, wall, outbound, to_tag)
                assert got == want.to_bytes(), (seed, step, data)
                compared += 1
    assert compared == 150 * 6
    assert len(side.location.lookup("alice", 0.0)) > 1  # several bindings were listed


def test_a_refresh_of_a_contact_turned_carrier_is_refused_and_reported_once() -> None:
    carriers: set[str] = set()
    side = Side(True, RegistrarSettings(), carriers)
    phone = Phone("alice", 5060, "reg-1@alice")
    flow = phone.flow()
    side.send(request(phone), "alice", flow, 0.0)
    side.state(0.0)
    carriers.add(phone.host)
    phone.cseq += 1
    answer = side.send(request(phone), "alice", flow, 1.0)
    assert answer.startswith(b"SIP/2.0 403 Contact Not Allowed\r\n")
    _bindings, _live, _count, _pending, events, _calls = side.state(1.0)
    assert [event[0] for event in events] == ["SecurityEvent"]
    assert side.registrar.fast_refreshes == 0


@pytest.mark.parametrize(
    "value",
    [
        *(0.0, 0.5, 1.5, 2.5, -0.5, -1.5, -2.5, 3_599.5, 3_599.4999999, 3_600.0000001, 1e-300),
        *(2.0**52 - 0.5, 2.0**52 + 1, -(2.0**52) + 0.5, 1e20, -1e20, 4_503_599_627_370_495.5),
    ],
)
def test_rounded_is_round(value: float) -> None:
    assert rounded(value) == round(value)
    assert type(rounded(value)) is int


def test_rounded_is_round_over_many_times() -> None:
    rng = random.Random(21)
    for _ in range(20_000):
        base = rng.choice([0.0, 3_600.0, 1e6, 1.7e9, 2.0**51, 2.0**52])
        value = rng.choice([1.0, -1.0]) * base + rng.choice(
            [rng.uniform(-2, 2), rng.randrange(-8, 8) / 2, rng.uniform(-1e9, 1e9)]
        )
        assert rounded(value) == round(value), value


@pytest.mark.parametrize("value", [math.inf, -math.inf, math.nan])
def test_rounded_raises_as_round_does(value: float) -> None:
    with pytest.raises((OverflowError, ValueError)) as raised:
        round(value)
    with pytest.raises(raised.type):
        rounded(value)


@pytest.mark.parametrize("fast", [True, False])
def test_a_stored_contact_that_is_not_one_line_is_never_written_into_the_200(fast: bool) -> None:
    side = Side(fast, RegistrarSettings(), set())
    phone = Phone("alice", 5060, "reg-1@alice")
    flow = phone.flow()
    broken = Binding(
        user="alice",
        contact="sip:alice@192.0.2.9\r\nX-Injected: 1",
        uri=parse_uri("sip:alice@192.0.2.9"),
        flow=flow,
        expires_at=600.0,
        updated_at=0.0,
        registered_at=WALL,
        refreshed_at=WALL,
    )
    assert side.location.restore([broken], 0.0, wall=WALL) == 1
    with pytest.raises(ValueError, match="would not serialise as one line"):
        side.send(request(phone), "alice", flow, 1.0)
