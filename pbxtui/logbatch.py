"""Log lines written a batch at a time, for the headless server under load.

Headless, the event log writes a line per call and per registration. One `write` per line
to journald's socket (or a pipe) is a system call that wakes the reader every time, hundreds
of times a second under load. Batched, the lines go out in one `write` every 0.1 s, at once
for warnings and errors, and whenever `MAX_BATCH_LINES` are waiting, so nothing is held
longer than that and an admin reading the journal sees no difference.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TextIO

FLUSH_SECONDS = 0.1
MAX_BATCH_LINES = 1_000


class BatchingStreamHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """A StreamHandler that writes each line at once until `start_batching`, then in batches."""

    def __init__(self, stream: TextIO) -> None:
        super().__init__(stream)
        self._lines: list[str] = []
        self._timer: asyncio.TimerHandle | None = None

    def handle(self, record: logging.LogRecord) -> bool:  # type: ignore[override]
        """`Handler.handle`, in one frame when the handler has no filter (the headless log's
        never has): the lock held as it holds it, around `emit`."""
        lock = self.lock
        if self.filters or lock is None:
            return super().handle(record)  # type: ignore[return-value]
        with lock:
            self.emit(record)
        return True

    def emit(self, record: logging.LogRecord) -> None:
        try:
            formatter = self.formatter
            line = formatter.format(record) if formatter is not None else self.format(record)
        except Exception:
            self.handleError(record)
            return
        self._lines.append(line)
        if (
            self._timer is None
            or record.levelno >= logging.WARNING
            or len(self._lines) >= MAX_BATCH_LINES
        ):
            self.flush()

    def flush(self) -> None:
        self.acquire()
        try:
            if self._lines:
                text = "\n".join(self._lines) + "\n"
                self._lines.clear()
                try:
                    self.stream.write(text)
                except Exception:
                    return  # a closed or broken stream must not take the server down
            super().flush()
        finally:
            self.release()

    def start_batching(self, loop: asyncio.AbstractEventLoop) -> None:
        """Hold lines and write them every FLUSH_SECONDS on `loop`, until `stop_batching`."""

        def tick() -> None:
            self.flush()
            self._timer = loop.call_later(FLUSH_SECONDS, tick)

        self._timer = loop.call_later(FLUSH_SECONDS, tick)

    def stop_batching(self) -> None:
        """Back to a write per line; what is waiting goes out now."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self.flush()
