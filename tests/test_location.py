"""The location service and `Binding.target()`: in memory, on a fake clock, no sockets."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from core.events import ContactExpired, ContactUnregistered, EventBus
from core.net.flow import Flow
from core.registrar.location import (
    Binding,
    LocationFull,
    LocationService,
    contact_key,
    format_socket,
    parse_socket,
)
from core.settings import RegistrarSettings
from core.sip.uri import SipUri, parse_uri
from core.store.database import Store
from core.store.rows import BindingRow
from core.store.sinks import BindingWriter

LOCAL = ("198.51.100.1", 5060)
WALL = 1_700_000_000.0


def sip(text: str) -> SipUri:
    uri = parse_uri(text)
    assert isinstance(uri, SipUri)
    return uri


def binding(
    contact: str = "sip:alice@203.0.113.5:5060",
    *,
    user: str = "alice",
    flow: Flow | None = None,
    now: float = 0.0,
    expires: float = 3600.0,
    **fields: object,
) -> Binding:
    return Binding(
        user=user,
        contact=contact,
        uri=sip(contact),
        flow=flow or Flow("udp", ("203.0.113.5", 5060), LOCAL),
        expires_at=now + expires,
        updated_at=now,
        registered_at=WALL + now,
        refreshed_at=WALL + now,
        **fields,  # type: ignore[arg-type]
    )


class RecordingSink:
    """A real BindingSink that remembers what it was told, in order."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str]] = []

    def binding_saved(self, binding: Binding) -> None:
        self.calls.append(("saved", binding.contact))

    def binding_removed(self, binding: Binding) -> None:
        self.calls.append(("removed", binding.contact))


@pytest.fixture
def bus() -> EventBus:
    return EventBus()


@pytest.fixture
def location(bus: EventBus) -> LocationService:
    return LocationService(RegistrarSettings(), bus)


# -- reading ---------------------------------------------------------------------------------
def test_a_user_going_from_one_contact_to_several_and_back(location: LocationService) -> None:
    """One binding is held without a list, several in one: the order first saved, look-ups,
    replacements, removals and the per-user limit are the same either way."""
    first = binding("sip:alice@192.0.2.1")
    second = binding("sip:alice@192.0.2.2", now=1.0)
    third = binding("sip:alice@192.0.2.3", now=2.0)
    for each in (first, second, third):
        location.save(each)
    assert location.bindings_of("alice") == [first, second, third]
    assert location.unregister(second)
    assert location.bindings_of("alice") == [first, third]
    assert location.unregister(first)
    assert location.bindings_of("alice") == [third]
    assert location.get("alice", third.key) is third
    assert location.get("alice", first.key) is None
    assert not location.unregister(first)
    newer = binding("sip:alice@192.0.2.3", now=3.0)
    assert location.save(newer) is third  # the single one replaced in place
    assert location.bindings_of("alice") == [newer]
    assert location.lookup("alice", 10.0) == [newer]
    assert location.lookup("alice", 4000.0) == []
    location.save(first)
    assert location.bindings_of("alice") == [newer, first]
    assert (len(location), location.user_count) == (2, 1)
    assert location.remove_user("alice") == 2
    assert (len(location), location.user_count, location.bindings_of("alice")) == (0, 0, [])

    single = LocationService(RegistrarSettings(max_contacts_per_user=1), EventBus())
    single.save(first)
    with pytest.raises(LocationFull):
        single.save(second)
    single.save(binding("sip:alice@192.0.2.1", now=5.0))  # the same contact: a replacement
    assert len(single) == 1


def test_a_key_shares_the_users_name_and_the_source_address() -> None:
    """A binding's key holds the strings the binding holds anyway when they are equal, and
    is still equal to the key of the Contact alone."""
    flow = Flow("udp", ("192.0.2.7", 5062), LOCAL)
    made = binding("sip:alice@192.0.2.7:5062;transport=UDP", flow=flow, user="".join("alice"))
    assert made.key == contact_key(sip("sip:alice@192.0.2.7:5062;transport=udp"))
    assert made.key[2] is made.user
    assert made.key[4] is flow.remote[0]
    elsewhere = binding("sip:Alice@192.0.2.8:5070", flow=flow)
    assert elsewhere.key == contact_key(sip("sip:Alice@192.0.2.8:5070"))


