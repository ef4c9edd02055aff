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
from collections.abc import Callable
from typing import Any

from core.accounting.cdrs import CdrWriter, Pricer
from core.assembly import Core, PbxStats, Sinks
from core.cluster.affinity import MAIN
from core.cluster.changes import BanReplicator, BindingReplicator, LimiterReplicator, flow_of
from core.cluster.messages import (
    CallReleased,
    CallsUp,
    Cdr,
    Figures,
    Init,
    LogLine,
    MediaFigures,
    Message,
    Publish,
    Ready,
    Reload,
    Send,
    WorkerSetup,
)
from core.cluster.pool import WorkerPool
from core.cluster.remote import RemoteCalls, WorkerFigures, lost_call
from core.cluster.side import ClusterDuties, ClusterRole
from core.events import CallEvent, ServerEvent
from core.net.transport import Transport
from core.proxy.calls import CallInfo
from core.roles import ServerDuties, ServerRole
from core.settings import ListenAddress, Settings
from core.store.database import Store
from core.store.ops import InsertCdr
from core.store.sinks import BanWriter

log = logging.getLogger("pbxtui.cluster")


class MainRole(ServerRole, ClusterRole):
    """The main process of `[server] workers` processes. `quiet`: the console owns the
    terminal, so the workers write nothing to stderr."""

    def __init__(self, settings: Settings, *, quiet: bool = False) -> None:
        ServerRole.__init__(self, settings)
        ClusterRole.__init__(self, MAIN, settings.workers)
        self.settings = settings
        self.quiet = quiet

    def sinks(self, store: Store, meter: Pricer) -> Sinks:
        """Main's changes go to every worker; bans and CDRs are stored as well (every
        process's CDRs are priced here, so main's spend ledger is exact)."""
        replicator = self.replicator
        return Sinks(
            bans=BanWriter(store),
            ban_publisher=BanReplicator(replicator),
            calls=CdrWriter(store, meter),
            limiter=LimiterReplicator(replicator),
            binding_publisher=BindingReplicator(replicator),
        )

    def tables_changed(self) -> None:
        """Users, carriers or DIDs changed in the database: workers read them again."""
        self.links.broadcast(Reload())

    async def bind(self, transport: Transport, listen: tuple[ListenAddress, ...]) -> None:
        # The workers read the UDP sockets; main only sends from them.
        await transport.start(listen, read_udp=False)

    async def start(self, core: Core) -> MainDuties:
        duties = MainDuties(self, core, ServerDuties(core, self.tables_changed))
        try:
            await duties.start()
        except Exception as error:
            await duties.stop()
            raise RuntimeError(f"cannot start the worker processes: {error}") from None
        self.announce_listening(core.transport, f", {self.workers} worker processes")
        return duties


class MainDuties(ClusterDuties):
    """Main at run time: the workers' pool, their figures and calls, their messages."""

    def __init__(self, role: MainRole, core: Core, server: ServerDuties) -> None:
        super().__init__(role, core)
        self.server = server
        self.bus = role.bus
        self.settings = role.settings
        self.figures: dict[int, WorkerFigures] = {}
        self._handlers: dict[type, Callable[[int, Any], None]] = {
            Send: self._send,
            Publish: self._publish,
            Cdr: self._cdr,
            Figures: self._figures,
            MediaFigures: self._media,
            LogLine: self._log,
            Ready: self._ready,
        }
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
        messages: list[Message] = [Init(setup, self.settings)]
        calls, windows = core.trunks.limiter.snapshot()
        if calls or windows:
            messages.append(CallsUp((calls, windows)))
        return messages

    # -- messages ---------------------------------------------------------------------------
    def _on_side_message(self, worker: int, message: Message, fds: list[int]) -> None:
        handle = self._handlers.get(type(message))
        if handle is not None:
            handle(worker, message)
        elif self.changes.apply(message):
            self.links.broadcast(message, skip=worker)  # to the other workers, as it came
        else:
            log.warning("unexpected %s from worker %d", type(message).__name__, worker)

    def _send(self, worker: int, message: Send) -> None:
        self.core.transport.send(message.data, flow_of(message.flow))

    def _publish(self, worker: int, message: Publish) -> None:
        """A worker's event, for the console and the log. Main's own listeners (the trunks)
        follow it too, quietly: what they change is another process's (no publisher hears)."""
        event = message.event
        if type(event) is CallEvent:
            self.remote_calls.follow(event, worker)
        self.bus.publish(event)

    def _cdr(self, worker: int, message: Cdr) -> None:
        self.core.store.submit(InsertCdr(self.core.books.meter.bill(message.row)))

    def _figures(self, worker: int, message: Figures) -> None:
        self.figures[worker] = WorkerFigures(*message)

    def _media(self, worker: int, message: MediaFigures) -> None:
        calls = self.remote_calls
        calls.media.update(message.calls, calls.__contains__)

    def _log(self, worker: int, message: LogLine) -> None:
        logging.getLogger(message.logger).log(message.level, "[worker %d] %s", worker, message.text)

    def _ready(self, worker: int, message: Ready) -> None:
        self.pool.ready(worker)

    def _on_link_lost(self, worker: int) -> None:
        self.figures.pop(worker, None)
        self._close_calls_of(worker)
        self.pool.lost(worker)

    def _close_calls_of(self, worker: int) -> None:
        """A worker died with calls up: they get their CDR and their end in the feed here,
        as it will never send them (core/cluster/changes.py `lost_call`).

        The end is published as main's own, so main's trunks count those calls out of the
        toll-fraud limits as for any call that ends, and every other worker is told to do the
        same; otherwise their users would stay at their limits until a restart. (An answered
        call may carry on end to end, uncounted: a limit too loose for a while beats a user
        locked out.)
        Every call counted in is here: its CallEvent travels with its count, and the proxy
        ends a call before `RemoteCalls` would forget it."""
        now = time.time()
        limiter = self.core.trunks.limiter
        for info in self.remote_calls.forget_worker(worker):
            cdr, event = lost_call(info, now)
            counted = info.call_id in limiter
            self.core.store.submit(InsertCdr(self.core.books.meter.bill(cdr)))
            self.bus.publish(event)
            if counted:
                self.links.broadcast(CallReleased(info.call_id))

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
