"""The service side of the control socket: accepts consoles and CLI calls, never waits for them.

Each connection is checked with SO_PEERCRED before a byte is read (core/control/peers.py),
then greeted (protocol version), then served: requests one at a time, and, for a console that
subscribed, a push of the live feed at the console's cadence.

The push never slows the SIP route. The route only appends to the bus's rings, as it does
with no console attached; a pump task wakes `PUSH_HZ` times a second and, per console, reads
what is new since that console's cursors and writes it to the socket. When a console stops
reading, the kernel's socket buffer fills, then the transport's: past `HIGH_WATER` bytes the
pump only moves the console's cursors on and counts what it skipped, and tells the console
how many it lost (`Dropped`) once it reads again. Memory per console is bounded by
HIGH_WATER plus one tick's batch; the number of consoles by `max_clients`.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import json
import logging
import os
import socket
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from core.control.codec import to_wire
from core.control.operations import ServiceContext, check_arguments, result_to_wire
from core.control.peers import AccessPolicy, peer_credentials
from core.control.protocol import (
    MAX_REQUEST_LINE,
    PROTOCOL_VERSION,
    Dropped,
    Figures,
    Hello,
    Message,
    ProtocolError,
    Pushed,
    Refused,
    Reply,
    Request,
    Subscribe,
    Welcome,
    decode,
)
from core.events import ContactRefreshed, Event

if TYPE_CHECKING:
    from core.pbx import Pbx

log = logging.getLogger("pbxtui.control")

PUSH_HZ = 10.0
HIGH_WATER = 1024 * 1024  # bytes queued for one console before its messages are dropped
FEED_PER_TICK = 1_000
# SIP messages pushed per tick to a console: the Traffic pane shows the newest anyway, and
# encoding every message of a loaded server would cost the route its CPU. The rest are
# counted as not shown.
TRAFFIC_PER_TICK = 100
HELLO_TIMEOUT = 5.0
DEFAULT_MAX_CLIENTS = 16


class ControlError(Exception):
    """The control socket cannot be opened: the message says why, for an admin."""


class ConsoleLink:
    """One connected client: its stream, what it subscribed to, its cursors, what it lost."""

    def __init__(self, writer: asyncio.StreamWriter, peer: str) -> None:
        self.writer = writer
        self.peer = peer
        self.feed = False
        self.traffic = False
        self.traffic_cursor = 0
        self.feed_cursor = 0
        self.not_sent = 0  # messages skipped since the last `Dropped` told the console
        self.dropped_total = 0

    def send(self, message: Message) -> None:
        self.write(message.encode())

    def write(self, line: bytes) -> None:
        if not self.writer.is_closing():
            self.writer.write(line)

    @property
    def backed_up(self) -> bool:
        transport = self.writer.transport
        return transport.is_closing() or transport.get_write_buffer_size() > HIGH_WATER


class ControlServer:
    def __init__(
        self,
        pbx: Pbx,
        path: Path,
        policy: AccessPolicy,
        *,
        version: str = "",
        max_clients: int = DEFAULT_MAX_CLIENTS,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.pbx = pbx
        self.path = path
        self.policy = policy
        self.max_clients = max_clients
        self.links: set[ConsoleLink] = set()
        self.context = ServiceContext(pbx, clock(), version, lambda: len(self.links))
        self._server: asyncio.AbstractServer | None = None
        self._pump: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    # -- lifecycle ------------------------------------------------------------------------
    async def start(self) -> None:
        """Bind the socket (mode from the policy), refusing to take over a live one."""
        path = self.path
        if path.exists() or path.is_symlink():
            if await _answers(path):
                raise ControlError(f"a pbxtui service already runs on this database ({path})")
            with contextlib.suppress(FileNotFoundError):
                path.unlink()  # left behind by a service that was killed
        # Created owner-only from the start: no window in which another user could connect.
        old_umask = os.umask(0o177)
        try:
            self._server = await asyncio.start_unix_server(
                self._serve, path=str(path), limit=MAX_REQUEST_LINE
            )
        except OSError as error:
            raise ControlError(f"cannot open the control socket {path}: {error.strerror}") from None
        finally:
            os.umask(old_umask)
        os.chmod(path, self.policy.socket_mode)
        if self.policy.group_gid is not None:
            os.chown(path, -1, self.policy.group_gid)
        self._pump = asyncio.create_task(self._pump_forever(), name="control-pump")

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
        if self._pump is not None:
            self._pump.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._pump
        # Closing each connection ends its task (its read returns nothing); a task cancelled
        # instead would be reported by asyncio's stream callback as an error.
        for link in list(self.links):
            link.writer.close()
        if self._tasks:
            _done, stuck = await asyncio.wait(list(self._tasks), timeout=2.0)
            for task in stuck:
                task.cancel()
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()
        self._set_traffic_capture()

    # -- one connection ---------------------------------------------------------------------
    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._tasks.add(task)
        try:
            await self._serve_checked(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            if task is not None:
                self._tasks.discard(task)
            with contextlib.suppress(Exception):
                writer.close()

    async def _serve_checked(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        sock: socket.socket = writer.get_extra_info("socket")
        peer = peer_credentials(sock)
        if not self.policy.allows(peer):
            log.warning(
                "control socket: refused pid %d uid %d gid %d", peer.pid, peer.uid, peer.gid
            )
            writer.write(Refused("not allowed: this user may not manage the service").encode())
            return
        # Every connection counts, greeted or not (this one included): one that never says
        # hello holds its place until HELLO_TIMEOUT.
        if len(self._tasks) > self.max_clients:
            writer.write(Refused(f"too many consoles attached ({self.max_clients})").encode())
            return
        try:
            line = await asyncio.wait_for(reader.readline(), HELLO_TIMEOUT)
            hello = decode(line, (Hello,))
        except (TimeoutError, ProtocolError, ValueError):
            writer.write(Refused("expected a hello line").encode())
            return
        assert isinstance(hello, Hello)
        if hello.version != PROTOCOL_VERSION:
            writer.write(
                Refused(
                    f"this service speaks control protocol {PROTOCOL_VERSION}, the client "
                    f"{hello.version}: run the pbxtui that matches the service"
                ).encode()
            )
            return
        pbx = self.pbx
        writer.write(
            Welcome(
                PROTOCOL_VERSION,
                os.getpid(),
                pbx.settings.domain,
                [str(address) for address in pbx.listening],
                self.context.started_at,
            ).encode()
        )
        link = ConsoleLink(writer, f"pid {peer.pid} uid {peer.uid}")
        self.links.add(link)
        try:
            await self._requests(reader, link)
        finally:
            self.links.discard(link)
            self._set_traffic_capture()

    async def _requests(self, reader: asyncio.StreamReader, link: ConsoleLink) -> None:
        while True:
            try:
                line = await reader.readline()
            except ValueError:  # longer than MAX_REQUEST_LINE: the stream is out of step
                link.send(Refused("request line too long"))
                return
            if not line:
                return
            try:
                message = decode(line, (Request, Subscribe))
            except ProtocolError as error:
                link.send(Refused(str(error)))
                return
            if isinstance(message, Subscribe):
                self._subscribe(link, message)
                continue
            assert isinstance(message, Request)
            link.send(await self._run(message))
            await link.writer.drain()

    async def _run(self, request: Request) -> Reply:
        try:
            operation = check_arguments(request.op, request.args)
            result = await operation.run(self.context, request.args)
        except ValueError as error:
            return Reply(request.id, error=str(error))
        except Exception:
            log.exception("control request %s failed", request.op)
            return Reply(request.id, error=f"{request.op} failed in the service (see its log)")
        return Reply(request.id, result=result_to_wire(result))

    def _subscribe(self, link: ConsoleLink, subscribe: Subscribe) -> None:
        bus = self.pbx.bus
        link.feed = subscribe.feed
        link.traffic = subscribe.traffic
        # From now on: the console asks for history it needs with requests (snapshots).
        link.feed_cursor = bus.feed.next_seq
        link.traffic_cursor = bus.traffic.next_seq
        self._set_traffic_capture()

    def _set_traffic_capture(self) -> None:
        """The route builds a traffic event per message only while a console shows them."""
        self.pbx.bus.capture_traffic = any(link.traffic for link in self.links)

    # -- the push ---------------------------------------------------------------------------
    async def _pump_forever(self) -> None:
        interval = 1.0 / PUSH_HZ
        while True:
            await asyncio.sleep(interval)
            try:
                self.push()
            except Exception:
                log.exception("control socket: push failed")

    def push(self) -> None:
        """One tick: what is new on the bus to every subscribed console that keeps up."""
        links = [link for link in self.links if link.feed or link.traffic]
        if not links:
            return
        bus = self.pbx.bus
        encoded: dict[int, str] = {}  # id(event) → its JSON, shared by every console
        figures: Figures | None = None
        traffic_limit = min(TRAFFIC_PER_TICK, self.pbx.settings.ui.traffic_per_refresh)
        for link in links:
            events: list[Event] = []
            if link.traffic:
                traffic, link.traffic_cursor, missed = bus.traffic.read_since(
                    link.traffic_cursor, traffic_limit
                )
                link.not_sent += missed
                events.extend(traffic)
            if link.feed:
                feed, link.feed_cursor, missed = bus.feed.read_since(
                    link.feed_cursor, FEED_PER_TICK
                )
                link.not_sent += missed
                # A refresh is one per REGISTER under load and no pane lists them (the
                # figures carry their count): not worth encoding.
                events.extend(event for event in feed if type(event) is not ContactRefreshed)
            if link.backed_up:
                link.not_sent += len(events)
                continue
            if link.not_sent:
                link.dropped_total += link.not_sent
                link.send(Dropped(link.not_sent))
                link.not_sent = 0
            if events:
                batch = []
                for event in events:
                    text = encoded.get(id(event))
                    if text is None:
                        text = encoded[id(event)] = json.dumps(
                            to_wire(event), separators=(",", ":"), allow_nan=False
                        )
                    batch.append(text)
                for line in Pushed.lines(batch):
                    link.write(line)
            if figures is None:
                figures = self._figures()
            link.send(figures)

    def _figures(self) -> Figures:
        stats = self.pbx.stats()
        return Figures(
            stats.messages_in,
            stats.messages_out,
            stats.contacts,
            stats.calls_up,
            stats.bans,
            stats.users,
            stats.dropped,
            dict(self.pbx.bus.counts),
        )


async def _answers(path: Path) -> bool:
    """Whether something listens on the Unix socket `path` (a live service, not a stale file)."""
    try:
        _reader, writer = await asyncio.wait_for(asyncio.open_unix_connection(str(path)), 2.0)
    except (OSError, TimeoutError) as error:
        if isinstance(error, OSError) and error.errno not in (
            errno.ECONNREFUSED,
            errno.ENOENT,
            errno.ENOTSOCK,
        ):
            raise ControlError(f"cannot check the control socket {path}: {error}") from None
        return False
    writer.close()
    return True
