"""The ban table: timed bans, two clocks, persistence sink, restore, expiry, bound."""

from __future__ import annotations

import math

import pytest

from core.events import EventBus, SecurityEvent, SourceBanned, SourceUnbanned
from core.security.bans import Ban, BanList
from core.security.guard import Security
from core.settings import SecuritySettings
from core.store.rows import BanRow

WALL = 1_800_000_000.0  # the fake wall clock's reading; the loop clock starts near 0


class RecordingSink:
    """The simplest real BanSink: it keeps what a store would have written."""

    def __init__(self) -> None:
        self.saved: dict[str, Ban] = {}
        self.calls: list[tuple[str, str]] = []

    def ban_saved(self, ban: Ban) -> None:
        self.saved[ban.ip] = ban
        self.calls.append(("saved", ban.ip))

    def ban_removed(self, ip: str) -> None:
        self.saved.pop(ip, None)
        self.calls.append(("removed", ip))


def feed(bus: EventBus) -> list[object]:
    events, _, _ = bus.feed.read_since(0)
    return events


@pytest.fixture
def bus() -> EventBus:
    return EventBus()


@pytest.fixture
def sink() -> RecordingSink:
    return RecordingSink()


@pytest.fixture
def table(bus: EventBus, sink: RecordingSink) -> BanList:
    return BanList(bus, max_bans=100, sink=sink, wall_clock=lambda: WALL)


def test_a_ban_has_both_clocks_its_reason_and_count(table: BanList, sink: RecordingSink) -> None:
    ban = table.add("203.0.113.9", 600.0, "flood", 50.0, count=61)
    assert ban == Ban("203.0.113.9", until=650.0, until_wall=WALL + 600, reason="flood", count=61)
    assert table.until_by_ip == {"203.0.113.9": 650.0}
    assert sink.saved == {"203.0.113.9": ban}
    assert not ban.permanent


def test_ban_and_unban_are_published(table: BanList, bus: EventBus) -> None:
    table.add("203.0.113.9", 600.0, "flood", 0.0, count=61, action="flood-banned", detail="d")
    table.remove("203.0.113.9", "admin")
    kinds = [(type(e).__name__, getattr(e, "action", getattr(e, "reason", ""))) for e in feed(bus)]
    assert kinds == [
        ("SourceBanned", "flood"),
        ("SecurityEvent", "flood-banned"),
        ("SourceUnbanned", "admin"),
        ("SecurityEvent", "unbanned"),
    ]
    assert table.remove("203.0.113.9") is None  # not banned any more


def test_periodic_expiry_removes_from_table_and_store(
    table: BanList, sink: RecordingSink, bus: EventBus
) -> None:
    table.add("192.0.2.1", 10.0, "flood", 0.0)
    table.add("192.0.2.2", 20.0, "flood", 0.0)
    assert table.expire(9.9) == []
    expired = table.expire(15.0)
    assert [b.ip for b in expired] == ["192.0.2.1"]
    assert "192.0.2.1" not in table and "192.0.2.2" in table
    assert sink.calls[-1] == ("removed", "192.0.2.1")
    unbanned = [e for e in feed(bus) if isinstance(e, SourceUnbanned)]
    assert [(e.ip, e.reason) for e in unbanned] == [("192.0.2.1", "expired")]


def test_reban_replaces_and_the_old_end_time_does_not_expire_it(table: BanList) -> None:
    table.add("192.0.2.1", 10.0, "flood", 0.0)
    table.add("192.0.2.1", 100.0, "admin", 5.0)
    assert table.expire(50.0) == []
    assert table.get("192.0.2.1") is not None
    assert [b.ip for b in table.expire(105.0)] == ["192.0.2.1"]


def test_permanent_ban_never_expires(table: BanList, sink: RecordingSink) -> None:
    ban = table.add("192.0.2.1", math.inf, "admin", 0.0)
    assert ban.permanent and ban.until_wall == math.inf
    assert table.expire(1e12) == []
    assert table.active(1e12) == [ban]


def test_the_table_is_bounded_and_evicts_the_ban_ending_soonest(bus: EventBus) -> None:
    sink = RecordingSink()
    table = BanList(bus, max_bans=3, sink=sink, wall_clock=lambda: WALL)
    table.add("192.0.2.1", 300.0, "flood", 0.0)
    table.add("192.0.2.2", 100.0, "flood", 0.0)
    table.add("192.0.2.3", 200.0, "flood", 0.0)
    table.add("192.0.2.4", 50.0, "flood", 0.0)
    assert len(table) == 3
    assert "192.0.2.2" not in table
    assert ("removed", "192.0.2.2") in sink.calls
    evicted = [e for e in feed(bus) if isinstance(e, SourceUnbanned)]
    assert [(e.ip, e.reason) for e in evicted] == [("192.0.2.2", "evicted")]


def test_a_full_table_drops_expired_bans_before_evicting_live_ones(bus: EventBus) -> None:
    table = BanList(bus, max_bans=2, wall_clock=lambda: WALL)
    table.add("192.0.2.1", 10.0, "flood", 0.0)
    table.add("192.0.2.2", 1_000.0, "flood", 0.0)
    table.add("192.0.2.3", 1_000.0, "flood", 20.0)
    assert sorted(b.ip for b in table.active(20.0)) == ["192.0.2.2", "192.0.2.3"]


def test_many_rebans_keep_the_expiry_heap_bounded(table: BanList) -> None:
    for i in range(2_000):
        table.add("192.0.2.1", 10.0 + i, "flood", 0.0)
    assert len(table._heap) <= 2 * len(table) + 64