def test_lookup_orders_by_q_then_newest_and_skips_expired(location: LocationService) -> None:
    location.save(binding("sip:alice@192.0.2.1", now=0.0, q=0.5))
    location.save(binding("sip:alice@192.0.2.2", now=10.0))
    location.save(binding("sip:alice@192.0.2.3", now=20.0))
    location.save(binding("sip:alice@192.0.2.4", now=0.0, expires=30.0))

    hosts = [b.uri.host for b in location.lookup("alice", 40.0)]

    assert hosts == ["192.0.2.3", "192.0.2.2", "192.0.2.1"]
    assert location.lookup("bob", 40.0) == []


def test_counts_and_all_bindings_for_the_console(location: LocationService) -> None:
    location.save(binding("sip:bob@192.0.2.9", user="bob"))
    location.save(binding("sip:alice@192.0.2.1"))
    location.save(binding("sip:alice@192.0.2.2", now=5.0))

    assert (len(location), location.contact_count, location.user_count) == (3, 3, 2)
    assert [b.contact for b in location.all_bindings()] == [
        "sip:alice@192.0.2.2",
        "sip:alice@192.0.2.1",
        "sip:bob@192.0.2.9",
    ]


def test_contact_keys_follow_uri_comparison_rules() -> None:
    base = contact_key(sip("sip:alice@Host.Example;transport=TCP"))
    assert base == contact_key(sip("sip:alice@host.example;transport=tcp;foo=bar"))
    assert base != contact_key(sip("sip:alice@host.example:5060;transport=tcp"))  # port written
    assert base != contact_key(sip("sip:Alice@host.example;transport=tcp"))  # user is exact
    assert base != contact_key(sip("sip:alice@host.example;transport=udp"))
    instance = contact_key(sip("sip:alice@192.0.2.1"), "<urn:uuid:1>")
    assert instance == contact_key(sip("sip:alice@192.0.2.200:5099"), "<urn:uuid:1>")
    assert instance != contact_key(sip("sip:alice@192.0.2.1"), "<urn:uuid:1>", 1)


# -- bounds ----------------------------------------------------------------------------------
def test_save_refuses_a_new_contact_beyond_the_per_user_limit(bus: EventBus) -> None:
    location = LocationService(replace(RegistrarSettings(), max_contacts_per_user=2), bus)
    location.save(binding("sip:alice@192.0.2.1"))
    location.save(binding("sip:alice@192.0.2.2"))

    with pytest.raises(LocationFull):
        location.save(binding("sip:alice@192.0.2.3"))
    location.save(binding("sip:alice@192.0.2.2", now=10.0))  # a refresh still fits
    location.save(binding("sip:bob@192.0.2.3", user="bob"))
    assert len(location) == 3


def test_save_refuses_beyond_the_global_cap(bus: EventBus) -> None:
    location = LocationService(RegistrarSettings(), bus, max_contacts=2)
    location.save(binding("sip:alice@192.0.2.1"))
    location.save(binding("sip:bob@192.0.2.2", user="bob"))
    assert location.room == 0
    with pytest.raises(LocationFull):
        location.save(binding("sip:carol@192.0.2.3", user="carol"))


def test_many_refreshes_do_not_grow_the_expiry_schedule(location: LocationService) -> None:
    for second in range(5_000):
        location.save(binding(now=float(second)))
    assert len(location) == 1
    assert location._scheduled <= 2 * len(location) + 1_025
    [expired] = location.expire(4_999.0 + 3600.0)
    assert expired.updated_at == 4_999.0


def test_expiry_by_the_schedule_of_seconds(location: LocationService, bus: EventBus) -> None:
    """Within one second, only what is due goes, earliest first whatever the order saved; a
    binding refreshed in place to later moves on; a time that is not finite never comes."""
    late = binding("sip:alice@192.0.2.1", expires=10.9)
    early = binding("sip:bob@192.0.2.2", user="bob", expires=10.2)
    tied = binding("sip:carol@192.0.2.3", user="carol", expires=10.2)
    moved = binding("sip:dave@192.0.2.4", user="dave", expires=10.5)
    never = binding("sip:erin@192.0.2.5", user="erin", expires=float("inf"))
    for each in (late, early, tied, moved, never):
        location.save(each)
    location.refresh(moved, 25.0, 1.0, WALL + 1.0, 2)
    events: list[object] = []
    bus.subscribe(events.append)

    assert location.expire(9.99) == []
    assert location.expire(10.5) == [early, tied]
    assert location.expire(10.5) == []
    assert location.expire(11.0) == [late]
    assert location.expire(24.9) == []
    assert location.expire(1e300) == [moved]
    assert [event.user for event in events if isinstance(event, ContactExpired)] == [
        "bob",
        "carol",
        "alice",
        "dave",
    ]
    assert location.bindings_of("erin") == [never]


