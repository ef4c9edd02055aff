"""A worker process's role: its links, and what it reports to main.

See core/cluster/changes.py for the layout. A worker handles the messages whose Call-ID it owns,
hands the others to their owners, sends its changes (bindings, bans, outbound call counts),
events and CDRs to main, and applies the changes main passes on. It writes nothing itself and
has none of the per-server duties (binding expiry, keep-alives: main's). It stops when its link
to main closes: main stopped or died, and a worker on its own would serve stale tables.
"""

from __future__ import annotations

import asyncio
import logging
import socket

from core.assembly import Core, Sinks
from core.cluster.affinity import MAIN
from core.cluster.changes import (
    BanReplicator,
    BindingReplicator,
    CdrForwarder,
    LimiterReplicator,
    WorkerBus,
    WorkerSetup,
    divided_limits,
    flow_fields,
)
from core.cluster.links import Message
from core.cluster.side import ClusterDuties, ClusterRole
from core.net.flow import Flow
from core.net.transport import Transport
from core.outbox import Sender
from core.registrar.location import BindingSink
from core.registrar.natping import NatKeepalive
from core.settings import ListenAddress, SecuritySettings, Settings
from core.store.database import Store

log = logging.getLogger("pbxtui.cluster")


class WorkerRole(ClusterRole):
    """Worker `setup.index`, given its link to main and the UDP sockets main bound. Build it
    on the event loop: what it sends to main goes at once; what main sends waits in the
    socket until the core is built and listening (`start`)."""

    def __init__(self, setup: WorkerSetup, main_link: socket.socket, udp: list[socket.socket]):
        super().__init__(setup.index, setup.workers)
        self.setup = setup
        self.udp = udp
        self.links.attach(MAIN, main_link, read=False)
        self.bus = WorkerBus(self.to_main)
        self.bus.capture_traffic = setup.capture_traffic
        self.stopped = asyncio.Event()  # the link to main closed

    def to_main(self, message: Message) -> bool:
        return self.links.send(MAIN, message)

    def listen(self, settings: Settings) -> tuple[ListenAddress, ...]:
        return self.setup.bound  # main's addresses, known before the first datagram

    def limits(self, settings: SecuritySettings) -> SecuritySettings:
        """Each worker sees about 1/N of every source's messages."""
        return divided_limits(settings, self.workers)

    def sinks(self, store: Store) -> Sinks:
        """Every change goes to main, which stores it; so do CDRs."""
        replicator = self.replicator
        return Sinks(
            bans=BanReplicator(replicator, None),
            calls=CdrForwarder(self.links),
            limiter=LimiterReplicator(replicator),
        )

    def binding_sinks(self, store: Store, keepalive: NatKeepalive) -> list[BindingSink]:
        return [BindingReplicator(self.replicator)]  # keep-alives are main's

    def sender(self, transport: Transport) -> Sender:
        """UDP from the shared socket, TCP through main's connection."""
        to_main = self.to_main

        def send(data: bytes, flow: Flow) -> bool:
            if flow.transport == "udp":
                return transport.send(data, flow)
            return to_main(("send", data, flow_fields(flow)))

        return send

    def announce(self, message: str) -> None:
        """Main gives the server's warnings, once."""
        log.debug("%s", message)

    def tables_changed(self) -> None:
        """A worker changes no tables: main tells the workers."""

    async def bind(self, transport: Transport, listen: tuple[ListenAddress, ...]) -> None:
        await transport.adopt_udp(self.udp)

    def bound(self, transport: Transport) -> tuple[ListenAddress, ...]:
        return self.setup.bound

    async def start(self, core: Core) -> WorkerDuties:
        """Tables loaded, sinks installed, sockets read: take in what main sent meanwhile."""
        duties = WorkerDuties(self, core)
        self.links.read(MAIN)
        self.to_main(("ready",))
        return duties


class WorkerDuties(ClusterDuties):
    def __init__(self, role: WorkerRole, core: Core) -> None:
        super().__init__(role, core)
        self.to_main = role.to_main
        self.stopped = role.stopped
        self._reload: asyncio.Task[None] | None = None
        self._reload_again = False

    def housekeep(self, now: float) -> None:
        """Counters for main's header strip, about once a second."""
        transport = self.core.transport
        self.to_main(
            (
                "stats",
                transport.received_messages,
                transport.sent_messages,
                self.core.dropped_here + self.links.dropped,
                self.forwarded,
            )
        )

    # -- messages ---------------------------------------------------------------------------
    def _on_side_message(self, peer: int, message: Message, fds: list[int]) -> None:
        kind = message[0]
        if kind == "peer":
            for extra in fds[1:]:
                socket.close(extra)
            if fds:
                self.links.attach(message[1], socket.socket(fileno=fds[0]))
            return
        for fd in fds:
            socket.close(fd)
        if kind == "reload":
            self._schedule_reload()
            return
        if not self.changes.apply(message):
            log.warning("unknown message %r from process %d", kind, peer)

    def _schedule_reload(self) -> None:
        if self._reload is not None:
            self._reload_again = True  # one more pass after this one, for changes it missed
            return
        self._reload = asyncio.get_running_loop().create_task(self._reload_tables())

    async def _reload_tables(self) -> None:
        try:
            while True:
                self._reload_again = False
                await self.core.reload_tables()
                if not self._reload_again:
                    break
        except Exception:
            log.exception("reloading users and carriers failed")
        finally:
            self._reload = None

    def _on_link_lost(self, peer: int) -> None:
        if peer == MAIN:
            self.stopped.set()

    async def stop(self) -> None:
        self.links.close()
