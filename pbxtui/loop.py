"""The event loop and the garbage collector of every pbxtui process.

uvloop is used when it is installed (about 5x less CPU per datagram), plain asyncio
otherwise; the collector is tuned for a server that holds many live objects. The headless
server, the console and the worker processes all start this way (pbxtui/run.py,
pbxtui/app.py, pbxtui/worker.py).
"""

from __future__ import annotations

import asyncio
import gc
from collections.abc import Coroutine
from typing import Any


def install_fast_loop() -> str:
    """Use uvloop where available; returns the name of the loop in use (for the log)."""
    try:
        import uvloop  # type: ignore[import-not-found]
    except ImportError:
        return "asyncio"
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    return "uvloop"


# Young collections small enough to pass unnoticed (about 1 µs per object they scan): 5,000
# objects in the youngest generation, 20,000 in the middle one.
GC_THRESHOLDS = (5_000, 4)
# Automatic full collections off: a full pass scans every live object. Run on this period
# instead, it still frees any cycle that reached the oldest generation.
FULL_COLLECTION_SECONDS = 600.0


def tune_gc() -> None:
    """Short, predictable collector pauses for a server that holds many live objects.

    Measured under SIPp call load (bench/calls): at 300 calls/s some 400,000 objects are alive
    (transactions wait out Timers D, J and K for 32 s), and with the interpreter's own policy
    a full collection stalled the loop for 0.6 to 0.9 s, while young collections of 50,000
    objects took 35 to 160 ms: every phone retransmitted and the rate collapsed. Nothing on the
    SIP path builds reference cycles on purpose (transactions and branches cut theirs when
    they end), so the oldest generation is collected on a timer (`collect_periodically`), and
    `gc.freeze()` after start-up takes the tables loaded at start out of every collection.
    """
    gc.set_threshold(*GC_THRESHOLDS, 2**31 - 1)


def settle_after_start(loop: asyncio.AbstractEventLoop) -> None:
    """Start-up is over: what it loaded (users, bindings, bans, the console's widgets) lives
    as long as the process, so it leaves every later collection; full collections run on a
    timer from now on. Shared by the headless server and the console."""
    gc.freeze()
    collect_periodically(loop)


def collect_periodically(loop: asyncio.AbstractEventLoop) -> None:
    """A full collection every FULL_COLLECTION_SECONDS, for as long as the loop runs."""

    def collect() -> None:
        gc.collect()
        collect_periodically(loop)

    loop.call_later(FULL_COLLECTION_SECONDS, collect)


def run_on_fast_loop(coroutine: Coroutine[Any, Any, int]) -> int:
    """uvloop when there is one, the collector tuned, then run `coroutine` to its end."""
    install_fast_loop()
    tune_gc()
    return asyncio.run(coroutine)
