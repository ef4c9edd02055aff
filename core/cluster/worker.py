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

from core.accounting.cdrs import Pricer
from core.assembly import Core, Sinks
from core.cluster.affinity import MAIN
from core.cluster.changes import (
    BanReplicator,
    BindingReplicator,
    CdrForwarder,
    LimiterReplicator,
    WorkerBus,
    divided_limits,
    flow_fields,
)
from core.cluster.media import MediaReporter
from core.cluster.messages import (
    Figures,
    MediaFigures,
    Message,
    Peer,
    Ready,
    Reload,
    Send,
    WorkerSetup,
)
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

    prices_calls = False  # its CDRs go to main, which prices them

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

    def sinks(self, store: Store, meter: Pricer) -> Sinks:
        """Every change goes to main, which stores it; so do CDRs (main prices them)."""
        replicator = self.replicator
        return Sinks(
            bans=None,
            calls=CdrForwarder(self.links),
            ban_publisher=BanReplicator(replicator),
            binding_publisher=BindingReplicator(replicator),
            limiter=LimiterReplicator(replicator),
        )

    def binding_sinks(self, store: Store, keepalive: NatKeepalive) -> list[BindingSink]:
        return []  # no store here, and keep-alives are main's

    def sender(self, transport: Transport) -> Sender:
        """UDP from the shared socket, TCP through main's connection."""
        to_main = self.to_main
        send_udp = transport.udp_out.send

        def send(data: bytes, flow: Flow) -> bool:
            if flow.transport == "udp":
                return send_udp(data, flow)
            return to_main(Send(data, flow_fields(flow)))

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
        self.to_main(Ready())
        return duties


class WorkerDuties(ClusterDuties):
    def __init__(self, role: WorkerRole, core: Core) -> None:
        super().__init__(role, core)
        self.to_main = role.to_main
        self.stopped = role.stopped
        self._reload: asyncio.Task[None] | None = None
        self._reload_again = False
        media = core.media
        self.media = None if media is None else MediaReporter(lambda: media.calls, media.stats)

    def housekeep(self, now: float) -> None:
        """Counters for main's header strip, and the media counters of the calls relayed here
        that changed (main's Calls pane), about once a second."""
        if self.media is not None:
            changed = self.media.report(now)
            if changed:
                self.to_main(MediaFigures(tuple(changed)))
        transport = self.core.transport
        self.to_main(
            Figures(
                transport.received_messages,
                transport.sent_messages,
                self.core.dropped_here + self.links.dropped,
                self.forwarded,
            )
        )

    # -- messages ---------------------------------------------------------------------------
    def _on_side_message(self, peer: int, message: Message, fds: list[int]) -> None:
        if type(message) is Peer:
            for extra in fds[1:]:
                socket.close(extra)
            if fds:
                self.links.attach(message.worker, socket.socket(fileno=fds[0]))
            return
        for fd in fds:
            socket.close(fd)
        if type(message) is Reload:
            self._schedule_reload()
        elif not self.changes.apply(message):
            log.warning("unexpected %s from process %d", type(message).__name__, peer)

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
