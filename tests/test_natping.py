"""NAT keep-alive OPTIONS: scheduling, answers and failures on a fake clock, no sockets."""

from __future__ import annotations

from dataclasses import replace

import pytest

from core.cluster.affinity import MAIN, owner_of
from core.events import ContactUnreachable, EventBus
from core.net.flow import Flow
from core.registrar.location import Binding, LocationService
from core.registrar.natping import NatKeepalive
from core.settings import RegistrarSettings
from core.sip.message import Request, Response, make_response
from core.sip.parser import parse_message
from core.sip.uri import SipUri, parse_uri

LOCAL = ("198.51.100.1", 5060)
WALL = 1_700_000_000.0


def nated(
    contact: str = "sip:alice@192.168.1.10:5060",
    *,
    user: str = "alice",
    source: tuple[str, int] = ("203.0.113.5", 40_000),
    now: float = 0.0,
    behind_nat: bool = True,
    **fields: object,
) -> Binding:
    uri = parse_uri(contact)
    assert isinstance(uri, SipUri)
    return Binding(
        user=user,
        contact=contact,
        uri=uri,
        flow=Flow("udp", source, LOCAL),
        expires_at=now + 3600.0,
        updated_at=now,
        registered_at=WALL + now,
        refreshed_at=WALL + now,
        behind_nat=behind_nat,
        **fields,  # type: ignore[arg-type]
    )


class World:
    def __init__(self, **registrar_changes: object) -> None:
        settings = replace(RegistrarSettings(), **registrar_changes)
        self.bus = EventBus()
        self.location = LocationService(settings, self.bus)
        self.keepalive = NatKeepalive(settings, self.location, self.bus, "pbx.test")
        self.location.sinks.append(self.keepalive)

    def unreachable_events(self) -> list[ContactUnreachable]:
        events = self.bus.feed.read_since(0)[0]
        return [event for event in events if isinstance(event, ContactUnreachable)]


@pytest.fixture
def world() -> World:
    return World()


def answer(request: Request, status: int = 200) -> Response:
    return make_response(request, status, to_tag="uas1")


# -- scheduling ------------------------------------------------------------------------------
def test_a_nated_binding_is_pinged_once_per_interval(world: World) -> None:
    binding = nated()
    world.location.save(binding)

    assert world.keepalive.due(29.9) == []
    [(pinged, request)] = world.keepalive.due(30.0)
    assert pinged is binding
    assert world.keepalive.on_response(answer(request), 30.1)
    assert world.keepalive.due(59.9) == []
    assert len(world.keepalive.due(60.0)) == 1


def test_a_binding_not_behind_nat_is_never_pinged(world: World) -> None:
    world.location.save(
        nated("sip:alice@203.0.113.5", source=("203.0.113.5", 5060), behind_nat=False)
    )
    assert world.keepalive.due(10_000.0) == []


def test_the_ping_is_a_well_formed_options_to_the_contact(world: World) -> None:
    world.location.save(nated(path=("<sip:edge.example.com;lr>",)))
    [(_, request)] = world.keepalive.due(30.0)

    parsed = parse_message(request.to_bytes())

    assert isinstance(parsed, Request)
    assert (parsed.method, str(parsed.uri)) == ("OPTIONS", "sip:alice@192.168.1.10:5060")
    assert parsed.headers.get("to") == "<sip:alice@192.168.1.10:5060>"
    assert parsed.from_addr is not None and str(parsed.from_addr.uri) == "sip:ping@pbx.test"
    assert parsed.from_tag
    assert parsed.max_forwards == 70
    assert parsed.cseq is not None and parsed.cseq.method == "OPTIONS"
    assert parsed.headers.get("route") == "<sip:edge.example.com;lr>"
    via = parsed.top_via
    assert via is not None and via.is_rfc3261_branch and via.wants_rport
    assert (via.transport, via.host, via.port) == ("UDP", "198.51.100.1", 5060)


def test_every_ping_has_a_fresh_call_id_and_branch(world: World) -> None:
    world.location.save(nated("sip:alice@192.168.1.10"))
    world.location.save(nated("sip:alice@192.168.1.11"))
    requests = [request for _, request in world.keepalive.due(30.0)]
    assert len({request.call_id for request in requests}) == 2
    assert len({request.top_via.branch for request in requests if request.top_via}) == 2
    # With worker processes, the answers must come back to main, which sent the pings.
    assert all(owner_of(request.to_bytes(), 4) == MAIN for request in requests)


def test_a_re_register_restarts_the_schedule(world: World) -> None:
    world.location.save(nated(now=0.0))
    world.location.save(nated(now=20.0))  # the phone registered again at 20 s
    assert world.keepalive.due(30.0) == []
    assert len(world.keepalive.due(50.0)) == 1


def test_a_removed_binding_is_not_pinged(world: World) -> None:
    binding = nated()
    world.location.save(binding)
    world.location.remove("alice", binding.contact)
    assert world.keepalive.due(30.0) == []


