"""Flood detection: the sliding-window counter and the limits `Security.admit` applies.

All on a fake clock: `now` is just a number the test moves.
"""

from __future__ import annotations

import pytest

from core.events import EventBus, SecurityEvent, SourceBanned, SourceUnbanned
from core.security.flood import FloodDetector
from core.security.guard import Security, own_addresses_for
from core.settings import SecuritySettings

FLOODER = "203.0.113.9"


def feed_events(bus: EventBus) -> list[object]:
    events, _, _ = bus.feed.read_since(0)
    return events


def send(security: Security, ip: str, count: int, start: float, spacing: float) -> list[bool]:
    return [security.admit(ip, start + i * spacing) for i in range(count)]


# -- the detector ------------------------------------------------------------------------
def test_estimate_is_zero_while_clearly_under_the_limit() -> None:
    detector = FloodDetector(window=2.0, base_limit=60, max_tracked=1_000)
    assert [detector.hit("a", i * 0.01) for i in range(60)] == [0.0] * 60
    assert detector.hit("a", 0.6) == 61.0


def test_a_burst_across_a_slot_boundary_is_still_counted() -> None:
    # 41 messages at the end of one slot and 40 at the start of the next: 81 within 0.2 s.
    detector = FloodDetector(window=2.0, base_limit=60, max_tracked=1_000)
    detector.hit("a", 0.0)  # opens the source's first slot, ending at 2.0
    for i in range(40):
        detector.hit("a", 1.9 + i * 0.0025)
    estimates = [detector.hit("a", 2.0 + i * 0.0025) for i in range(40)]
    assert estimates[-1] > 60  # the previous slot still weighs ~0.95
    assert estimates[-1] == pytest.approx(40 + 41 * (4.0 - 2.0975) / 2.0)


def test_previous_slot_weight_fades_and_a_gap_forgets_everything() -> None:
    detector = FloodDetector(window=2.0, base_limit=10, max_tracked=1_000)
    for _ in range(30):
        detector.hit("a", 0.0)
    # At 3.0 the 30 old hits lie in the previous slot, which is half inside the window.
    assert detector.hit("a", 3.0) == pytest.approx(1 + 30 * 0.5)
    # Two windows of silence: nothing is remembered.
    assert detector.hit("a", 10.0) == 0.0


def test_tracked_sources_stay_bounded_and_the_least_recent_goes_first() -> None:
    detector = FloodDetector(window=2.0, base_limit=60, max_tracked=100)
    for i in range(10_000):
        detector.hit("busy", i * 1e-6)
        detector.hit(f"10.0.{i // 256}.{i % 256}", i * 1e-6)
        assert detector.tracked <= 100
    # "busy" sent 10,000 messages in 10 ms and was never evicted: its count is all there.
    assert detector.hit("busy", 0.01) == 10_001.0


def test_sweep_forgets_sources_whose_counts_no_longer_matter() -> None:
    detector = FloodDetector(window=2.0, base_limit=60, max_tracked=100)
    detector.hit("old", 0.0)
    detector.hit("recent", 3.0)
    assert detector.sweep(4.5) == 1  # "old": slot ended at 2.0, irrelevant after 4.0
    assert detector.tracked == 1


# -- limits and bans through Security.admit ------------------------------------------------
@pytest.fixture
def bus() -> EventBus:
    return EventBus()


def test_flood_is_banned_then_the_ban_expires(bus: EventBus) -> None:
    settings = SecuritySettings()
    security = Security(settings, bus, wall_clock=lambda: 1_800_000_000.0)
    verdicts = send(security, FLOODER, 61, start=100.0, spacing=0.01)
    assert verdicts == [True] * 60 + [False]
    assert security.admit(FLOODER, 101.0) is False  # banned: dropped before parsing
    security_events = [
        e for e in feed_events(bus) if isinstance(e, SecurityEvent) and "banned" in e.action
    ]
    assert [e.action for e in security_events] == ["flood-banned", "banned-dropped"]
    assert security_events[:1] == [  # the ban: one event for one fact
        SourceBanned(
            action="flood-banned",
            source=FLOODER,
            detail="61 messages in 2s (limit 60)",
            count=61,
            until=1_800_000_600.0,
            reason="flood",
            at=security_events[0].at,
        )
    ]
    assert security.stats.flood_bans == 1

    # Lazily noticed by the next packet once flood_ban_seconds have passed.
    assert security.admit(FLOODER, 100.6 + settings.flood_ban_seconds) is True
    unbanned = [e for e in feed_events(bus) if isinstance(e, SourceUnbanned)]
    assert [(e.source, e.detail) for e in unbanned] == [(FLOODER, "expired")]
    assert security.bans(100.6 + settings.flood_ban_seconds) == []


def test_a_phones_normal_chatter_never_trips_the_limit(bus: EventBus) -> None:
    """One hour of a chatty phone: REGISTER every 60 s with its digest round, OPTIONS
    keep-alives every 15 s, answers to our NAT pings every 30 s, a call every 5 minutes
    (INVITE, 407, ACK, INVITE again, ACK, 200 to re-INVITE, BYE) — all from one address."""
    security = Security(SecuritySettings(), bus)
    phone = "198.51.100.20"
    times: list[float] = []
    for second in range(3_600):
        if second % 60 == 0:
            times += [second, second + 0.05]
        if second % 15 == 0:
            times.append(second + 0.5)
        if second % 30 == 0:
            times.append(second + 0.7)
        if second % 300 == 0:
            times += [second + 0.1 * i for i in range(8)]
    assert all(security.admit(phone, now) for now in sorted(times))
    assert security.bans(3_600.0) == []


