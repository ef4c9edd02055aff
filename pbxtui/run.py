"""Running the Pbx: headless under systemd, or with the console attached.

Both hold the same `core.pbx.Pbx`; the only difference is who owns the event loop. The loop
and the collector are set up the same way for both, and for worker processes
(pbxtui/loop.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import sys
from typing import Any

from core.settings import Settings
from pbxtui.eventlog import JOURNAL_LOG_FORMAT, LOG_FORMAT
from pbxtui.logbatch import BatchingStreamHandler
from pbxtui.loop import install_fast_loop, run_on_fast_loop, settle_after_start, tune_gc

log = logging.getLogger("pbxtui")


def configure_logging(stream: Any = None) -> BatchingStreamHandler:
    """Log to stderr. Under systemd (JOURNAL_STREAM set) journald stamps each line with its
    own time, so ours is left out; contrib/fail2ban's filter reads both forms."""
    handler = BatchingStreamHandler(stream or sys.stderr)
    journald = bool(os.environ.get("JOURNAL_STREAM")) and stream is None
    handler.setFormatter(logging.Formatter(JOURNAL_LOG_FORMAT if journald else LOG_FORMAT))
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
        for signum in (signal.SIGINT, signal.SIGTERM):
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
    from pbxtui.eventlog import SecurityLogFile, security_log_path

    install_fast_loop()
    tune_gc()
    app = PbxApp(settings, freeze_gc=True)
    security_log = SecurityLogFile(security_log_path(settings.db_path))
    app.pbx.bus.subscribe(security_log)
    try:
        app.run()
    except StartError as error:
        print(f"pbxtui: error: {error}", file=sys.stderr)
        return 2
    finally:
        security_log.close()
    if app.start_error is not None:
        print(f"pbxtui: error: {app.start_error}", file=sys.stderr)
        return 2
    return 0
