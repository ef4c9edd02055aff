"""Timed bans of source addresses: the table the route checks before it parses anything.

A ban is looked up for every packet, so the table keeps a plain `{ip: until}` dict beside the
`Ban` records; the facade (`core.security.guard`) reads it directly. Expiry is lazy (the lookup
notices) plus a periodic `expire(now)` driven by a min-heap of end times, so nothing walks the
whole table per packet. The table is bounded: when full, the ban that would end soonest makes
room (it was the least valuable one to keep).

Two clocks: `until` is on the caller's clock (`now`, the event loop's monotonic time), which
is what comparisons use; `until_wall` is the same instant in epoch seconds, for display and
for the store, so a ban survives a restart (`restore`). A permanent ban has both at infinity.

Every change is published on the bus (`SourceBanned` / `SourceUnbanned`, each with a
`SecurityEvent` for the log) and handed to an optional `BanSink` (the Pbx connects the store's
batching writer), never awaited.
"""

from __future__ import annotations

import heapq
import math
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Protocol

from core.events import EventBus, SecurityEvent, SourceBanned, SourceUnbanned


@dataclass(frozen=True, slots=True)
class Ban:
    """One banned source. `count` is what triggered it (requests, hits, failures; 0 = admin)."""

    ip: str
    until: float  # on the caller's clock, like `now`; math.inf for a permanent ban
    until_wall: float  # epoch seconds of the same instant; math.inf for a permanent ban
    reason: str
    count: int = 0

    @property
    def permanent(self) -> bool:
        return math.isinf(self.until)


class SavedBan(Protocol):
    """A ban as the store keeps it (`core.store.rows.BanRow` fits): wall clock only."""

    @property
    def ip(self) -> str: ...

    @property
    def until(self) -> float | None: ...  # epoch seconds; None for a permanent ban

    @property
    def reason(self) -> str: ...

    @property
    def count(self) -> int: ...


class BanSink(Protocol):
    """Where bans are persisted; calls must not block (queue the write)."""

    def ban_saved(self, ban: Ban) -> None: ...

    def ban_removed(self, ip: str) -> None: ...