# -- removing --------------------------------------------------------------------------------
def test_admin_remove_emits_unregistered_and_tells_the_sink(
    location: LocationService, bus: EventBus
) -> None:
    sink = RecordingSink()
    location.sinks.append(sink)
    location.save(binding("sip:alice@192.0.2.1;transport=udp"))
    location.save(binding("sip:alice@192.0.2.2"))

    removed = location.remove("alice", "sip:alice@192.0.2.1;transport=UDP")  # equal URI

    assert removed == 1
    assert [b.contact for b in location.lookup("alice", 0.0)] == ["sip:alice@192.0.2.2"]
    assert sink.calls[-1] == ("removed", "sip:alice@192.0.2.1;transport=udp")
    [event] = bus.feed.read_since(0)[0]
    assert event == ContactUnregistered(
        "alice", "sip:alice@192.0.2.1;transport=udp", None, "admin", at=event.at
    )
    assert location.remove("alice", "sip:alice@192.0.2.99") == 0


def test_remove_user_drops_every_contact(location: LocationService) -> None:
    location.save(binding("sip:alice@192.0.2.1"))
    location.save(binding("sip:alice@192.0.2.2"))
    assert location.remove_user("alice") == 2
    assert (len(location), location.user_count) == (0, 0)


def test_expire_emits_contact_expired_and_tells_the_sink(
    location: LocationService, bus: EventBus
) -> None:
    sink = RecordingSink()
    location.sinks.append(sink)
    location.save(binding("sip:alice@192.0.2.1", expires=60.0))
    location.save(binding("sip:alice@192.0.2.2", expires=120.0))

    assert [b.contact for b in location.expire(60.0)] == ["sip:alice@192.0.2.1"]

    assert sink.calls == [
        ("saved", "sip:alice@192.0.2.1"),
        ("saved", "sip:alice@192.0.2.2"),
        ("removed", "sip:alice@192.0.2.1"),
    ]
    [event] = bus.feed.read_since(0)[0]
    assert isinstance(event, ContactExpired) and event.contact == "sip:alice@192.0.2.1"


def test_a_new_contact_uri_for_the_same_instance_replaces_the_stored_row(
    location: LocationService,
) -> None:
    sink = RecordingSink()
    location.sinks.append(sink)
    location.save(binding("sip:alice@192.0.2.1:5060", instance_id="<urn:uuid:1>"))
    previous = location.save(binding("sip:alice@192.0.2.1:5090", instance_id="<urn:uuid:1>"))

    assert previous is not None and previous.contact == "sip:alice@192.0.2.1:5060"
    assert len(location) == 1
    assert sink.calls[1:] == [
        ("removed", "sip:alice@192.0.2.1:5060"),
        ("saved", "sip:alice@192.0.2.1:5090"),
    ]


def test_publishers_hear_only_of_this_process_own_changes(location: LocationService) -> None:
    sink, publisher = RecordingSink(), RecordingSink()
    location.sinks.append(sink)
    location.publishers.append(publisher)
    own = binding("sip:alice@192.0.2.1")
    adopted = binding("sip:alice@192.0.2.2")  # another process of the server saved it
    location.save(own)
    location.adopt(adopted)
    location.forget(adopted.user, adopted.key)
    location.remove("alice", "sip:alice@192.0.2.1")
    assert sink.calls == [
        ("saved", "sip:alice@192.0.2.1"),
        ("saved", "sip:alice@192.0.2.2"),
        ("removed", "sip:alice@192.0.2.2"),
        ("removed", "sip:alice@192.0.2.1"),
    ]
    assert publisher.calls == [("saved", "sip:alice@192.0.2.1"), ("removed", "sip:alice@192.0.2.1")]


# -- restore ---------------------------------------------------------------------------------
def test_restore_skips_expired_and_is_silent(location: LocationService, bus: EventBus) -> None:
    sink = RecordingSink()
    location.sinks.append(sink)
    live = binding("sip:alice@192.0.2.1", now=0.0, expires=3600.0)
    old = binding("sip:alice@192.0.2.2", now=0.0, expires=60.0)

    assert location.restore([live, old], now=100.0) == 1

    assert location.lookup("alice", 100.0) == [live]
    assert (sink.calls, bus.feed.read_since(0)[0]) == ([], [])
    assert location.restores == 1


