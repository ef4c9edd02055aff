"""Wrong console passwords: each one a security event, and each makes the next try wait longer.

bcrypt makes one guess cost ~0.3 s of CPU, but a script typing into the console (or several
attached consoles at once) would still try a dictionary in a day. After the n-th wrong
password in a row the next check waits `min(BASE * 2**(n-1), MAX_DELAY)` seconds first, and
checks run one at a time, so parallel consoles share one queue. A right password resets the
count; so does a quiet `FORGET_AFTER` seconds.
"""

from __future__ import annotations

BASE_DELAY = 1.0
MAX_DELAY = 60.0
FORGET_AFTER = 900.0


class ConsoleThrottle:
    """Counts consecutive wrong console passwords; `delay(now)` is the wait before a check."""

    __slots__ = ("failures", "last_failure")

    def __init__(self) -> None:
        self.failures = 0
        self.last_failure = 0.0

    def delay(self, now: float) -> float:
        if self.failures and now - self.last_failure > FORGET_AFTER:
            self.failures = 0
        if not self.failures:
            return 0.0
        return min(BASE_DELAY * 2 ** (self.failures - 1), MAX_DELAY)

    def failed(self, now: float) -> float:
        """Count a wrong password; returns the wait the next attempt will get."""
        self.failures += 1
        self.last_failure = now
        return self.delay(now)

    def succeeded(self) -> None:
        self.failures = 0
