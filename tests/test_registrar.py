"""The registrar (RFC 3261 §10.3) on parsed REGISTER bytes and a fake clock: no sockets."""

from __future__ import annotations

import itertools
from dataclasses import replace

import pytest

from core.events import (
    ContactExpired,
    ContactRefreshed,
    ContactRegistered,
    ContactUnregistered,
    Event,
    EventBus,
)
from core.net.flow import Flow
from core.registrar.location import LocationService
from core.registrar.registrar import Registrar, _same_flow, detect_nat
from core.settings import RegistrarSettings, Settings
from core.sip.fields import parse_via
from core.sip.message import Request, Response
from core.sip.parser import parse_message
from core.sip.uri import SipUri, parse_uri

LOCAL = ("198.51.100.1", 5060)
PHONE = ("203.0.113.5", 5060)
WALL = 1_700_000_000.0
_branches = itertools.count(1)


def register(
    *,
    user: str = "alice",
    contacts: tuple[str, ...] = ("<sip:alice@203.0.113.5:5060>",),
    expires: int | None = None,
    call_id: str = "reg-1@phone",
    cseq: int = 1,
    via: str = "203.0.113.5:5060",
    transport: str = "UDP",
    extra: tuple[str, ...] = (),
    to_user: str | None = None,
) -> Request:
    lines = [
        "REGISTER sip:pbx.test SIP/2.0",
        f"Via: SIP/2.0/{transport} {via};branch=z9hG4bK{next(_branches)};rport",
        "Max-Forwards: 70",
        f"From: <sip:{user}@pbx.test>;tag=f1",
        f"To: <sip:{to_user or user}@pbx.test>",
        f"Call-ID: {call_id}",
        f"CSeq: {cseq} REGISTER",
        "User-Agent: TestPhone/1.0",
        *(f"Contact: {contact}" for contact in contacts),
        *([f"Expires: {expires}"] if expires is not None else []),
        *extra,
        "Content-Length: 0",
    ]
    message = parse_message(("\r\n".join(lines) + "\r\n\r\n").encode())
    assert isinstance(message, Request)
    return message


def udp(remote: tuple[str, int] = PHONE) -> Flow:
    return Flow("udp", remote, LOCAL)


class World:
    """A registrar with its location service and bus, on settings a test can change."""

    def __init__(self, max_contacts: int = 100_000, **registrar_changes: object) -> None:
        self.settings = Settings(
            domain="pbx.test", registrar=replace(RegistrarSettings(), **registrar_changes)
        )
        self.bus = EventBus()
        self.location = LocationService(
            self.settings.registrar, self.bus, max_contacts=max_contacts
        )
        self.registrar = Registrar(self.settings.registrar, self.location, self.bus)
        self._cursor = 0

    def send(
        self, request: Request, flow: Flow | None = None, now: float = 0.0, user: str = "alice"
    ) -> Response:
        return self.registrar.register(request, user, flow or udp(), now, wall=WALL + now)

    def events(self) -> list[Event]:
        """Feed events published since the last call."""
        events, self._cursor, _missed = self.bus.feed.read_since(self._cursor)
        return events


def contact_values(response: Response) -> list[str]:
    return response.headers.values("contact")


@pytest.fixture
def world() -> World:
    return World()


# -- add / refresh / remove ------------------------------------------------------------------
def test_first_register_adds_a_binding_and_lists_it(world: World) -> None:
    response = world.send(register(), now=100.0)

    assert response.status == 200
    assert contact_values(response) == ["<sip:alice@203.0.113.5:5060>;expires=3600"]
    assert response.headers.get("date") == "Tue, 14 Nov 2023 22:15:00 GMT"
    [binding] = world.location.lookup("alice", 100.0)
    assert binding.contact == "sip:alice@203.0.113.5:5060"
    assert binding.expires_at == 3700.0
    assert (binding.call_id, binding.cseq, binding.user_agent) == (
        "reg-1@phone",
        1,
        "TestPhone/1.0",
    )
    assert binding.flow == udp()
    [event] = world.events()
    assert event == ContactRegistered(
        "alice",
        "sip:alice@203.0.113.5:5060",
        PHONE,
        "udp",
        3600,
        user_agent="TestPhone/1.0",
        behind_nat=False,
        at=event.at,
    )