def test_restore_respects_the_per_user_limit(bus: EventBus) -> None:
    location = LocationService(replace(RegistrarSettings(), max_contacts_per_user=1), bus)
    restored = location.restore(
        [binding("sip:alice@192.0.2.1"), binding("sip:alice@192.0.2.2")], now=0.0
    )
    assert (restored, len(location)) == (1, 1)


def test_rows_round_trip_across_a_restart_on_different_clocks() -> None:
    flow = Flow("tcp", ("203.0.113.5", 51_234), ("2001:db8::1", 5060), connection_id=4)
    original = binding(
        "sip:alice@192.168.1.10:5060;transport=tcp",
        flow=flow,
        now=1_000.0,
        expires=600.0,
        q=0.7,
        call_id="c1",
        cseq=9,
        user_agent="Phone/2",
        behind_nat=True,
        instance_id="<urn:uuid:1>",
        reg_id=2,
        path=("<sip:edge.example;lr>", "<sip:core.example;lr>"),
    )
    original.refreshed_at = WALL + 1_000.0  # refreshed at `now`, first registered at 0
    original.registered_at = WALL
    row = original.to_row()
    assert (row.aor, row.received, row.received_port, row.transport) == (
        "alice",
        "203.0.113.5",
        51_234,
        "tcp",
    )
    assert row.socket == "tcp:[2001:db8::1]:5060"
    assert row.expires_at == WALL + 1_600.0
    assert (row.path, row.registered_at, row.refreshed_at) == (
        ("<sip:edge.example;lr>", "<sip:core.example;lr>"),
        WALL,
        WALL + 1_000.0,
    )

    # After the restart the monotonic clock reads 50 while the wall clock moved on 100 s.
    restored = Binding.from_row(row, now=50.0, wall=WALL + 1_100.0)

    assert restored.expires_at == pytest.approx(550.0)
    assert restored.flow == replace(flow, connection_id=None)  # that connection is gone
    assert restored.key == original.key
    assert (restored.q, restored.call_id, restored.cseq, restored.user_agent) == (
        0.7,
        "c1",
        9,
        "Phone/2",
    )
    assert (restored.behind_nat, restored.instance_id, restored.reg_id) == (
        True,
        "<urn:uuid:1>",
        2,
    )
    # The last refresh was 100 s of wall clock before the restart, so 50 s before monotonic 0.
    assert (restored.registered_at, restored.refreshed_at) == (WALL, WALL + 1_000.0)
    assert restored.updated_at == pytest.approx(-50.0)
    assert restored.path == original.path
    assert restored.to_row() == row


def test_a_contact_registered_through_a_path_is_reached_through_it_after_a_restart() -> None:
    # RFC 3327 §5.3: the edge proxy at 192.0.2.50 forwarded the REGISTER; requests go back
    # through it even though the Contact names a host of its own.
    edge = Flow("udp", ("192.0.2.50", 5060), LOCAL)
    routed = binding("sip:alice@198.51.100.20:5062", flow=edge, path=("<sip:192.0.2.50;lr>",))
    restored = Binding.from_row(routed.to_row(), now=10.0, wall=WALL + 10.0)
    target = restored.target()
    assert (target.flow, target.route) == (edge, ("<sip:192.0.2.50;lr>",))


def test_a_row_without_a_refresh_time_falls_back_to_its_registration() -> None:
    row = replace(binding(now=30.0).to_row(), refreshed_at=0.0)
    restored = Binding.from_row(row, now=30.0, wall=WALL + 30.0)
    assert restored.refreshed_at == WALL + 30.0
    assert restored.expires_wall == pytest.approx(row.expires_at)


def test_restore_takes_store_rows_and_skips_broken_ones(location: LocationService) -> None:
    good = binding("sip:alice@192.0.2.1", now=0.0).to_row()
    broken = replace(good, contact="sip:alice@bad host")
    assert location.restore([good, broken], now=0.0, wall=WALL) == 1
    assert [b.contact for b in location.lookup("alice", 0.0)] == ["sip:alice@192.0.2.1"]


