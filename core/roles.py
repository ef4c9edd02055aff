"""The roles a Pbx is built for, chosen before the build (core/assembly.py `Role`).

    standalone   one process: reads every socket, writes the store, pings NATed contacts
    main         beside worker processes (core/cluster/main.py): the same duties, but the
                 workers read the UDP sockets; changes and figures travel over links
    worker       one of N (core/cluster/worker.py): serves SIP, writes nothing itself

A role's `start(core)` returns its `Duties`: what the running process does differently, once
the core is built and bound. An attached console, a process without a SIP core of its own,
takes the same shape: its figures, calls and changes come from the service over a socket.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from core.accounting.cdrs import CdrWriter, Pricer
from core.assembly import Core, PbxStats, Sinks
from core.events import EventBus, ServerEvent
from core.net.flow import Flow
from core.net.transport import Transport
from core.outbox import Sender
from core.proxy.calls import CallInfo
from core.registrar.location import BindingSink
from core.registrar.natping import NatKeepalive
from core.settings import ListenAddress, SecuritySettings, Settings
from core.store.database import Store
from core.store.sinks import BanWriter, BindingWriter

log = logging.getLogger("pbxtui.pbx")


class ServerDuties:
    """What one process does for the whole server: the store's writer and its watch for
    changes made elsewhere, binding expiry and NAT keep-alives. The standalone process and
    the main process have them; workers do not."""

    def __init__(self, core: Core, tables_changed: Callable[[], None]) -> None:
        self.core = core
        self.tables_changed = tables_changed
        core.store.start_writer()
        core.store.watch_changes(self._changed_elsewhere)

    async def _changed_elsewhere(self) -> None:
        """The CLI wrote to the database: reload here, and in every worker."""
        await self.core.changed_elsewhere()
        self.tables_changed()

    def housekeep(self, now: float) -> None:
        core = self.core
        core.registrar.expire(now)
        natping = core.natping
        natping.on_timeout(now)
        send = core.outbox.send
        for binding, request in natping.due(now):
            send(request.to_bytes(), binding.target().flow)


class ServerRole:
    """What the standalone process and the main process have in common: they face the
    server's admin and its sockets themselves (the bus the console reads, the full limits,
    the listen addresses, the store's writers, the keep-alive)."""

    prices_calls = True  # every CDR is written, and priced, here

    def __init__(self, settings: Settings) -> None:
        self.bus = EventBus(settings.events.traffic_capacity, settings.events.feed_capacity)

    def listen(self, settings: Settings) -> tuple[ListenAddress, ...]:
        return tuple(settings.listen)

    def limits(self, settings: SecuritySettings) -> SecuritySettings:
        return settings

    def binding_sinks(self, store: Store, keepalive: NatKeepalive) -> list[BindingSink]:
        return [BindingWriter(store), keepalive]

    def sender(self, transport: Transport) -> Sender:
        return transport.udp_out.send

    def announce(self, message: str) -> None:
        """A warning for the admin: in the log and in the console's feed."""
        log.warning(message)
        self.bus.publish(ServerEvent(message, level="warning"))

    def bound(self, transport: Transport) -> tuple[ListenAddress, ...]:
        return tuple(transport.bound)

    def announce_listening(self, transport: Transport, extra: str = "") -> None:
        self.bus.publish(ServerEvent(f"listening on {', '.join(map(str, transport.bound))}{extra}"))


class StandaloneRole(ServerRole):
    """One process for everything (`[server] workers = 0`)."""

    index = 0

    def sinks(self, store: Store, meter: Pricer) -> Sinks:
        return Sinks(bans=BanWriter(store), calls=CdrWriter(store, meter))

    def tables_changed(self) -> None:
        """Nobody else reads the tables."""

    async def bind(self, transport: Transport, listen: tuple[ListenAddress, ...]) -> None:
        await transport.start(listen)

    async def start(self, core: Core) -> StandaloneDuties:
        duties = StandaloneDuties(core, ServerDuties(core, self.tables_changed))
        self.announce_listening(core.transport)
        return duties


class StandaloneDuties:
    """A standalone process at run time: every message is routed here."""

    lost = 0  # no links to lose anything on

    def __init__(self, core: Core, server: ServerDuties) -> None:
        self.core = core
        self.server = server
        self.route = core.route
        # The route's own (compiled) method: no interpreted frame per message.
        self.dispatch: Callable[[bytes, Flow], None] = core.route.on_message

    def housekeep(self, now: float) -> None:
        self.server.housekeep(now)

    def add_figures(self, stats: PbxStats) -> None:
        """Nothing to add: this process is the whole server."""

    def calls(self) -> list[CallInfo]:
        return self.core.proxy.calls.snapshot()

    async def stop(self) -> None:
        """Nothing of its own to stop: the Pbx stops the core."""