def test_refresh_extends_the_binding_and_reports_a_refresh(world: World) -> None:
    world.send(register(cseq=1), now=0.0)
    world.events()

    response = world.send(register(cseq=2, expires=600), now=500.0)

    assert response.status == 200
    assert contact_values(response) == ["<sip:alice@203.0.113.5:5060>;expires=600"]
    [binding] = world.location.lookup("alice", 500.0)
    assert binding.expires_at == 1100.0
    assert binding.registered_at == WALL  # first registration kept for display
    assert binding.refreshed_at == WALL + 500.0
    [event] = world.events()
    assert isinstance(event, ContactRefreshed)
    assert (event.user, event.contact, event.expires) == ("alice", binding.contact, 600)


def test_expires_zero_removes_the_binding(world: World) -> None:
    world.send(register(cseq=1), now=0.0)
    world.events()

    response = world.send(register(contacts=("<sip:alice@203.0.113.5:5060>;expires=0",), cseq=2))

    assert response.status == 200
    assert contact_values(response) == []
    assert world.location.lookup("alice", 1.0) == []
    [event] = world.events()
    assert event == ContactUnregistered(
        "alice", "sip:alice@203.0.113.5:5060", PHONE, "unregistered", at=event.at
    )


def test_removing_an_unknown_contact_is_a_quiet_success(world: World) -> None:
    response = world.send(register(expires=0))
    assert response.status == 200
    assert world.events() == []


def test_equal_uris_written_differently_are_one_binding(world: World) -> None:
    world.send(register(contacts=("<sip:alice@Phone.Example.com;transport=UDP>",)), now=0.0)
    world.send(register(contacts=("<sip:alice@phone.example.com;transport=udp;x=1>",), cseq=2))
    assert len(world.location.lookup("alice", 1.0)) == 1


# -- several contacts ------------------------------------------------------------------------
def test_several_contacts_in_one_register_with_their_own_expires_and_q(world: World) -> None:
    request = register(
        contacts=(
            "<sip:alice@203.0.113.5:5060>;q=0.5, <sip:alice@203.0.113.5:5062>;expires=120",
            "<sip:alice@203.0.113.5:5064>;q=0.9",
        ),
        expires=600,
    )
    response = world.send(request, now=0.0)

    assert response.status == 200
    assert sorted(contact_values(response)) == [
        "<sip:alice@203.0.113.5:5060>;expires=600;q=0.5",
        "<sip:alice@203.0.113.5:5062>;expires=120",
        "<sip:alice@203.0.113.5:5064>;expires=600;q=0.9",
    ]
    order = [binding.uri.port for binding in world.location.lookup("alice", 0.0)]
    assert order == [5062, 5064, 5060]  # q 1.0, 0.9, 0.5
    assert sum(isinstance(e, ContactRegistered) for e in world.events()) == 3


def test_the_200_lists_the_other_contacts_with_their_remaining_time(world: World) -> None:
    world.send(register(contacts=("<sip:alice@203.0.113.5:5060>",), expires=1000), now=0.0)
    response = world.send(
        register(contacts=("<sip:alice@198.51.100.9>",), call_id="desk", expires=3000), now=400.0
    )
    assert sorted(contact_values(response)) == [
        "<sip:alice@198.51.100.9>;expires=3000",
        "<sip:alice@203.0.113.5:5060>;expires=600",
    ]


def test_a_query_lists_bindings_and_changes_nothing(world: World) -> None:
    world.send(register(), now=0.0)
    world.events()
    response = world.send(register(contacts=(), cseq=2), now=100.0)
    assert response.status == 200
    assert contact_values(response) == ["<sip:alice@203.0.113.5:5060>;expires=3500"]
    assert world.events() == []