def test_the_bench_legit_source_is_not_banned(bus: EventBus) -> None:
    # bench.sh's legit source: 2 REGISTER/s with authentication (4 requests/s).
    security = Security(SecuritySettings(), bus)
    assert all(security.admit("127.0.0.4", i * 0.25) for i in range(4 * 60))


def test_authenticated_source_gets_the_higher_limit_for_a_while(bus: EventBus) -> None:
    settings = SecuritySettings()
    security = Security(settings, bus)
    office = "198.51.100.7"
    security.auth_succeeded(office, 0.0)
    verdicts = send(security, office, settings.flood_limit_authenticated + 1, 1.0, 0.001)
    assert verdicts == [True] * settings.flood_limit_authenticated + [False]

    # Once the memory has lapsed (and been swept), the base limit applies again.
    other = "198.51.100.8"
    security.auth_succeeded(other, 10.0)
    later = 10.0 + settings.authenticated_memory_seconds + 1
    security.expire(later)
    verdicts = send(security, other, settings.flood_limit + 1, later, 0.001)
    assert verdicts[-1] is False


def test_authenticated_memory_is_bounded(bus: EventBus) -> None:
    settings = SecuritySettings(max_authenticated_sources=100)
    security = Security(settings, bus)
    for i in range(1_000):
        security.auth_succeeded(f"10.1.{i // 256}.{i % 256}", float(i))
    oldest, newest = "10.1.0.0", "10.1.3.231"  # the 1st and the 1,000th
    assert send(security, newest, 200, 2_000.0, 0.001) == [True] * 200
    assert send(security, oldest, 61, 2_000.0, 0.001)[-1] is False


def test_carrier_gets_the_carrier_limit_and_is_throttled_never_banned(bus: EventBus) -> None:
    settings = SecuritySettings()
    security = Security(settings, bus)
    security.set_carrier_networks(["198.51.100.0/24"])
    verdicts = send(security, "198.51.100.99", settings.flood_limit_carrier + 1, 0.0, 0.0001)
    assert verdicts == [True] * settings.flood_limit_carrier + [False]
    assert security.bans(1.0) == []  # a carrier's excess is dropped, never banned
    assert security.stats.carrier_drops == 1


def test_own_address_is_exempt_but_other_loopback_addresses_are_not(bus: EventBus) -> None:
    own = own_addresses_for(["0.0.0.0"])
    assert own == {"127.0.0.1", "::1"}
    security = Security(SecuritySettings(), bus, own_addresses=own)
    assert all(send(security, "127.0.0.1", 5_000, 0.0, 0.0001))  # the bench's load source
    assert all(send(security, "::ffff:127.0.0.1", 500, 0.0, 0.0001))  # dual-stack socket
    assert all(send(security, "::1", 500, 0.0, 0.0001))
    assert send(security, "127.0.0.3", 61, 0.0, 0.0001)[-1] is False  # the bench's flooder
    assert [b.ip for b in security.bans(1.0)] == ["127.0.0.3"]


def test_specific_listen_address_is_own_and_loopback_is_not(bus: EventBus) -> None:
    own = own_addresses_for(["192.0.2.1", "[2001:db8::1]"])
    assert own == {"192.0.2.1", "2001:db8::1"}
    security = Security(SecuritySettings(), bus, own_addresses=own)
    assert all(send(security, "192.0.2.1", 500, 0.0, 0.0001))
    assert send(security, "127.0.0.1", 61, 0.0, 0.0001)[-1] is False


def test_allow_listed_range_is_never_rate_limited(bus: EventBus) -> None:
    settings = SecuritySettings(allow_list=("192.0.2.0/24", "2001:db8::/32"))
    security = Security(settings, bus)
    assert all(send(security, "192.0.2.77", 5_000, 0.0, 0.0001))
    assert all(send(security, "2001:db8::5", 5_000, 0.0, 0.0001))
    assert send(security, "192.0.3.1", 61, 0.0, 0.0001)[-1] is False


def test_a_flood_of_spoofed_sources_keeps_memory_bounded(bus: EventBus) -> None:
    """200,000 distinct source addresses in 0.2 s against a cap of 1,000 (200 times the cap;
    a million against the default 100,000 is only 10 times), with a real flooder among
    them: the counter table never exceeds its cap, and the flooder is still banned."""
    settings = SecuritySettings(max_tracked_sources=1_000)
    security = Security(settings, bus)
    admit = security.admit
    largest = 0
    flooder_dropped = 0
    for i in range(200_000):
        now = i * 1e-6
        admit(f"10.{i >> 16}.{(i >> 8) & 255}.{i & 255}", now)
        if i % 100 == 0:
            flooder_dropped += not admit(FLOODER, now)  # 10,000 messages/s
            largest = max(largest, security.tracked_sources)
    assert largest <= 1_000
    assert security.tracked_sources <= 1_000
    assert [b.ip for b in security.bans(1.0)] == [FLOODER]
    assert flooder_dropped == 2_000 - 60
