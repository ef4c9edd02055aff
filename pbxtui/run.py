"""Running the Pbx: headless as a service, with the console in one process, or the console
alone attached to a service.

The first two hold the same `core.pbx.Pbx`; the only difference is who owns the event loop.
The loop and the collector are set up the same way for both, and for worker processes
(pbxtui/loop.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from core.settings import Settings
from pbxtui.eventlog import LOG_FORMAT
from pbxtui.logbatch import BatchingStreamHandler
from pbxtui.logformat import LineFormatter
from pbxtui.loop import install_fast_loop, run_on_fast_loop, settle_after_start, tune_gc

log = logging.getLogger("pbxtui")


def configure_logging(stream: Any = None, level: str = "info") -> BatchingStreamHandler:
    """Log to stderr. When stderr is the journal, journald stamps each line with its own time
    and reads its priority from a `<N>` prefix (pbxtui/systemd.py); contrib/fail2ban's filter
    reads both forms."""
    from pbxtui.service import log_level_number
    from pbxtui.systemd import JournalFormatter, stderr_is_journal

    handler = BatchingStreamHandler(stream or sys.stderr)
    if stream is None and stderr_is_journal():
        # journald stamps the time and reads the priority from the `<N>` prefix.
        handler.setFormatter(JournalFormatter())
    else:
        handler.setFormatter(LineFormatter(LOG_FORMAT))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(log_level_number(level))
    # Neither format shows a record's thread, process or task: not looked up for every line
    # (two interpreted frames for the thread's name alone, per call under load).
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
    if sys.version_info >= (3, 12):
        logging.logAsyncioTasks = False
    return handler


def run_headless(settings: Settings, reload_settings: Callable[[], Settings] | None = None) -> int:
    """The service: the core, its control socket and systemd's notifications; logs to stderr,
    stops cleanly on SIGINT/SIGTERM, reloads on SIGHUP. Exit 2 if it can't listen."""
    handler = configure_logging(level=settings.log_level)
    return run_on_fast_loop(_headless(settings, handler, reload_settings))


async def _headless(
    settings: Settings,
    log_handler: BatchingStreamHandler,
    reload_settings: Callable[[], Settings] | None = None,
) -> int:
    from core import compiled
    from core.control.client import ServiceRefused, ServiceUnavailable, running_service
    from core.control.server import ControlError
    from core.pbx import Pbx, StartError
    from pbxtui.eventlog import subscribe_event_log
    from pbxtui.service import Service

    # Before binding anything: a second service on the same database is refused whole.
    try:
        already = running_service(settings.db_path) is not None
    except ServiceRefused:
        already = True  # one runs, as a user this one may not reach
    except ServiceUnavailable:
        already = False
    if already:
        print(
            f"pbxtui: error: a pbxtui service already runs on {settings.db_path} "
            "(pbxtui status shows it)",
            file=sys.stderr,
        )
        return 2
    pbx = Pbx(settings)
    # Headless, nothing reads the traffic ring (the console's Traffic pane is its only
    # reader): the route then builds no event per message in or out, and no ring fills up.
    pbx.bus.capture_traffic = False
    subscribe_event_log(pbx.bus, log)  # only the events it writes a line for
    try:
        await pbx.start()
    except StartError as error:
        print(f"pbxtui: error: {error}", file=sys.stderr)
        return 2
    service = Service(pbx, reload_settings=reload_settings)
    try:
        await service.start()
    except ControlError as error:
        print(f"pbxtui: error: {error}", file=sys.stderr)
        await pbx.stop()
        return 2
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    settle_after_start(loop)
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    # `systemctl reload` / `kill -HUP`: the configuration and the TLS certificate are read
    # again now (a renewal hook), rather than at the next file check. Headless only: for the
    # console SIGHUP is a hang-up.
    loop.add_signal_handler(signal.SIGHUP, service.reload)
    listening = ", ".join(str(address) for address in pbx.listening)
    log.info(
        "pbxtui ready: domain %s, listening on %s, %d users; SIP core: %s; control socket %s",
        settings.domain,
        listening,
        pbx.user_count,
        compiled.describe(),
        service.control.path if service.control else "-",
    )
    service.ready(f"listening on {listening}")
    log_handler.start_batching(loop)  # from here on, lines go out every 0.1 s (logbatch.py)
    try:
        await stop.wait()
    finally:
        log_handler.stop_batching()
        for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            with contextlib.suppress(Exception):
                loop.remove_signal_handler(signum)
        log.info("stopping")
        await service.stop()
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
    print("pbxtui: the console quit and the SIP server with it", file=sys.stderr)
    return 0


def run_attached(settings: Settings, control_socket: Path) -> int:
    """The console alone, attached to the service listening on `control_socket`."""
    from core.control.client import RemoteCore
    from pbxtui.app import PbxApp

    core = RemoteCore(settings, control_socket)
    app = PbxApp(settings, core=core)
    app.run()
    if app.start_error is not None:
        print(f"pbxtui: error: {app.start_error}", file=sys.stderr)
        return 2
    if app.lost_reason is not None:
        print(f"pbxtui: {app.lost_reason}", file=sys.stderr)
        return 1
    welcome = core.welcome
    pid = f" (pid {welcome.pid})" if welcome else ""
    print(f"pbxtui: detached; the service{pid} keeps running", file=sys.stderr)
    return 0