# -- Contact: * ------------------------------------------------------------------------------
def test_star_with_expires_zero_removes_every_contact(world: World) -> None:
    world.send(register(contacts=("<sip:alice@203.0.113.5:5060>", "<sip:alice@192.0.2.7>")))
    world.events()

    response = world.send(register(contacts=("*",), expires=0, call_id="other", cseq=1))

    assert response.status == 200
    assert contact_values(response) == []
    assert len(world.location) == 0
    assert {e.contact for e in world.events() if isinstance(e, ContactUnregistered)} == {
        "sip:alice@203.0.113.5:5060",
        "sip:alice@192.0.2.7",
    }


@pytest.mark.parametrize(
    ("contacts", "expires"),
    [
        (("*",), None),  # no Expires at all
        (("*",), 60),  # a lifetime other than zero
        (("*", "<sip:alice@192.0.2.7>"), 0),  # mixed with an address
    ],
)
def test_star_misuse_is_a_400_and_removes_nothing(
    world: World, contacts: tuple[str, ...], expires: int | None
) -> None:
    world.send(register())
    response = world.send(register(contacts=contacts, expires=expires, cseq=2))
    assert response.status == 400
    assert len(world.location) == 1


# -- expiry intervals ------------------------------------------------------------------------
def test_interval_below_minimum_is_423_with_min_expires(world: World) -> None:
    response = world.send(register(expires=30))
    assert response.status == 423
    assert response.headers.get("min-expires") == "60"
    assert len(world.location) == 0


def test_a_423_for_one_contact_keeps_the_others_out_too(world: World) -> None:
    request = register(
        contacts=("<sip:alice@203.0.113.5:5060>", "<sip:alice@203.0.113.5:5062>;expires=10")
    )
    assert world.send(request).status == 423
    assert len(world.location) == 0
    assert world.events() == []


def test_interval_above_maximum_is_clamped(world: World) -> None:
    response = world.send(register(expires=86_400), now=0.0)
    assert contact_values(response) == ["<sip:alice@203.0.113.5:5060>;expires=3600"]
    assert world.location.lookup("alice", 0.0)[0].expires_at == 3600.0


def test_default_expires_applies_without_header_or_param() -> None:
    world = World(default_expires=900)
    response = world.send(register())
    assert contact_values(response) == ["<sip:alice@203.0.113.5:5060>;expires=900"]


# -- Call-ID / CSeq ordering (§10.3 step 7) --------------------------------------------------
@pytest.mark.parametrize("stale_cseq", [5, 4])
def test_same_call_id_without_higher_cseq_fails_with_500(world: World, stale_cseq: int) -> None:
    world.send(register(cseq=5, expires=600), now=0.0)
    response = world.send(register(cseq=stale_cseq, expires=0), now=10.0)
    assert response.status == 500
    [binding] = world.location.lookup("alice", 10.0)
    assert (binding.cseq, binding.expires_at) == (5, 600.0)


def test_another_call_id_may_update_with_a_lower_cseq(world: World) -> None:
    world.send(register(cseq=5), now=0.0)
    response = world.send(register(call_id="rebooted", cseq=1, expires=0), now=10.0)
    assert response.status == 200
    assert len(world.location) == 0


def test_star_with_a_stale_cseq_fails_and_removes_nothing(world: World) -> None:
    world.send(register(cseq=5))
    response = world.send(register(contacts=("*",), expires=0, cseq=5))
    assert response.status == 500
    assert len(world.location) == 1


# -- who may register what -------------------------------------------------------------------
def test_to_must_name_the_authenticated_user(world: World) -> None:
    response = world.send(register(to_user="bob"), user="alice")
    assert response.status == 403
    assert len(world.location) == 0


def test_too_many_contacts_for_one_user_is_refused_but_refresh_still_works() -> None:
    world = World(max_contacts_per_user=2)
    world.send(register(contacts=("<sip:alice@192.0.2.1>", "<sip:alice@192.0.2.2>")))

    refused = world.send(register(contacts=("<sip:alice@192.0.2.3>",), cseq=2))
    refreshed = world.send(register(contacts=("<sip:alice@192.0.2.1>",), cseq=3))

    assert (refused.status, refused.reason) == (403, "Too Many Contacts (limit 2)")
    assert refreshed.status == 200
    assert len(world.location) == 2


