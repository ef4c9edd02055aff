"""A worker process's side of the cluster: its links, and what it reports to main.

See core/cluster/changes.py for the layout. A worker handles the messages whose Call-ID it owns,
hands the others to their owners, sends its changes (bindings, bans, outbound call counts),
events and CDRs to main, and applies the changes main passes on. It stops when its link to
main closes: main stopped or died, and a worker on its own would serve stale tables.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from typing import TYPE_CHECKING

from core.cluster.affinity import MAIN
from core.cluster.changes import BanReplicator, CdrForwarder, ClusterSide, WorkerSetup, flow_fields
from core.cluster.links import Message
from core.net.flow import Flow

if TYPE_CHECKING:
    from core.pbx import Pbx

log = logging.getLogger("pbxtui.cluster")


class WorkerCluster(ClusterSide):
    def __init__(self, pbx: Pbx, setup: WorkerSetup, main_link: socket.socket) -> None:
        super().__init__(pbx, setup.index, setup.workers)
        # What main sends waits in the socket until this worker's tables are loaded and its
        # sinks installed (`start`); what this worker sends goes at once.
        self.links.attach(MAIN, main_link, read=False)
        self.stopped = asyncio.Event()
        self._reload: asyncio.Task[None] | None = None
        self._reload_again = False

    def to_main(self, message: Message) -> bool:
        return self.links.send(MAIN, message)

    def install(self) -> None:
        """After the Pbx is built (with no store writers): changes go to main, CDRs too, and
        keep-alives are main's (the worker's keep-alive leaves the location's listeners)."""
        super().install()
        pbx = self.pbx
        location = pbx.location
        if pbx.natping in location.sinks:
            location.sinks.remove(pbx.natping)
        pbx.security.sink = BanReplicator(self.replicator, None)
        pbx.proxy.calls.sink = CdrForwarder(self.links)

    def start(self) -> None:
        """Tables loaded, sinks installed, sockets read: take in what main sent meanwhile."""
        self.links.read(MAIN)

    # -- messages ---------------------------------------------------------------------------
    def send(self, data: bytes, flow: Flow) -> bool:
        """The route's sender: UDP from the shared socket, TCP through main's connection."""
        if flow.transport == "udp":
            return self.pbx.transport.send(data, flow)
        return self.to_main(("send", data, flow_fields(flow)))

    def report(self) -> None:
        """Counters for main's header strip, about once a second."""
        pbx = self.pbx
        transport = pbx.transport
        self.to_main(
            (
                "stats",
                transport.received_messages,
                transport.sent_messages,
                pbx.dropped_here + self.links.dropped,
                self.forwarded,
            )
        )

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
                await self.pbx.reload_tables()
                if not self._reload_again:
                    break
        except Exception:
            log.exception("reloading users and carriers failed")
        finally:
            self._reload = None

    def _on_link_lost(self, peer: int) -> None:
        if peer == MAIN:
            self.stopped.set()

    def close(self) -> None:
        self.links.close()
