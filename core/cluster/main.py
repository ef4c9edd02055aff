"""The main process's side of the cluster: starts the workers and takes in what they report.

See core/cluster/changes.py for the layout. Main reads no UDP itself once workers run; it hands the
messages of its TCP connections to their owners, writes what workers send on TCP flows,
stores their bindings, bans and CDRs, passes their changes on to the other workers, and
shows their events, calls and figures in the console.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING

from core.cluster.affinity import MAIN
from core.cluster.changes import (
    BanReplicator,
    ClusterSide,
    RemoteCalls,
    WorkerFigures,
    WorkerSetup,
    flow_of,
    lost_call,
)
from core.cluster.links import Message
from core.cluster.pool import WorkerPool
from core.events import CallEvent, ServerEvent
from core.store.ops import InsertCdr

if TYPE_CHECKING:
    from core.pbx import Pbx

log = logging.getLogger("pbxtui.cluster")


class MainCluster(ClusterSide):
    def __init__(self, pbx: Pbx, *, quiet: bool) -> None:
        super().__init__(pbx, MAIN, pbx.settings.workers)
        self.figures: dict[int, WorkerFigures] = {}
        proxy_settings = pbx.settings.proxy
        self.calls = RemoteCalls(
            proxy_settings.max_active_calls * self.workers,
            proxy_settings.max_call_seconds + proxy_settings.invite_timeout + 60.0,
        )
        self.pool = WorkerPool(
            self.workers,
            self.links,
            self._start_messages,
            [sock.fileno() for sock in pbx.transport.udp_sockets],
            quiet=quiet,
            on_event=self._server_event,
        )

    def _start_messages(self, index: int) -> list[Message]:
        """What a worker is told as it starts: its setup, then the outbound calls the other
        workers are carrying, so that one started again holds the toll-fraud limits too."""
        pbx = self.pbx
        bound = tuple(pbx.transport.bound)
        setup = WorkerSetup(index, self.workers, bound, pbx.bus.capture_traffic)
        messages: list[Message] = [("init", setup, pbx.settings)]
        calls, windows = pbx.trunks.limiter.snapshot()
        if calls or windows:
            messages.append(("limits", (calls, windows)))
        return messages

    def install(self) -> None:
        """Main's changes go to every worker: bindings, bans, outbound call counts. Bans are
        stored as well, by the store's writer behind the replicator."""
        super().install()
        security = self.pbx.security
        security.sink = BanReplicator(self.replicator, security.sink)

    async def start(self) -> None:
        # Bindings and bans written so far must be in the file the workers load.
        await self.pbx.store.flush()
        self.install()
        await self.pool.start()

    async def stop(self) -> None:
        await self.pool.stop()

    # -- messages ---------------------------------------------------------------------------
    def tables_changed(self) -> None:
        """Users, carriers or DIDs changed in the database: workers read them again."""
        self.links.broadcast(("reload",))

    def _on_side_message(self, worker: int, message: Message, fds: list[int]) -> None:
        pbx = self.pbx
        kind = message[0]
        if kind == "send":
            pbx.transport.send(message[1], flow_of(message[2]))
            return
        if kind == "event":
            event = message[1]
            if type(event) is CallEvent:
                self.calls.follow(event, worker)
            # Main's own listeners (the trunks) follow it quietly: the worker sends its
            # changes itself.
            self.replicator.applying = True
            try:
                pbx.bus.publish(event)
            finally:
                self.replicator.applying = False
            return
        if self.changes.apply(message):
            self.links.broadcast(message, skip=worker)  # to the other workers, as it came
            return
        if kind == "cdr":
            pbx.store.submit(InsertCdr(message[1]))
        elif kind == "stats":
            self.figures[worker] = WorkerFigures(*message[1:])
        elif kind == "log":
            _, level, name, text = message
            logging.getLogger(name).log(level, "[worker %d] %s", worker, text)
        elif kind == "ready":
            self.pool.ready(worker)
        else:
            log.warning("unknown message %r from worker %d", kind, worker)

    def _on_link_lost(self, worker: int) -> None:
        self.figures.pop(worker, None)
        self._close_calls_of(worker)
        self.pool.lost(worker)

    def _close_calls_of(self, worker: int) -> None:
        """A worker died with calls up: they get their CDR and their end in the feed here,
        as it will never send them (core/cluster/changes.py `lost_call`).

        The end is published as main's own, so main's trunks count those calls out of the
        toll-fraud limits as for any call that ends, and tell every other worker; otherwise
        their users would stay at their limits until a restart. (An answered call may carry
        on end to end, uncounted: a limit too loose for a while beats a user locked out.)
        Every call counted in is here: its CallEvent travels with its count, and the proxy
        ends a call before `RemoteCalls` would forget it."""
        pbx = self.pbx
        now = time.time()
        for info in self.calls.forget_worker(worker):
            cdr, event = lost_call(info, now)
            pbx.store.submit(InsertCdr(cdr))
            pbx.bus.publish(event)

    def _server_event(self, message: str, level: str) -> None:
        self.pbx.bus.publish(ServerEvent(message, level=level))

    # -- figures ----------------------------------------------------------------------------
    def totals(self) -> WorkerFigures:
        total = WorkerFigures()
        for figures in self.figures.values():
            total.messages_in += figures.messages_in
            total.messages_out += figures.messages_out
            total.dropped += figures.dropped
            total.forwarded += figures.forwarded
        return total

    def housekeeping(self, now: float) -> None:
        self.calls.sweep(now)