def test_a_full_location_table_is_503() -> None:
    world = World(max_contacts=1)
    world.send(register())
    response = world.send(register(user="bob", contacts=("<sip:bob@192.0.2.8>",)), user="bob")
    assert response.status == 503
    assert response.headers.get("retry-after") == "60"


def test_unknown_required_extension_is_420(world: World) -> None:
    response = world.send(register(extra=("Require: path, foo",)))
    assert response.status == 420
    assert response.headers.get("unsupported") == "foo"


@pytest.mark.parametrize(
    "contact",
    [
        "<sip:alice@192.0.2.1>;q=1.5",
        "<sip:alice@192.0.2.1>;expires=soon",
        "<tel:+15551234567>",
        "<sip:alice@192.0.2.1",
    ],
)
def test_malformed_contacts_are_400(world: World, contact: str) -> None:
    assert world.send(register(contacts=(contact,))).status == 400
    assert len(world.location) == 0


# -- expiry ----------------------------------------------------------------------------------
def test_expiry_on_a_fake_clock_emits_contact_expired(world: World) -> None:
    world.send(register(expires=60), now=1_000.0)
    world.events()

    assert world.registrar.expire(1_059.9) == []
    [expired] = world.registrar.expire(1_060.0)

    assert expired.contact == "sip:alice@203.0.113.5:5060"
    assert world.location.lookup("alice", 1_060.0) == []
    [event] = world.events()
    assert event == ContactExpired("alice", "sip:alice@203.0.113.5:5060", at=event.at)


def test_a_refreshed_binding_does_not_expire_at_its_old_time(world: World) -> None:
    world.send(register(cseq=1, expires=60), now=0.0)
    world.send(register(cseq=2, expires=60), now=50.0)
    assert world.registrar.expire(70.0) == []
    assert len(world.registrar.expire(110.0)) == 1


class Told:
    """A binding sink that writes down what it hears."""

    def __init__(self) -> None:
        self.heard: list[tuple[str, object, float]] = []

    def binding_saved(self, binding: object) -> None:
        self.heard.append(("saved", binding, binding.expires_at))  # type: ignore[attr-defined]

    def binding_removed(self, binding: object) -> None:
        self.heard.append(("removed", binding, binding.expires_at))  # type: ignore[attr-defined]


def test_a_plain_refresh_changes_the_binding_in_place_and_sinks_hear_at_the_flush(
    world: World,
) -> None:
    sink, publisher = Told(), Told()
    world.location.sinks.append(sink)
    world.location.publishers.append(publisher)
    world.send(register(cseq=1, expires=600), now=0.0)
    [first] = world.location.lookup("alice", 0.0)
    assert [kind for kind, _, _ in sink.heard] == ["saved"]

    response = world.send(register(cseq=2, expires=600), now=300.0)

    assert response.status == 200
    assert contact_values(response) == ["<sip:alice@203.0.113.5:5060>;expires=600"]
    [binding] = world.location.lookup("alice", 300.0)
    assert binding is first  # the same object, its times moved
    assert (binding.expires_at, binding.cseq, binding.refreshed_at) == (900.0, 2, WALL + 300.0)
    assert binding.expires_wall == WALL + 900.0  # what the console and the store show
    assert len(sink.heard) == 1 and world.location.pending == 1
    assert world.location.flush() == 1
    assert sink.heard[1] == ("saved", binding, 900.0)
    assert publisher.heard[1] == ("saved", binding, 900.0)
    assert world.location.flush() == 0  # told once
    assert isinstance(world.events()[-1], ContactRefreshed)


def test_a_refresh_from_another_flow_replaces_the_binding_at_once(world: World) -> None:
    sink = Told()
    world.location.sinks.append(sink)
    world.send(register(cseq=1), now=0.0)
    [first] = world.location.lookup("alice", 0.0)

    world.send(register(cseq=2), flow=udp(("203.0.113.5", 5062)), now=10.0)

    [binding] = world.location.lookup("alice", 10.0)
    assert binding is not first and binding.flow.remote == ("203.0.113.5", 5062)
    assert [kind for kind, _, _ in sink.heard] == ["saved", "saved"]
    assert world.location.pending == 0


