"""The last-resort handler's log: one line per kind of unhandled error, not one per packet.

A bug that one packet can trigger can be triggered a thousand times a second. Logged with a
traceback each time, that is thirty journal lines per packet: an attacker's way to fill the
disk and bury the lines fail2ban reads. Here the first error of each kind (exception type and
the line that raised it) is logged with its traceback; later ones of the same kind are only
counted, and the count is logged at most once per `interval` seconds. The number of kinds
remembered is bounded too.
"""

from __future__ import annotations

import logging
import traceback
from collections.abc import Callable
from dataclasses import dataclass

_MAX_KINDS = 256


@dataclass(slots=True)
class _Kind:
    count: int = 0  # occurrences not yet reported
    total: int = 0
    reported_at: float = 0.0


class FaultLog:
    """`fault(error, where, now)` from an `except Exception` block that keeps the server up."""

    def __init__(
        self, log: logging.Logger, clock: Callable[[], float], interval: float = 60.0
    ) -> None:
        self._log = log
        self._clock = clock
        self._interval = interval
        self._kinds: dict[tuple[str, str, int], _Kind] = {}
        self.total = 0

    def fault(self, error: BaseException, where: object) -> None:
        """Record one unhandled `error` met while handling `where` (a flow, a task name)."""
        self.total += 1
        now = self._clock()
        frames = traceback.extract_tb(error.__traceback__)
        last = frames[-1] if frames else None
        key = (
            type(error).__name__,
            last.filename if last else "?",
            last.lineno or 0 if last else 0,
        )
        kind = self._kinds.get(key)
        if kind is None:
            if len(self._kinds) >= _MAX_KINDS:
                self._kinds.clear()
            self._kinds[key] = _Kind(total=1, reported_at=now)
            self._log.error(
                "unhandled %s handling %s (logged once; repeats are counted)",
                type(error).__name__,
                where,
                exc_info=error,
            )
            return
        kind.count += 1
        kind.total += 1
        if now - kind.reported_at >= self._interval:
            self._log.error(
                "unhandled %s at %s:%s happened %d more times (%d in all), last handling %s",
                key[0],
                key[1],
                key[2],
                kind.count,
                kind.total,
                where,
            )
            kind.count = 0
            kind.reported_at = now
