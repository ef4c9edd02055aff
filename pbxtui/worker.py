"""A worker process: `python -m pbxtui.worker FD`, started by the main process only.

FD is this process's end of its link to main (core/cluster/pool.py). The first message on it says
who this worker is and carries the UDP sockets; from then on the worker serves SIP until the
link closes. Its log lines go to main, which writes them with its own (to stderr headless,
nowhere visible under the console); SIGINT is main's to act on, SIGTERM stops the worker.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import socket
import sys

from core.cluster.changes import WorkerSetup
from core.cluster.links import receive_blocking
from core.settings import Settings
from pbxtui.run import run_on_fast_loop, settle_after_start

log = logging.getLogger("pbxtui.worker")

INIT_TIMEOUT = 30.0


class LinkLogHandler(logging.Handler):
    """Log records to main as ("log", level, logger, text); main writes them."""

    def __init__(self, send) -> None:
        super().__init__()
        self.send = send

    def emit(self, record: logging.LogRecord) -> None:
        try:
            text = record.getMessage()
            if record.exc_info:
                text += "\n" + logging.Formatter().formatException(record.exc_info)
            self.send(("log", record.levelno, record.name, text))
        except Exception:
            self.handleError(record)


def main(argv: list[str]) -> int:
    if len(argv) != 1 or not argv[0].isdigit():
        print("usage: python -m pbxtui.worker FD (started by pbxtui itself)", file=sys.stderr)
        return 2
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    link = socket.socket(fileno=int(argv[0]))
    try:
        message, fds = receive_blocking(link, INIT_TIMEOUT)
    except (TimeoutError, EOFError, OSError) as error:
        print(f"pbxtui worker: no start message from main: {error}", file=sys.stderr)
        return 1
    if message[0] != "init":
        print(f"pbxtui worker: unexpected first message {message[0]!r}", file=sys.stderr)
        return 1
    _, setup, settings = message
    return run_on_fast_loop(_serve(setup, settings, fds, link))


async def _serve(
    setup: WorkerSetup, settings: Settings, fds: list[int], link: socket.socket
) -> int:
    from core.cluster.worker import WorkerRole
    from core.pbx import Pbx, StartError

    index = setup.index
    udp = [socket.socket(fileno=fd) for fd in fds]
    role = WorkerRole(setup, link, udp)
    pbx = Pbx(settings, role=role)
    try:
        await pbx.start()
    except StartError as error:
        print(f"pbxtui worker {index}: {error}", file=sys.stderr)
        return 1
    root = logging.getLogger()
    root.handlers[:] = [LinkLogHandler(role.to_main)]
    root.setLevel(logging.INFO)
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, role.stopped.set)
    settle_after_start(loop)
    try:
        await role.stopped.wait()
    finally:
        with contextlib.suppress(Exception):
            loop.remove_signal_handler(signal.SIGTERM)
        await pbx.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