def test_a_new_call_id_or_user_agent_is_not_a_plain_refresh(world: World) -> None:
    world.send(register(cseq=1), now=0.0)
    [first] = world.location.lookup("alice", 0.0)
    world.send(register(cseq=1, call_id="rebooted@phone"), now=5.0)
    [second] = world.location.lookup("alice", 5.0)
    assert second is not first and second.call_id == "rebooted@phone"
    world.send(register(cseq=2, call_id="rebooted@phone"), now=6.0)
    assert world.location.lookup("alice", 6.0) == [second]


def test_a_refresh_to_a_shorter_expiry_expires_at_the_shorter_time(world: World) -> None:
    world.send(register(cseq=1, expires=3600), now=0.0)
    world.send(register(cseq=2, expires=60), now=10.0)
    assert world.registrar.expire(69.9) == []
    assert len(world.registrar.expire(70.0)) == 1
    assert world.location.flush() == 0  # expired: its removal was told, not a save


def test_a_binding_refreshed_in_place_many_times_expires_once_at_its_last_time(
    world: World,
) -> None:
    for cseq in range(1, 6):
        world.send(register(cseq=cseq, expires=60), now=cseq * 30.0)
    assert world.registrar.expire(209.9) == []
    [expired] = world.registrar.expire(210.0)
    assert expired.cseq == 5
    assert world.registrar.expire(10_000.0) == []


def test_a_binding_removed_after_a_refresh_is_not_flushed(world: World) -> None:
    sink = Told()
    world.location.sinks.append(sink)
    world.send(register(cseq=1), now=0.0)
    world.send(register(cseq=2), now=1.0)
    world.send(register(contacts=("<sip:alice@203.0.113.5:5060>;expires=0",), cseq=3), now=2.0)
    assert world.location.flush() == 0
    assert [kind for kind, _, _ in sink.heard] == ["saved", "removed"]


def test_lookup_hides_an_expired_contact_before_the_sweep(world: World) -> None:
    world.send(register(expires=60), now=0.0)
    assert world.location.lookup("alice", 60.0) == []
    assert len(world.location) == 1  # still held until expire() runs


# -- NAT -------------------------------------------------------------------------------------
def test_private_via_from_a_public_source_is_nat_and_targets_the_source(world: World) -> None:
    source = Flow("udp", ("203.0.113.5", 40_000), LOCAL)
    request = register(via="192.168.1.10:5060", contacts=("<sip:alice@192.168.1.10:5060>",))
    world.send(request, source)

    [binding] = world.location.lookup("alice", 0.0)
    assert binding.behind_nat
    target = binding.target()
    assert target.request_uri == "sip:alice@192.168.1.10:5060"
    assert target.flow == source
    [event] = world.events()
    assert isinstance(event, ContactRegistered) and event.behind_nat


def test_via_matching_the_source_with_another_contact_host_is_third_party(world: World) -> None:
    request = register(contacts=("<sip:alice@192.0.2.77:5070;transport=tcp>",))
    world.send(request, udp())

    [binding] = world.location.lookup("alice", 0.0)
    assert not binding.behind_nat
    target = binding.target()
    assert target.request_uri == "sip:alice@192.0.2.77:5070;transport=tcp"
    assert target.flow == Flow("tcp", ("192.0.2.77", 5070), LOCAL)


def test_private_contact_from_a_public_source_is_nat_even_when_via_matches(world: World) -> None:
    world.send(register(contacts=("<sip:alice@10.1.2.3:5060>",)), udp())
    [binding] = world.location.lookup("alice", 0.0)
    assert binding.behind_nat
    assert binding.target().flow == udp()


def test_a_phone_on_the_servers_lan_is_not_nat(world: World) -> None:
    lan = ("192.168.1.10", 5060)
    world.send(register(via="192.168.1.10:5060", contacts=("<sip:alice@192.168.1.10>",)), udp(lan))
    [binding] = world.location.lookup("alice", 0.0)
    assert not binding.behind_nat
    assert binding.target().flow == Flow("udp", lan, LOCAL)