class BanList:
    """Active bans, bounded by `max_bans`; `until_by_ip` is the fast-path lookup."""

    __slots__ = (
        "_bans",
        "_bus",
        "_heap",
        "_saved_until_by_ip",
        "_wall_clock",
        "_written_at",
        "max_bans",
        "sink",
        "until_by_ip",
    )

    def __init__(
        self,
        bus: EventBus,
        *,
        max_bans: int,
        sink: BanSink | None = None,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        if max_bans < 1:
            raise ValueError("max_bans must be at least 1")
        self.max_bans = max_bans
        self.sink = sink
        self.until_by_ip: dict[str, float] = {}
        self._bans: dict[str, Ban] = {}
        self._heap: list[tuple[float, str]] = []  # (until, ip); stale entries skipped lazily
        self._bus = bus
        self._wall_clock = wall_clock
        # The store's bans as last read (ip → until_wall), so `sync` can tell another
        # process's edits from rows this table wrote itself.
        self._saved_until_by_ip: dict[str, float] = {}
        # Bans this table handed to the sink (ip → wall time) that no look at the store has
        # seen yet. `sync` is called with the writer flushed, so such a row that is missing
        # was deleted by another process (`pbxtui ban del`) before any look here saw it.
        self._written_at: dict[str, float] = {}

    def __len__(self) -> int:
        return len(self._bans)

    def __contains__(self, ip: object) -> bool:
        return ip in self._bans

    def get(self, ip: str) -> Ban | None:
        return self._bans.get(ip)

    def active(self, now: float) -> list[Ban]:
        """Bans still in force at `now`, soonest to end first (does not expire anything)."""
        return sorted((ban for ban in self._bans.values() if ban.until > now), key=_end_order)

    def add(
        self,
        ip: str,
        seconds: float,
        reason: str,
        now: float,
        *,
        count: int = 0,
        action: str = "banned",
        detail: str = "",
        user: str = "",
        user_agent: str = "",
    ) -> Ban:
        """Ban `ip` for `seconds` (math.inf: until unbanned), replacing any ban it had.

        `action` and `detail` go into the `SecurityEvent` ("flood-banned", "61 requests in 2s").
        """
        if not seconds > 0:
            raise ValueError("a ban must last more than 0 seconds")
        if ip not in self._bans and len(self._bans) >= self.max_bans:
            self._make_room(now)
        until = now + seconds
        until_wall = self._wall_clock() + seconds
        ban = Ban(ip=ip, until=until, until_wall=until_wall, reason=reason, count=count)
        self._store(ban)
        if self.sink is not None:
            self.sink.ban_saved(ban)
            self._written_at[ip] = self._wall_clock()
        publish = self._bus.publish
        publish(SourceBanned(ip=ip, until=until_wall, reason=reason, count=count))
        publish(
            SecurityEvent(
                action=action,
                source=ip,
                detail=detail or reason,
                user=user,
                user_agent=user_agent,
                count=max(count, 1),
            )
        )
        return ban

    def remove(self, ip: str, reason: str = "admin") -> Ban | None:
        """Lift the ban on `ip` (reason "admin", "expired", "evicted"); None if it had none."""
        ban = self._bans.pop(ip, None)
        if ban is None:
            return None
        del self.until_by_ip[ip]
        if self.sink is not None:
            self.sink.ban_removed(ip)
        publish = self._bus.publish
        publish(SourceUnbanned(ip=ip, reason=reason))
        publish(SecurityEvent(action="unbanned", source=ip, detail=reason, count=1))
        return ban

    def adopt(self, saved: SavedBan, now: float, skip: Callable[[str], bool]) -> bool:
        """Hold a ban another process of this server made (core/cluster/changes.py): no event (that
        process announced it), but the sink hears of it. False when `restore` would not
        keep it (run out, or an exempt address)."""
        if not self.restore([saved], now, skip):
            return False
        if self.sink is not None:
            self.sink.ban_saved(self._bans[saved.ip])
        return True

    def forget(self, ip: str) -> bool:
        """Lift a ban quietly: another process of this server announced it and stored it
        (core/cluster/changes.py). False when there was none."""
        if self._bans.pop(ip, None) is None:
            return False
        del self.until_by_ip[ip]
        return True

    def expire_ip(self, ip: str, now: float) -> Ban | None:
        """Lift `ip`'s ban if it has run out (the lazy path: a packet from it arrived)."""
        ban = self._bans.get(ip)
        if ban is None or ban.until > now:
            return None
        return self.remove(ip, "expired")

    def expire(self, now: float) -> list[Ban]:
        """Lift every ban that has run out; call it about once a second."""
        expired: list[Ban] = []
        heap = self._heap
        while heap and heap[0][0] <= now:
            until, ip = heapq.heappop(heap)
            ban = self._bans.get(ip)
            if ban is not None and ban.until == until:
                self.remove(ip, "expired")
                expired.append(ban)
        return expired

    def restore(self, bans: Iterable[SavedBan], now: float, skip: Callable[[str], bool]) -> int:
        """Load bans saved before a restart (their `until` is wall-clock, None = permanent).

        Bans that ran out while we were down, and bans of addresses `skip` says are now exempt
        (an own or allow-listed address), are removed from the store instead. No events: these
        decisions were announced when they were made. Returns how many were restored.
        """
        wall_now = self._wall_clock()
        restored = 0
        for saved in bans:
            until_wall = math.inf if saved.until is None else saved.until
            remaining = until_wall - wall_now
            if remaining <= 0 or skip(saved.ip):
                if self.sink is not None:
                    self.sink.ban_removed(saved.ip)
                continue
            if saved.ip not in self._bans and len(self._bans) >= self.max_bans:
                self._make_room(now)
            ban = Ban(
                ip=saved.ip,
                until=now + remaining,
                until_wall=until_wall,
                reason=saved.reason,
                count=saved.count,
            )
            self._store(ban)
            self._saved_until_by_ip[ban.ip] = until_wall
            restored += 1
        return restored

    def sync(
        self, saved: Iterable[SavedBan], now: float, skip: Callable[[str], bool]
    ) -> tuple[list[Ban], list[str], list[str]]:
        """Apply what another process (the CLI) changed in the store since the last look.

        `saved` is every ban the store holds now, read after the writer was flushed. A row that
        is new or changed since the last `restore`/`sync` is put in force, unless this table
        already holds the same ban (it wrote the row itself); a row that has gone since then,
        or a ban made here whose row is missing, is lifted. A row for
        an address `skip` says is exempt is deleted, as at `restore`. Bans and unbans are
        published like an admin's. Returns (bans put in force, addresses lifted, refused).
        """
        wall_now = self._wall_clock()
        previous = self._saved_until_by_ip
        current: dict[str, float] = {}
        added: list[Ban] = []
        refused: list[str] = []
        for row in saved:
            until_wall = math.inf if row.until is None else row.until
            current[row.ip] = until_wall
            if previous.get(row.ip) == until_wall:
                continue  # unchanged since the last look
            held = self._bans.get(row.ip)
            if held is not None and held.until_wall == until_wall:
                continue  # our own ban, written back by the sink
            remaining = until_wall - wall_now
            if remaining <= 0:
                continue
            if skip(row.ip):
                refused.append(row.ip)
                del current[row.ip]
                if self.sink is not None:
                    self.sink.ban_removed(row.ip)
                continue
            if row.ip not in self._bans and len(self._bans) >= self.max_bans:
                self._make_room(now)
            ban = Ban(row.ip, now + remaining, until_wall, row.reason, row.count)
            self._store(ban)
            added.append(ban)
            publish = self._bus.publish
            publish(SourceBanned(ip=ban.ip, until=until_wall, reason=ban.reason, count=ban.count))
            publish(SecurityEvent(action="banned", source=ban.ip, detail=f"admin: {ban.reason}"))
        lifted: list[str] = []
        for ip, until_wall in previous.items():
            held = self._bans.get(ip)
            if ip in current or held is None or held.until_wall != until_wall:
                continue  # still saved, already gone, or re-banned here since
            self.remove(ip, "expired" if held.until <= now else "admin")
            lifted.append(ip)
        # Our own bans whose rows another process deleted before any look here saw them.
        for ip in list(self._written_at):
            del self._written_at[ip]
            held = self._bans.get(ip)
            if held is None or ip in current or ip in previous:
                continue  # gone here, its row is in the store, or handled above
            self.remove(ip, "expired" if held.until <= now else "admin")
            lifted.append(ip)
        self._saved_until_by_ip = current
        return added, lifted, refused

    def _store(self, ban: Ban) -> None:
        self._bans[ban.ip] = ban
        self.until_by_ip[ban.ip] = ban.until
        heap = self._heap
        heapq.heappush(heap, (ban.until, ban.ip))
        if len(heap) > 2 * len(self._bans) + 64:
            # Re-banned sources leave stale heap entries; rebuild so the heap stays bounded.
            self._heap = [(b.until, b.ip) for b in self._bans.values()]
            heapq.heapify(self._heap)

    def _make_room(self, now: float) -> None:
        """The table is full: drop what has expired, else the ban that ends soonest."""
        if self.expire(now):
            return
        heap = self._heap
        while heap:
            until, ip = heapq.heappop(heap)
            ban = self._bans.get(ip)
            if ban is not None and ban.until == until:
                self.remove(ip, "evicted")
                return


def _end_order(ban: Ban) -> float:
    return ban.until
