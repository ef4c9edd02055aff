"""Starting, watching and stopping the worker processes (main process only).

A worker is `python -m pbxtui.worker FD`: a fresh interpreter (nothing of main's event loop or
console is inherited), given one end of a link socketpair. Everything else comes over that
link: its number, the settings, the bound UDP sockets and the links to the other workers
(file descriptors passed with SCM_RIGHTS). A worker that dies is started again after a
second, at most MAX_RESTARTS times in RESTART_WINDOW seconds; past that main says so and
carries on with the workers it has.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import subprocess
import sys
import time
from collections import deque
from collections.abc import Callable

from core.cluster.links import Links, link_pair
from core.cluster.messages import Message, Peer

log = logging.getLogger("pbxtui.workers")

READY_TIMEOUT = 30.0  # a worker loads users and bindings from SQLite before it is ready
STOP_TIMEOUT = 5.0
RESTART_DELAY = 1.0
MAX_RESTARTS = 5
RESTART_WINDOW = 60.0


class WorkerStartError(Exception):
    """A worker did not come up; the message says which and why."""


class WorkerPool:
    def __init__(
        self,
        count: int,
        links: Links,
        start_messages: Callable[[int], list[Message]],
        udp_fds: list[int],
        *,
        quiet: bool = False,
        on_event: Callable[[str, str], None] = lambda message, level: None,
    ) -> None:
        self.count = count
        self.links = links
        self.start_messages = start_messages  # the first carries the UDP sockets
        self.udp_fds = udp_fds
        self.quiet = quiet  # the console owns the terminal: workers' stderr goes nowhere
        self.on_event = on_event
        self.processes: dict[int, subprocess.Popen[bytes]] = {}
        self._ready: dict[int, asyncio.Future[None]] = {}
        self._restarts: deque[float] = deque()
        self._respawns: set[asyncio.Task[None]] = set()
        self._stopping = False

    @property
    def alive(self) -> int:
        return sum(1 for process in self.processes.values() if process.poll() is None)

    async def start(self) -> None:
        """Start every worker, link them to each other, and wait until each is ready."""
        for index in range(1, self.count + 1):
            self._spawn(index)
        for index in range(1, self.count + 1):
            self._link_to_others(index, only_lower=True)
        await self._wait_ready(list(range(1, self.count + 1)))

    def _spawn(self, index: int) -> None:
        ours, theirs = link_pair()
        loop = asyncio.get_running_loop()
        self._ready[index] = loop.create_future()
        process = subprocess.Popen(
            [sys.executable, "-m", "pbxtui.worker", str(theirs.fileno())],
            pass_fds=(theirs.fileno(),),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL if self.quiet else None,
        )
        theirs.close()
        self.processes[index] = process
        self.links.attach(index, ours)
        first, *rest = self.start_messages(index)
        self.links.send(index, first, self.udp_fds)  # sent at once, alone: the worker's init
        for message in rest:
            self.links.send(index, message)

    def _link_to_others(self, index: int, *, only_lower: bool) -> None:
        """New links between worker `index` and the others (all of them after a restart)."""
        for other in range(1, self.count + 1):
            if other == index or (only_lower and other > index) or other not in self.links:
                continue
            mine, theirs = link_pair()
            with mine, theirs:
                self.links.send(index, Peer(other), [mine.fileno()])
                self.links.send(other, Peer(index), [theirs.fileno()])

    async def _wait_ready(self, indexes: list[int]) -> None:
        futures = [self._ready[index] for index in indexes]
        done, pending = await asyncio.wait(futures, timeout=READY_TIMEOUT)
        for future in done:
            future.result()  # raises WorkerStartError if the worker died first
        if pending:
            missing = [index for index in indexes if not self._ready[index].done()]
            raise WorkerStartError(
                f"worker process(es) {', '.join(map(str, missing))} not ready after "
                f"{READY_TIMEOUT:g} s"
            )

    def ready(self, index: int) -> None:
        future = self._ready.get(index)
        if future is not None and not future.done():
            future.set_result(None)

    def lost(self, index: int) -> None:
        """The link to worker `index` closed: it exited or died."""
        future = self._ready.get(index)
        if future is not None and not future.done():
            future.set_exception(WorkerStartError(f"worker process {index} exited at start"))
        if self._stopping:
            return
        process = self.processes.get(index)
        status = None if process is None else process.poll()
        message = f"worker process {index} stopped (exit status {status}); "
        now = time.monotonic()
        while self._restarts and self._restarts[0] <= now - RESTART_WINDOW:
            self._restarts.popleft()
        if len(self._restarts) >= MAX_RESTARTS:
            message += (
                f"not started again: {MAX_RESTARTS} restarts in the last "
                f"{RESTART_WINDOW:g} s. Its share of calls goes unanswered; restart pbxtui."
            )
            log.error(message)
            self.on_event(message, "error")
            return
        self._restarts.append(now)
        message += f"starting it again in {RESTART_DELAY:g} s"
        log.error(message)
        self.on_event(message, "error")
        task = asyncio.get_running_loop().create_task(self._respawn(index))
        self._respawns.add(task)
        task.add_done_callback(self._respawns.discard)

    async def _respawn(self, index: int) -> None:
        await asyncio.sleep(RESTART_DELAY)
        if self._stopping:
            return
        old = self.processes.get(index)
        if old is not None:
            with contextlib.suppress(Exception):
                old.kill()
                old.wait(timeout=1.0)
        try:
            self._spawn(index)
            self._link_to_others(index, only_lower=False)
            await self._wait_ready([index])
        except (OSError, WorkerStartError) as error:
            log.error("worker process %d could not be started again: %s", index, error)
            self.on_event(f"worker process {index} could not be started again: {error}", "error")
            return
        self.on_event(f"worker process {index} started again", "warning")

    async def stop(self) -> None:
        """Close the links (each worker stops when its link to main closes), then wait."""
        self._stopping = True
        for task in list(self._respawns):
            task.cancel()
        self.links.close()
        deadline = time.monotonic() + STOP_TIMEOUT
        for process in self.processes.values():
            while process.poll() is None and time.monotonic() < deadline:
                await asyncio.sleep(0.02)
            if process.poll() is None:
                log.warning("worker process %d did not stop in time: killed", process.pid)
                process.kill()
                with contextlib.suppress(Exception):
                    process.wait(timeout=1.0)
        self.processes.clear()
