"""Running the Pbx: headless under systemd, or with the console attached.

Both hold the same `core.pbx.Pbx`; the only difference is who owns the event loop. uvloop
is used when it is installed (about 5x less CPU per datagram), plain asyncio otherwise.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import signal
import sys
from collections.abc import Coroutine
from typing import Any

from core.settings import Settings
from pbxtui.logbatch import BatchingStreamHandler

log = logging.getLogger("pbxtui")


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


def configure_logging(stream: Any = None) -> BatchingStreamHandler:
    handler = BatchingStreamHandler(stream or sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.INFO)
    return handler


def run_headless(settings: Settings) -> int:
    """The core only: logs to stderr, stops cleanly on SIGINT/SIGTERM. Exit 2 if it can't listen."""
    handler = configure_logging()
    return run_on_fast_loop(_headless(settings, handler))


async def _headless(settings: Settings, log_handler: BatchingStreamHandler) -> int:
    from core import compiled
    from core.pbx import Pbx, StartError
    from pbxtui.eventlog import EventLogger

    pbx = Pbx(settings)
    # Headless, nothing reads the traffic ring (the console's Traffic pane is its only
    # reader): the route then builds no event per message in or out, and no ring fills up.
    pbx.bus.capture_traffic = False
    logger = EventLogger(log)
    pbx.bus.subscribe(logger)
    try:
        await pbx.start()
    except StartError as error:
        print(f"pbxtui: error: {error}", file=sys.stderr)
        return 2
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    settle_after_start(loop)
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    # `systemctl reload` / `kill -HUP`: load the TLS certificate again now (a renewal hook),
    # rather than at the next file check. Headless only: for the console SIGHUP is a hang-up.
    loop.add_signal_handler(signal.SIGHUP, pbx.reload_certificate)
    log.info(
        "pbxtui ready: domain %s, listening on %s, %d users; SIP core: %s",
        settings.domain,
        ", ".join(str(address) for address in pbx.listening),
        pbx.user_count,
        compiled.describe(),
    )
    log_handler.start_batching(loop)  # from here on, lines go out every 0.1 s (logbatch.py)
    try:
        await stop.wait()
    finally:
        log_handler.stop_batching()
        for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            with contextlib.suppress(Exception):
                loop.remove_signal_handler(signum)
        log.info("stopping")
        await pbx.stop()
        log.info("stopped")
    return 0


def run_console(settings: Settings) -> int:
    """SIP core and the Textual console in one process and one event loop."""
    from core.pbx import StartError
    from pbxtui.app import PbxApp

    install_fast_loop()
    tune_gc()
    app = PbxApp(settings, freeze_gc=True)
    try:
        app.run()
    except StartError as error:
        print(f"pbxtui: error: {error}", file=sys.stderr)
        return 2
    if app.start_error is not None:
        print(f"pbxtui: error: {app.start_error}", file=sys.stderr)
        return 2
    return 0