@pytest.mark.parametrize(
    ("via", "transport", "source", "expected"),
    [
        ("203.0.113.5:5060", "udp", ("203.0.113.5", 61_000), True),  # NAT rewrote the port
        ("203.0.113.5", "udp", ("203.0.113.5", 5060), False),  # default port 5060
        ("203.0.113.5:5060", "tcp", ("203.0.113.5", 51_234), False),  # TCP: ephemeral port
        ("[2001:db8::5]:5060", "udp", ("2001:db8:0::5", 5060), False),  # same address
        ("phone.example.com:5060", "udp", ("203.0.113.5", 5060), True),  # can't be compared
    ],
)
def test_nat_detection_on_via_sent_by(
    via: str, transport: str, source: tuple[str, int], expected: bool
) -> None:
    top_via = parse_via(f"SIP/2.0/{transport.upper()} {via};branch=z9hG4bK1;rport")
    contact = parse_uri("sip:alice@198.51.100.20")
    assert isinstance(contact, SipUri)
    assert detect_nat(top_via, contact, Flow(transport, source, LOCAL)) is expected


def test_received_and_rport_stamped_by_the_route_do_not_hide_nat() -> None:
    top_via = parse_via(
        "SIP/2.0/UDP 192.168.1.10:5060;branch=z9hG4bK1;rport=40000;received=203.0.113.5"
    )
    contact = parse_uri("sip:alice@192.168.1.10")
    assert isinstance(contact, SipUri)
    assert detect_nat(top_via, contact, Flow("udp", ("203.0.113.5", 40_000), LOCAL))


# -- TCP and RFC 5626 outbound ---------------------------------------------------------------
def test_a_tcp_contact_is_reached_over_its_connection(world: World) -> None:
    flow = Flow("tcp", ("203.0.113.5", 51_234), LOCAL, connection_id=7)
    request = register(transport="TCP", contacts=("<sip:alice@203.0.113.5:5060;transport=tcp>",))
    world.send(request, flow)

    [binding] = world.location.lookup("alice", 0.0)
    assert not binding.behind_nat
    assert binding.target().flow == flow


OUTBOUND_CONTACT = '<sip:alice@192.168.1.10:5060;transport=tcp;ob>;+sip.instance="<urn:uuid:00000000-0000-1000-8000-000A95A0E128>";reg-id=1'  # noqa: E501
INSTANCE = "<urn:uuid:00000000-0000-1000-8000-000A95A0E128>"


def test_outbound_reg_id_binds_the_flow_and_requires_outbound(world: World) -> None:
    flow = Flow("tcp", ("203.0.113.5", 51_234), LOCAL, connection_id=3)
    request = register(
        transport="TCP",
        via="192.168.1.10:5060",
        contacts=(OUTBOUND_CONTACT,),
        extra=("Supported: path, outbound",),
    )
    response = world.send(request, flow)

    assert response.status == 200
    assert response.headers.get("require") == "outbound"
    assert contact_values(response) == [
        f'<sip:alice@192.168.1.10:5060;transport=tcp;ob>;expires=3600;+sip.instance="{INSTANCE}"'
        ";reg-id=1"
    ]
    [binding] = world.location.lookup("alice", 0.0)
    assert binding.outbound
    assert (binding.instance_id, binding.reg_id) == (INSTANCE, 1)
    assert binding.target().flow == flow


def test_outbound_flow_replaced_by_a_new_registration_of_the_same_instance(world: World) -> None:
    first = Flow("tcp", ("203.0.113.5", 51_234), LOCAL, connection_id=3)
    second = Flow("tcp", ("203.0.113.5", 52_000), LOCAL, connection_id=9)
    world.send(register(contacts=(OUTBOUND_CONTACT,), extra=("Supported: outbound",)), first)
    world.events()

    moved = OUTBOUND_CONTACT.replace("192.168.1.10:5060", "192.168.1.10:5090")
    request = register(call_id="after-reboot", contacts=(moved,), extra=("Supported: outbound",))
    world.send(request, second, now=5.0)

    [binding] = world.location.lookup("alice", 5.0)
    assert binding.flow == second
    assert binding.contact == "sip:alice@192.168.1.10:5090;transport=tcp;ob"
    events = world.events()
    assert [type(event) for event in events] == [ContactUnregistered, ContactRegistered]
    assert isinstance(events[0], ContactUnregistered) and events[0].reason == "replaced"


