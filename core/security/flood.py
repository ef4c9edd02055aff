"""Per-source message rate over a sliding window, cheap enough to run on every packet.

Kamailio's pike keeps per-address counters with two time slots. Here each source has the
same two slots: the count in its current window-long slot, and the count of the slot before,
weighted by how much of it still lies inside the sliding window:

    estimate = count in current slot + count in previous slot x (time left in slot / window)

(the "sliding window counter" of rate limiters). A packet costs a dict look-up, a move to
the end of the recency order and a few integer operations; the multiplication happens only
when the plain sum could exceed the limit.

Memory is bounded by `max_tracked` sources, least recently seen evicted first. Recency is
what makes this hold up under a flood from a million spoofed addresses: a one-off spoofed
address is the next to go, while a real flooder, which keeps sending, keeps its counter.
With a cap C and spoofed addresses arriving at R a second, a source survives C/R seconds of
silence, so any source sending more often than R/C a second stays tracked (at the default
100,000 sources and an implausible 1,000,000 spoofed packets a second: 10 a second, well
under the 30 a second the default limit allows). Quiet sources are dropped by `sweep(now)`.

The detector only counts and estimates. Which limit applies (own address, carrier,
authenticated source) and what to do about it is `core.security.guard`'s decision, made only for
the few sources whose estimate passes `base_limit`.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from typing import Final

# A source's state is a 3-item list, mutated in place: [slot end, count in slot, previous].
# Final, so the compiled `hit` indexes with constants instead of reading module globals.
_END: Final = 0
_COUNT: Final = 1
_PREVIOUS: Final = 2


class FloodDetector:
    __slots__ = (
        "_inverse_window",
        "_move_to_end",
        "_sources",
        "base_limit",
        "max_tracked",
        "window",
    )

    def __init__(self, window: float, base_limit: int, max_tracked: int) -> None:
        if window <= 0:
            raise ValueError("flood window must be positive")
        if max_tracked < 1:
            raise ValueError("max_tracked must be at least 1")
        self.window = window
        self.base_limit = base_limit
        self.max_tracked = max_tracked
        self._inverse_window = 1.0 / window
        self._sources: OrderedDict[str, list[float]] = OrderedDict()
        # Bound once: compiled code calls an OrderedDict method by name lookup on each call.
        self._move_to_end: Callable[[str], None] = self._sources.move_to_end

    def set_window(self, window: float) -> None:
        """A new window (a reload); estimates already made scale with it from the next hit."""
        if window <= 0:
            raise ValueError("flood window must be positive")
        self.window = window
        self._inverse_window = 1.0 / window

    def hit(self, ip: str, now: float) -> float:
        """Count one message from `ip`; return 0.0 when clearly under `base_limit`, else the
        estimated number of messages over the last window (which may still be under it)."""
        sources = self._sources
        state = sources.get(ip)
        if state is None:
            if len(sources) >= self.max_tracked:
                sources.popitem(last=False)
            sources[ip] = [now + self.window, 1, 0]
            return 0.0 if self.base_limit >= 1 else 1.0
        self._move_to_end(ip)
        end = state[_END]
        if now >= end:
            if now >= end + self.window:
                # Silent for a whole window or more: nothing from before counts any more.
                state[_END] = now + self.window
                state[_PREVIOUS] = 0
            else:
                state[_END] = end + self.window
                state[_PREVIOUS] = state[_COUNT]
            state[_COUNT] = 0
        count = state[_COUNT] + 1
        state[_COUNT] = count
        previous = state[_PREVIOUS]
        if count + previous <= self.base_limit:
            return 0.0
        if not previous:
            return float(count)
        return count + previous * (state[_END] - now) * self._inverse_window

    def forget(self, ip: str) -> None:
        """Drop `ip`'s counts (it was just banned, or is exempt: start again from zero)."""
        self._sources.pop(ip, None)

    def sweep(self, now: float) -> int:
        """Forget sources whose counts can no longer matter; returns how many went.

        The least recently seen come first, so this stops at the first one still relevant.
        """
        sources = self._sources
        removed = 0
        while sources:
            ip, state = next(iter(sources.items()))
            if state[_END] + self.window > now:
                break
            del sources[ip]
            removed += 1
        return removed

    @property
    def tracked(self) -> int:
        """How many sources have counters now (at most `max_tracked`)."""
        return len(self._sources)
