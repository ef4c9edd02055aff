"""What the console keeps between refreshes: cursors into the bus and the models built from it.

The app calls `ConsoleState.drain` at a fixed cadence (settings.ui.refresh_hz). One drain
reads every new event in batches, whichever pane is on screen, so switching panes never
loses history; the visible pane then renders from these models. Plain Python, no Textual.
"""

from __future__ import annotations

from collections import Counter, OrderedDict, deque
from dataclasses import dataclass
from typing import TYPE_CHECKING

from core.events import CallEvent, Event, SecurityEvent
from screens.dialogs import DialogLog

if TYPE_CHECKING:
    from core.control.view import CoreView
    from core.pbx import PbxStats


class RateMeter:
    """Messages per second from a cumulative counter, plus a per-second history for a sparkline."""

    def __init__(self, history_seconds: int = 60, window: float = 1.0) -> None:
        self.window = window
        self.rate = 0.0
        self.history: deque[float] = deque([0.0] * history_seconds, maxlen=history_seconds)
        self._samples: deque[tuple[float, int]] = deque()
        self._second: int | None = None

    def sample(self, total: int, now: float) -> float:
        samples = self._samples
        samples.append((now, total))
        while len(samples) > 2 and now - samples[1][0] >= self.window:
            samples.popleft()
        first_at, first_total = samples[0]
        elapsed = now - first_at
        self.rate = (total - first_total) / elapsed if elapsed > 0 else 0.0
        second = int(now)
        if self._second is None:
            self._second = second
        elif second != self._second:
            self.history.append(self.rate)
            self._second = second
        return self.rate


@dataclass(slots=True)
class FeedRow:
    """One line of the security feed; repeats of (kind, source) collapse into `count`."""

    key: str
    kind: str
    source: str
    detail: str
    user: str
    first_at: float
    last_at: float
    count: int


def _describe(event: Event) -> tuple[str, str, str, str, int] | None:
    """(kind, source, detail, user, count) for the security feed, None for other events.

    Only `SecurityEvent`s, bans and unbans (`SourceBanned` / `SourceUnbanned`) among them.
    """
    if not isinstance(event, SecurityEvent):
        return None
    detail = event.detail
    if event.user_agent and event.user_agent not in detail:
        detail = f"{detail} UA={event.user_agent!r}".strip()
    return event.action, event.source, detail, event.user, max(1, event.count)


# Kinds that are the admin's own doing, not an offence by the source.
_NOT_OFFENCES = frozenset({"unbanned"})


class SecurityFeed:
    """The Security pane's model: collapsed feed rows, newest last, and the top offenders."""

    def __init__(self, max_rows: int = 500, max_sources: int = 10_000) -> None:
        self.max_rows = max_rows
        self.max_sources = max_sources
        self.rows: OrderedDict[str, FeedRow] = OrderedDict()
        self.offences: Counter[str] = Counter()
        self.revision = 0

    def add(self, events: list[Event]) -> None:
        for event in events:
            described = _describe(event)
            if described is None:
                continue
            kind, source, detail, user, count = described
            key = f"{kind}|{source}"
            row = self.rows.get(key)
            if row is None:
                self.rows[key] = FeedRow(key, kind, source, detail, user, event.at, event.at, count)
                if len(self.rows) > self.max_rows:
                    self.rows.popitem(last=False)
            else:
                row.count += count
                row.last_at = event.at
                row.detail = detail or row.detail
                row.user = user or row.user
                self.rows.move_to_end(key)
            if kind not in _NOT_OFFENCES and source:
                self.offences[source] += count
            self.revision += 1
        if len(self.offences) > self.max_sources:
            # Keep the worst half: a spray from many addresses must not grow this forever.
            self.offences = Counter(dict(self.offences.most_common(self.max_sources // 2)))

    def top_offenders(self, count: int = 10) -> list[tuple[str, int]]:
        return self.offences.most_common(count)


class ConsoleState:
    """The bus cursors and every model the panes render from."""

    def __init__(self, core: CoreView) -> None:
        self.core = core
        ui = core.settings.ui
        self.dialogs = DialogLog(ui.traffic_dialogs, ui.traffic_messages_per_dialog)
        self.security = SecurityFeed()
        self.rates = RateMeter()
        self.traffic_per_refresh = ui.traffic_per_refresh
        self.stats: PbxStats | None = None
        self.feed_missed = 0
        self.calls_revision = 0  # bumped when a call starts or ends, so the CDR list reloads
        self._traffic_cursor = 0
        self._feed_cursor = 0

    def drain(self, now: float) -> None:
        """Read everything new from the bus (the newest `traffic_per_refresh` messages)."""
        bus = self.core.bus
        traffic, self._traffic_cursor, missed = bus.traffic.read_since(
            self._traffic_cursor, self.traffic_per_refresh
        )
        self.dialogs.add(traffic, missed)  # type: ignore[arg-type]
        feed, self._feed_cursor, feed_missed = bus.feed.read_since(self._feed_cursor)
        self.feed_missed += feed_missed
        self.security.add(feed)
        if any(isinstance(event, CallEvent) for event in feed):
            self.calls_revision += 1
        self.stats = self.core.stats()
        self.rates.sample(self.stats.messages_in + self.stats.messages_out, now)