def test_reg_id_without_supported_outbound_is_only_an_instance(world: World) -> None:
    response = world.send(register(contacts=(OUTBOUND_CONTACT,)))
    assert response.headers.get("require") is None
    [binding] = world.location.lookup("alice", 0.0)
    assert (binding.instance_id, binding.reg_id, binding.outbound) == (INSTANCE, None, False)


def test_two_reg_id_contacts_in_one_register_are_400(world: World) -> None:
    second = OUTBOUND_CONTACT.replace("reg-id=1", "reg-id=2").replace("5060", "5062")
    request = register(contacts=(OUTBOUND_CONTACT, second), extra=("Supported: outbound",))
    assert world.send(request).status == 400


def test_path_is_stored_echoed_and_used_as_the_route(world: World) -> None:
    edge = Flow("udp", ("192.0.2.50", 5060), LOCAL)
    request = register(
        via="192.0.2.50:5060",
        contacts=("<sip:alice@10.0.0.8:5060>",),
        extra=("Path: <sip:edge.example.com;lr;ob>", "Supported: path"),
    )
    response = world.send(request, edge)

    assert response.headers.get_all("path") == ["<sip:edge.example.com;lr;ob>"]
    [binding] = world.location.lookup("alice", 0.0)
    target = binding.target()
    assert target.route == ("<sip:edge.example.com;lr;ob>",)
    assert target.flow == edge


def test_outbound_through_a_proxy_without_ob_is_439(world: World) -> None:
    request = register(
        contacts=(OUTBOUND_CONTACT,),
        extra=("Path: <sip:edge.example.com;lr>", "Supported: path, outbound"),
    )
    response = world.send(request)
    assert (response.status, response.reason) == (439, "First Hop Lacks Outbound Support")
    assert len(world.location) == 0


def test_answers_carry_the_to_tag_the_route_gives(world: World) -> None:
    ok = world.registrar.register(register(), "alice", udp(), 0.0, wall=WALL, to_tag="pbx1")
    assert ok.status == 200 and ok.to_tag == "pbx1"
    again = world.registrar.register(register(cseq=1), "alice", udp(), 1.0, wall=WALL, to_tag="t2")
    assert again.status == 500 and again.to_tag == "t2"  # the same CSeq again: out of order
    assert world.send(register(cseq=2), now=2.0).to_tag is None


def test_refreshes_alone_pass_the_limits_a_user_already_exceeds() -> None:
    world = World(max_contacts=2, max_contacts_per_user=2)
    two = ("<sip:alice@203.0.113.5:5060>", "<sip:alice@203.0.113.5:5062>")
    assert world.send(register(contacts=two), now=0.0).status == 200
    world.location.max_contacts = 1  # limits lowered under a full table
    world.location.settings = replace(world.location.settings, max_contacts_per_user=1)
    world.registrar.settings = world.location.settings
    refreshed = world.send(register(contacts=two, cseq=2), now=10.0)
    assert refreshed.status == 200
    assert len(contact_values(refreshed)) == 2
    grown = ("<sip:alice@203.0.113.5:5064>",)
    assert world.send(register(contacts=grown, cseq=3), now=20.0).status == 403


@pytest.mark.parametrize(
    "other",
    [
        Flow("udp", PHONE, LOCAL),
        Flow("udp", PHONE, LOCAL, None),
        Flow("tcp", PHONE, LOCAL),
        Flow("udp", (PHONE[0], PHONE[1] + 1), LOCAL),
        Flow("udp", ("203.0.113.6", PHONE[1]), LOCAL),
        Flow("udp", PHONE, (LOCAL[0], 5080)),
        Flow("udp", PHONE, LOCAL, 7),
    ],
)
def test_same_flow_is_flow_equality(other: Flow) -> None:
    held = udp()
    assert _same_flow(held, other) == (held == other)
    assert _same_flow(held, held)
