"""The main process's role beside worker processes: it starts them and takes in what they report.

See core/cluster/changes.py for the layout. Main reads no UDP itself once workers run; it hands the
messages of its TCP connections to their owners, writes what workers send on TCP flows,
stores their bindings, bans and CDRs, passes their changes on to the other workers, and
shows their events, calls and figures in the console. The per-server duties (the store's
writer, binding expiry, NAT keep-alives) are main's, as in a standalone process.
"""

from __future__ import annotations

import logging
import time

from core.accounting.cdrs import CdrWriter
from core.assembly import Core, PbxStats, Sinks
from core.cluster.affinity import MAIN
from core.cluster.changes import (
    BanReplicator,
    BindingReplicator,
    LimiterReplicator,
    RemoteCalls,
    WorkerFigures,
    WorkerSetup,
    flow_of,
    lost_call,
)
from core.cluster.links import Message
from core.cluster.pool import WorkerPool
from core.cluster.side import ClusterDuties, ClusterRole
from core.events import CallEvent, EventBus, ServerEvent
from core.net.transport import Transport
from core.outbox import Sender
from core.proxy.calls import CallInfo
from core.registrar.location import BindingSink
from core.registrar.natping import NatKeepalive
from core.roles import ServerDuties, announce_on
from core.settings import ListenAddress, SecuritySettings, Settings
from core.store.database import InsertCdr, Store
from core.store.sinks import BanWriter, BindingWriter

log = logging.getLogger("pbxtui.cluster")


class MainRole(ClusterRole):
    """The main process of `[server] workers` processes. `quiet`: the console owns the
    terminal, so the workers write nothing to stderr."""

    def __init__(self, settings: Settings, *, quiet: bool = False) -> None:
        super().__init__(MAIN, settings.workers)
        self.settings = settings
        self.quiet = quiet
        self.bus = EventBus(settings.events.traffic_capacity, settings.events.feed_capacity)

    def listen(self, settings: Settings) -> tuple[ListenAddress, ...]:
        return tuple(settings.listen)

    def limits(self, settings: SecuritySettings) -> SecuritySettings:
        return settings

    def sinks(self, store: Store) -> Sinks:
        """Main's changes go to every worker; bans and CDRs are stored as well."""
        replicator = self.replicator
        return Sinks(
            bans=BanReplicator(replicator, BanWriter(store)),
            calls=CdrWriter(store),
            limiter=LimiterReplicator(replicator),
        )

    def binding_sinks(self, store: Store, keepalive: NatKeepalive) -> list[BindingSink]:
        return [BindingWriter(store), keepalive, BindingReplicator(self.replicator)]

    def sender(self, transport: Transport) -> Sender:
        return transport.send

    def announce(self, message: str) -> None:
        announce_on(self.bus, message)

    def tables_changed(self) -> None:
        """Users, carriers or DIDs changed in the database: workers read them again."""
        self.links.broadcast(("reload",))

    async def bind(self, transport: Transport, listen: tuple[ListenAddress, ...]) -> None:
        # The workers read the UDP sockets; main only sends from them.
        await transport.start(listen, read_udp=False)

    def bound(self, transport: Transport) -> tuple[ListenAddress, ...]:
        return tuple(transport.bound)

    async def start(self, core: Core) -> MainDuties:
        duties = MainDuties(self, core, ServerDuties(core, self.tables_changed))
        try:
            await duties.start()
        except Exception as error:
            await duties.stop()
            raise RuntimeError(f"cannot start the worker processes: {error}") from None
        listening = ", ".join(map(str, core.transport.bound))
        self.bus.publish(ServerEvent(f"listening on {listening}, {self.workers} worker processes"))
        return duties


class MainDuties(ClusterDuties):
    """Main at run time: the workers' pool, their figures and calls, their messages."""

    def __init__(self, role: MainRole, core: Core, server: ServerDuties) -> None:
        super().__init__(role, core)
        self.server = server
        self.bus = role.bus
        self.settings = role.settings
        self.figures: dict[int, WorkerFigures] = {}
        proxy_settings = role.settings.proxy
        self.remote_calls = RemoteCalls(
            proxy_settings.max_active_calls * self.workers,
            proxy_settings.max_call_seconds + proxy_settings.invite_timeout + 60.0,
        )
        self.pool = WorkerPool(
            self.workers,
            self.links,
            self._start_messages,
            [sock.fileno() for sock in core.transport.udp_sockets],
            quiet=role.quiet,
            on_event=self._server_event,
        )

    async def start(self) -> None:
        # Bindings and bans written so far must be in the file the workers load.
        await self.core.store.flush()
        await self.pool.start()

    async def stop(self) -> None:
        await self.pool.stop()

    def _start_messages(self, index: int) -> list[Message]:
        """What a worker is told as it starts: its setup, then the outbound calls the other
        workers are carrying, so that one started again holds the toll-fraud limits too."""
        core = self.core
        bound = tuple(core.transport.bound)
        setup = WorkerSetup(index, self.workers, bound, self.bus.capture_traffic)
        messages: list[Message] = [("init", setup, self.settings)]
        calls, windows = core.trunks.limiter.snapshot()
        if calls or windows:
            messages.append(("limits", (calls, windows)))
        return messages

    # -- messages ---------------------------------------------------------------------------
    def _on_side_message(self, worker: int, message: Message, fds: list[int]) -> None:
        core = self.core
        kind = message[0]
        if kind == "send":
            core.transport.send(message[1], flow_of(message[2]))
            return
        if kind == "event":
            event = message[1]
            if type(event) is CallEvent:
                self.remote_calls.follow(event, worker)
            # Main's own listeners (the trunks) follow it quietly: the worker sends its
            # changes itself.
            replicator = self.changes.replicator
            replicator.applying = True
            try:
                self.bus.publish(event)
            finally:
                replicator.applying = False
            return
        if self.changes.apply(message):
            self.links.broadcast(message, skip=worker)  # to the other workers, as it came
            return
        if kind == "cdr":
            core.store.submit(InsertCdr(message[1]))
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
        now = time.time()
        for info in self.remote_calls.forget_worker(worker):
            cdr, event = lost_call(info, now)
            self.core.store.submit(InsertCdr(cdr))
            self.bus.publish(event)

    def _server_event(self, message: str, level: str) -> None:
        self.bus.publish(ServerEvent(message, level=level))

    # -- figures ----------------------------------------------------------------------------
    def totals(self) -> WorkerFigures:
        total = WorkerFigures()
        for figures in self.figures.values():
            total.messages_in += figures.messages_in
            total.messages_out += figures.messages_out
            total.dropped += figures.dropped
            total.forwarded += figures.forwarded
        return total

    def add_figures(self, stats: PbxStats) -> None:
        """What the workers last reported, added to main's own (TCP, keep-alives)."""
        totals = self.totals()
        stats.messages_in += totals.messages_in
        stats.messages_out += totals.messages_out
        stats.dropped += totals.dropped
        stats.calls_up = len(self.remote_calls)

    def calls(self) -> list[CallInfo]:
        return self.remote_calls.snapshot()

    def housekeep(self, now: float) -> None:
        self.remote_calls.sweep(now)
        self.server.housekeep(now)
