"""Counting strikes (failed logins, scanner hits) per key within a sliding time window.

These are rare compared with packets, so the count is exact: each key keeps the times of its
last `limit` strikes (older ones cannot matter: the limit is reached or it is not), and the
table keeps at most `max_keys` keys, least recently struck evicted first. A brute-force run
from a million addresses therefore costs a bounded table, not a million deques.
"""

from __future__ import annotations

from collections import OrderedDict, deque


class StrikeCounter:
    __slots__ = ("_strikes", "limit", "max_keys", "window")

    def __init__(self, window: float, limit: int, max_keys: int) -> None:
        if limit < 1:
            raise ValueError("limit must be at least 1")
        self.window = window
        self.limit = limit
        self.max_keys = max(1, max_keys)
        self._strikes: OrderedDict[str, deque[float]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._strikes)

    def strike(self, key: str, now: float) -> int:
        """Record one strike for `key`; returns its strikes within the window (≤ `limit`)."""
        times = self._strikes.get(key)
        if times is None:
            if len(self._strikes) >= self.max_keys:
                self._strikes.popitem(last=False)
            times = self._strikes[key] = deque(maxlen=self.limit)
        else:
            self._strikes.move_to_end(key)
        oldest_counted = now - self.window
        while times and times[0] <= oldest_counted:
            times.popleft()
        times.append(now)
        return len(times)

    def clear(self, key: str) -> None:
        """Forget `key`'s strikes (it was banned or alerted on, or it logged in)."""
        self._strikes.pop(key, None)
