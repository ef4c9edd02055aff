"""Counting repeated security decisions instead of publishing each one.

A banned flooder sends thousands of packets a second and each is a decision ("dropped, it is
banned"). Publishing every one would fill the event feed and the log with the same line, so
reports are coalesced per (action, source): the first goes out at once, later ones within
`interval` are summed, and the sum goes out with the next report after the interval or at the
next `flush(now)`, as one event whose `count` says how many it stands for.

That alone does not bound a flood from many spoofed sources, where every report is a first.
A global budget does: at most `max_per_second` reports are published per second, the rest
are counted and announced once a second in a single warning `ServerEvent`.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable

from core.events import Event, SecurityEvent, ServerEvent


class _Pending:
    __slots__ = ("count", "detail", "next_at", "user", "user_agent")

    def __init__(self, next_at: float) -> None:
        self.next_at = next_at
        self.count = 0
        self.detail = ""
        self.user = ""
        self.user_agent = ""


class ReportThrottle:
    __slots__ = (
        "_budget",
        "_budget_resets_at",
        "_pending",
        "_publish",
        "_suppressed_this_second",
        "interval",
        "max_keys",
        "max_per_second",
        "suppressed",
    )

    def __init__(
        self,
        publish: Callable[[Event], None],
        *,
        interval: float,
        max_per_second: int,
        max_keys: int,
    ) -> None:
        self._publish = publish
        self.interval = interval
        self.max_per_second = max_per_second
        self.max_keys = max(1, max_keys)
        # Ordered by `next_at` (a refreshed key moves to the end), so `flush` stops early.
        self._pending: OrderedDict[tuple[str, str], _Pending] = OrderedDict()
        self._budget = max_per_second
        self._budget_resets_at = float("-inf")
        self._suppressed_this_second = 0
        self.suppressed = 0  # reports never published, in total

    def report(
        self,
        action: str,
        source: str,
        now: float,
        detail: str = "",
        *,
        user: str = "",
        user_agent: str = "",
    ) -> None:
        """One more occurrence of `action` from `source`: published now, or summed for later."""
        key = (action, source)
        state = self._pending.get(key)
        if state is None:
            if len(self._pending) >= self.max_keys:
                self._evict_oldest()
            state = self._pending[key] = _Pending(now + self.interval)
        elif now < state.next_at:
            state.count += 1
            state.detail, state.user, state.user_agent = detail, user, user_agent
            return
        else:
            state.next_at = now + self.interval
            self._pending.move_to_end(key)
        total = state.count + 1
        state.count = 0
        self._emit(action, source, now, total, detail, user, user_agent)

    def flush(self, now: float) -> None:
        """Publish sums whose interval has passed and forget quiet sources; about once a second.

        Costs what has come due, not the whole table: keys are kept in `next_at` order.
        """
        self._refill(now)
        pending = self._pending
        while pending:
            key, state = next(iter(pending.items()))
            if now < state.next_at:
                break
            del pending[key]
            if state.count:
                action, source = key
                self._emit(
                    action, source, now, state.count, state.detail, state.user, state.user_agent
                )

    def _emit(
        self,
        action: str,
        source: str,
        now: float,
        count: int,
        detail: str,
        user: str,
        user_agent: str,
    ) -> None:
        self._refill(now)
        if self._budget <= 0:
            self._suppressed_this_second += count
            self.suppressed += count
            return
        self._budget -= 1
        self._publish(
            SecurityEvent(
                action=action,
                source=source,
                detail=detail,
                user=user,
                user_agent=user_agent,
                count=count,
            )
        )

    def _refill(self, now: float) -> None:
        if now < self._budget_resets_at:
            return
        if self._suppressed_this_second:
            self._publish(
                ServerEvent(
                    message=(
                        f"security: {self._suppressed_this_second} repeated reports suppressed "
                        f"(more than {self.max_per_second} a second)"
                    ),
                    level="warning",
                )
            )
            self._suppressed_this_second = 0
        self._budget = self.max_per_second
        self._budget_resets_at = now + 1.0

    def _evict_oldest(self) -> None:
        _key, state = self._pending.popitem(last=False)
        if state.count:
            self._suppressed_this_second += state.count
            self.suppressed += state.count