async def test_rows_fit_the_store_location_table() -> None:
    store = await Store.open(":memory:")
    try:
        saved = binding(
            "sip:alice@192.0.2.1",
            now=0.0,
            instance_id="<urn:uuid:1>",
            reg_id=1,
            path=("<sip:edge.example;lr>",),
        )
        saved.refreshed_at = WALL + 600.0
        await store.replace_bindings([saved.to_row()])
        [row] = await store.load_bindings(WALL)
    finally:
        await store.close()
    assert isinstance(row, BindingRow)
    assert row == saved.to_row()
    restored = Binding.from_row(row, now=0.0, wall=WALL)
    assert (restored.path, restored.refreshed_at) == (("<sip:edge.example;lr>",), WALL + 600.0)


async def test_the_pbx_writer_removes_only_the_flow_that_went(tmp_path: Path) -> None:
    # RFC 5626 §4.2: one phone, one Contact URI, two flows (reg-ids) through two edge proxies.
    location = LocationService(RegistrarSettings(), EventBus())
    async with await Store.open(tmp_path / "pbx.db") as store:
        location.sinks.append(BindingWriter(store))
        contact = "sip:alice@192.168.1.10:5060;ob"
        flows = [
            binding(contact, instance_id="<urn:uuid:1>", reg_id=reg_id, path=(f"<sip:{edge};lr>",))
            for reg_id, edge in ((1, "192.0.2.50"), (2, "192.0.2.51"))
        ]
        for flow in flows:
            location.save(flow)
        await store.flush()
        assert [(row.reg_id, row.path) for row in await store.load_bindings()] == [
            (1, ("<sip:192.0.2.50;lr>",)),
            (2, ("<sip:192.0.2.51;lr>",)),
        ]

        assert location.unregister(flows[0])
        await store.flush()
        [kept] = await store.load_bindings()
    assert (kept.contact, kept.reg_id) == (contact, 2)


def test_socket_text_round_trips() -> None:
    assert parse_socket(format_socket("udp", ("192.0.2.1", 5060))) == ("udp", ("192.0.2.1", 5060))
    assert parse_socket("tcp:[::1]:5070") == ("tcp", ("::1", 5070))
    assert parse_socket("") == ("", ("", 0))


# -- target() --------------------------------------------------------------------------------
def test_a_plain_contact_is_reached_at_its_own_address_with_defaults() -> None:
    target = binding("sip:alice@192.0.2.7").target()
    assert target.request_uri == "sip:alice@192.0.2.7"
    assert target.flow == Flow("udp", ("192.0.2.7", 5060), LOCAL)
    assert target.route == ()


@pytest.mark.parametrize(
    ("contact", "expected"),
    [
        ("sips:alice@192.0.2.7", ("tls", ("192.0.2.7", 5061))),
        ("sip:alice@192.0.2.7:5070;transport=TCP", ("tcp", ("192.0.2.7", 5070))),
        ("sip:alice@phone.example.com;maddr=192.0.2.8", ("udp", ("192.0.2.8", 5060))),
        ("sip:alice@phone.example.com;maddr=[2001:db8::8]", ("udp", ("2001:db8::8", 5060))),
        ("sip:alice@phone.example.com", ("udp", ("phone.example.com", 5060))),
    ],
)
def test_contact_uri_decides_transport_host_and_port(
    contact: str, expected: tuple[str, tuple[str, int]]
) -> None:
    flow = binding(contact).target().flow
    assert (flow.transport, flow.remote, flow.connection_id) == (*expected, None)


def test_nated_contact_goes_to_the_source() -> None:
    source = Flow("udp", ("203.0.113.5", 40_000), LOCAL)
    target = binding("sip:alice@192.168.1.10:5060", flow=source, behind_nat=True).target()
    assert (target.request_uri, target.flow) == ("sip:alice@192.168.1.10:5060", source)


def test_tcp_contact_uses_its_connection_only_when_it_names_the_connecting_host() -> None:
    flow = Flow("tcp", ("203.0.113.5", 51_234), LOCAL, connection_id=12)
    same_host = binding("sip:alice@203.0.113.5:5060;transport=tcp", flow=flow)
    other_host = binding("sip:alice@192.0.2.40:5060;transport=tcp", flow=flow)
    assert same_host.target().flow == flow
    assert other_host.target().flow == Flow("tcp", ("192.0.2.40", 5060), LOCAL)


def test_outbound_contact_always_uses_its_flow() -> None:
    flow = Flow("tcp", ("203.0.113.5", 51_234), LOCAL, connection_id=12)
    outbound = binding("sip:alice@192.0.2.40;ob", flow=flow, instance_id="<urn:uuid:1>", reg_id=1)
    assert outbound.outbound
    assert outbound.target().flow == flow