def test_restored_bindings_are_scheduled(world: World) -> None:
    world.keepalive.due(0.0)
    world.location.restore([nated(now=100.0)], now=110.0)
    assert world.keepalive.due(129.0) == []
    assert len(world.keepalive.due(130.0)) == 1


def test_outstanding_pings_are_bounded() -> None:
    settings = RegistrarSettings()
    bus = EventBus()
    location = LocationService(settings, bus)
    keepalive = NatKeepalive(settings, location, bus, "pbx.test", max_outstanding=2)
    location.sinks.append(keepalive)
    for host in range(3):
        location.save(nated(f"sip:alice@192.168.1.{host + 10}"))

    first = keepalive.due(30.0)
    assert (len(first), keepalive.outstanding) == (2, 2)
    assert keepalive.due(31.0) == []
    keepalive.on_response(answer(first[0][1]), 31.5)
    assert len(keepalive.due(32.0)) == 1


# -- answers ---------------------------------------------------------------------------------
@pytest.mark.parametrize("status", [200, 405, 481])
def test_any_answer_counts_as_alive_and_resets_failures(world: World, status: int) -> None:
    binding = nated()
    world.location.save(binding)
    [(_, request)] = world.keepalive.due(30.0)
    binding.ping_failures = 2

    assert world.keepalive.on_response(answer(request, status), 30.2)

    assert (binding.last_pong, binding.ping_failures, binding.reachable) == (30.2, 0, True)
    assert not world.keepalive.on_response(answer(request, status), 30.3)  # already settled


def test_responses_that_are_not_pings_are_left_alone(world: World) -> None:
    world.location.save(nated())
    [(_, request)] = world.keepalive.due(30.0)
    other_branch = answer(request)
    other_branch.headers.set("Via", "SIP/2.0/UDP 198.51.100.1:5060;branch=z9hG4bKother")
    unrelated = answer(request)
    unrelated.headers.set("Call-ID", "somebody-elses-call")

    assert not world.keepalive.on_response(other_branch, 30.1)
    assert not world.keepalive.on_response(unrelated, 30.1)
    assert world.keepalive.outstanding == 1


# -- failures --------------------------------------------------------------------------------
def test_unanswered_pings_flag_the_contact_unreachable_once(world: World) -> None:
    binding = nated()
    world.location.save(binding)

    for second in (30.0, 60.0, 90.0):
        assert len(world.keepalive.due(second)) == 1  # each sent, none answered
    assert world.keepalive.on_timeout(119.0) == [] and binding.reachable
    assert world.keepalive.on_timeout(120.0) == [binding]

    assert (binding.reachable, binding.ping_failures) == (False, 3)
    assert world.location.lookup("alice", 120.0) == [binding]  # still there, but marked
    [event] = world.unreachable_events()
    assert (event.user, event.contact, event.failures) == ("alice", binding.contact, 3)
    world.keepalive.due(150.0)
    world.keepalive.on_timeout(180.0)
    assert len(world.unreachable_events()) == 1  # flagged once, not at every failure


def test_an_answer_clears_the_unreachable_flag(world: World) -> None:
    binding = nated()
    world.location.save(binding)
    for second in (30.0, 60.0, 90.0, 120.0):
        pings = world.keepalive.due(second)
    assert not binding.reachable

    world.keepalive.on_response(answer(pings[0][1]), 121.0)

    assert binding.reachable and binding.ping_failures == 0


def test_a_re_register_clears_the_flag_and_old_pings_do_not_count(world: World) -> None:
    world.location.save(nated(now=0.0))
    for second in (30.0, 60.0, 90.0, 120.0):
        world.keepalive.due(second)
    world.keepalive.due(150.0)  # a ping in flight when the phone registers again
    fresh = nated(now=160.0)
    world.location.save(fresh)

    world.keepalive.on_timeout(180.0)

    assert world.location.lookup("alice", 180.0) == [fresh]
    assert (fresh.reachable, fresh.ping_failures) == (True, 0)


def test_an_answer_to_a_ping_of_a_since_refreshed_binding_still_counts(world: World) -> None:
    world.location.save(nated(now=0.0))
    [(_, request)] = world.keepalive.due(30.0)
    fresh = nated(now=31.0)
    world.location.save(fresh)
    assert world.keepalive.on_response(answer(request), 31.5)
    assert fresh.last_pong == 31.5


def test_next_deadline_names_the_earliest_work(world: World) -> None:
    assert world.keepalive.next_deadline() is None
    world.location.save(nated(now=0.0))
    assert world.keepalive.next_deadline() == 30.0
    world.keepalive.due(30.0)
    assert world.keepalive.next_deadline() == 60.0  # the answer timeout and the next ping


def test_frequent_re_registers_keep_the_schedule_bounded(world: World) -> None:
    for second in range(3_000):
        world.location.save(nated(now=second / 10))
    assert len(world.keepalive._schedule) <= 2 * len(world.location) + 1_025
    assert world.keepalive.due(329.8) == []
    assert len(world.keepalive.due(329.9)) == 1