def test_active_lists_bans_in_force_soonest_first(table: BanList) -> None:
    table.add("192.0.2.1", 300.0, "flood", 0.0)
    table.add("192.0.2.2", 100.0, "flood", 0.0)
    table.add("192.0.2.3", 10.0, "flood", 0.0)
    assert [b.ip for b in table.active(50.0)] == ["192.0.2.2", "192.0.2.1"]


def test_restore_converts_wall_clock_and_cleans_the_store(
    table: BanList, sink: RecordingSink, bus: EventBus
) -> None:
    saved = [
        BanRow("203.0.113.1", WALL + 120.0, "flood", 61),
        BanRow("203.0.113.2", WALL - 1.0, "scanner", 3),  # ran out while we were down
        BanRow("127.0.0.1", WALL + 500.0, "admin"),  # now an own address
        BanRow("203.0.113.3", None, "admin"),  # permanent
    ]
    restored = table.restore(saved, now=7.0, skip=lambda ip: ip == "127.0.0.1")
    assert restored == 2
    assert table.get("203.0.113.1") == Ban("203.0.113.1", 127.0, WALL + 120.0, "flood", 61)
    permanent = table.get("203.0.113.3")
    assert permanent is not None and permanent.permanent and permanent.until_wall == math.inf
    assert sink.calls == [("removed", "203.0.113.2"), ("removed", "127.0.0.1")]
    assert feed(bus) == []  # restoring announces nothing new


# -- through the Security facade ---------------------------------------------------------
@pytest.fixture
def security(bus: EventBus, sink: RecordingSink) -> Security:
    settings = SecuritySettings(allow_list=("192.0.2.0/24",))
    return Security(
        settings, bus, own_addresses={"198.51.100.1"}, sink=sink, wall_clock=lambda: WALL
    )


def test_manual_ban_drops_the_source_until_unbanned(security: Security, bus: EventBus) -> None:
    ban = security.ban("203.0.113.50", 3_600.0, "seen brute forcing", 10.0)
    assert (ban.ip, ban.reason, ban.count, ban.until) == (
        "203.0.113.50",
        "seen brute forcing",
        0,
        3_610.0,
    )
    assert security.admit("203.0.113.50", 11.0) is False
    assert security.bans(11.0) == [ban]
    event = next(e for e in feed(bus) if isinstance(e, SecurityEvent))
    assert (event.action, event.detail) == ("banned", "admin: seen brute forcing")
    assert security.unban("203.0.113.50", 12.0) is True
    assert security.unban("203.0.113.50", 12.0) is False
    assert security.admit("203.0.113.50", 13.0) is True


def test_manual_ban_without_a_duration_is_permanent(security: Security) -> None:
    ban = security.ban("203.0.113.51", None, "persistent scanner", 0.0)
    assert ban.permanent and ban.until_wall == math.inf
    assert security.expire(1e9) == []
    assert security.admit("203.0.113.51", 1e9) is False


def test_manual_ban_normalises_the_address(security: Security) -> None:
    ban = security.ban("::ffff:203.0.113.50", 60.0, "x", 0.0)
    assert ban.ip == "203.0.113.50"
    assert security.admit("203.0.113.50", 1.0) is False
    with pytest.raises(ValueError, match="not an IP address"):
        security.ban("pbx.example.com", 60.0, "x", 0.0)


@pytest.mark.parametrize("ip", ["198.51.100.1", "192.0.2.200", "::ffff:192.0.2.7"])
def test_manual_ban_of_an_exempt_address_is_refused(security: Security, ip: str) -> None:
    with pytest.raises(ValueError, match="exempt from bans"):
        security.ban(ip, 60.0, "oops", 0.0)
    assert security.bans(0.0) == []


def test_admit_notices_expiry_lazily(security: Security, bus: EventBus) -> None:
    security.ban("203.0.113.50", 60.0, "x", 0.0)
    assert security.admit("203.0.113.50", 59.9) is False
    assert security.admit("203.0.113.50", 60.0) is True
    unbanned = [e for e in feed(bus) if isinstance(e, SourceUnbanned)]
    assert [(e.ip, e.reason) for e in unbanned] == [("203.0.113.50", "expired")]


def test_expire_lifts_bans_without_traffic(security: Security, sink: RecordingSink) -> None:
    security.ban("203.0.113.50", 60.0, "x", 0.0)
    assert [b.ip for b in security.expire(61.0)] == ["203.0.113.50"]
    assert sink.saved == {}


def test_restore_through_security_skips_exempt_addresses(
    security: Security, sink: RecordingSink
) -> None:
    saved = [
        BanRow("192.0.2.9", WALL + 60.0, "flood", 70),  # allow-listed since
        BanRow("203.0.113.9", WALL + 60.0, "flood", 70),
    ]
    assert security.restore(saved, 100.0) == 1
    assert [b.ip for b in security.bans(100.0)] == ["203.0.113.9"]
    assert security.admit("203.0.113.9", 100.0) is False
    assert security.admit("203.0.113.9", 160.0) is True
    assert ("removed", "192.0.2.9") in sink.calls


def test_a_sink_can_be_connected_later(bus: EventBus) -> None:
    security = Security(SecuritySettings(), bus, wall_clock=lambda: WALL)
    sink = RecordingSink()
    security.sink = sink  # the Pbx connects the store once it is open
    assert security.sink is sink
    security.ban("203.0.113.1", 60.0, "x", 0.0)
    assert list(sink.saved) == ["203.0.113.1"]
    events = [e for e in feed(bus) if isinstance(e, SourceBanned)]
    assert events[0].until == WALL + 60.0
