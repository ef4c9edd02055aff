"""What pbxtui's processes tell each other when `[server] workers` is set.

Layout (README, "Worker processes"):

- **Workers** (1..N) read the shared UDP sockets and run the whole SIP route. The worker that
  reads a datagram checks it (bans, flood counting) and hands it to the worker that owns its
  Call-ID (`core/cluster/affinity.py`), which holds that call's transactions and dialog.
- **The main process** (0) keeps everything that is one per server: the console, the database
  writer, TCP connections (their messages go to the owner like datagrams; what a worker sends
  on a TCP flow comes back to main to write), NAT keep-alives, and binding/ban expiry.

Every process holds the full location table, the bans and the toll-fraud counts, so the route
never waits for another process. A change made by a worker goes to main, which stores it and
passes it on to the other workers; a change made by main goes to every worker. Events (the
console's feed and traffic, the log) and CDRs go from workers to main only. Each change is
applied quietly where it arrives: no event (the process that made it published one), and no
echo back: a table tells its publishers (the replicators below) only of its own changes,
never of those it adopts from another process (core/registrar/location.py `publishers`,
core/security/bans.py `publisher`, core/trunks/tollfraud.py `release`). The messages are
declared in core/cluster/messages.py.

Flood and brute-force limits are counted in the process that sees the packets, and each sees
about 1/N of a source's packets, so those limits are divided among the workers.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import replace

from core.accounting.cdrs import cdr_for
from core.cluster.affinity import MAIN
from core.cluster.links import Links
from core.cluster.messages import (
    Banned,
    Bind,
    CallCounted,
    CallReleased,
    CallsUp,
    Cdr,
    Change,
    FlowFields,
    Message,
    Publish,
    Unbanned,
    Unbind,
)
from core.events import Event, EventBus, SipTraffic, SourceUnbanned
from core.net.flow import Flow
from core.proxy.calls import Call
from core.registrar.location import Binding, LocationService
from core.security.bans import Ban
from core.security.guard import Security
from core.settings import SecuritySettings
from core.store.rows import BanRow, BindingRow
from core.trunks.tollfraud import CallLimiter
from core.users import UserDirectory

log = logging.getLogger("pbxtui.cluster")


def flow_fields(flow: Flow) -> FlowFields:
    return (flow.transport, flow.remote, flow.local, flow.connection_id)


def flow_of(fields: FlowFields) -> Flow:
    return Flow(*fields)


def divided_limits(settings: SecuritySettings, workers: int) -> SecuritySettings:
    """Flood and brute-force limits for one of `workers` processes that each see about
    1/`workers` of every source's messages (rounded up, so a limit never becomes 0)."""
    if workers <= 1:
        return settings

    def share(limit: int) -> int:
        return max(1, math.ceil(limit / workers))

    return replace(
        settings,
        flood_limit=share(settings.flood_limit),
        flood_limit_authenticated=share(settings.flood_limit_authenticated),
        flood_limit_carrier=share(settings.flood_limit_carrier),
        auth_fail_limit_per_ip=share(settings.auth_fail_limit_per_ip),
        auth_fail_limit_per_user=share(settings.auth_fail_limit_per_user),
    )


_ROW_FIELDS = BindingRow.__slots__


def _row_fields(binding: Binding) -> tuple:
    """The row as a plain tuple: pickled, a tuple costs a fifth of the dataclass (2 µs each
    way against 9), and every REGISTER is pickled three times on its way round."""
    row = binding.to_row()
    return tuple([getattr(row, name) for name in _ROW_FIELDS])


def bind_message(binding: Binding) -> Bind:
    return Bind(_row_fields(binding), binding.flow.connection_id)


def unbind_message(binding: Binding) -> Unbind:
    return Unbind(_row_fields(binding), binding.flow.connection_id)


def binding_of(fields: tuple, connection_id: int | None, now: float) -> Binding:
    """The binding a message describes; the clock is the wall clock in every process."""
    binding = Binding.from_row(BindingRow(*fields), now=now, wall=now)
    if connection_id is not None:
        flow = binding.flow
        binding.flow = Flow(flow.transport, flow.remote, flow.local, connection_id)
    return binding


# -- passing changes on ---------------------------------------------------------------------
class Replicator:
    """Sends this process's own changes to the others: a worker's to main, main's to every
    worker. Only own changes reach it (the tables' publishers); main passes on a worker's
    as they came (core/cluster/main.py)."""

    def __init__(self, links: Links, index: int) -> None:
        self.links = links
        self.index = index

    def emit(self, message: Change) -> None:
        if self.index == MAIN:
            self.links.broadcast(message)
        else:
            self.links.send(MAIN, message)


class BindingReplicator:
    """A location publisher: bindings saved and removed here go to the other processes."""

    def __init__(self, replicator: Replicator) -> None:
        self.replicator = replicator

    def binding_saved(self, binding: Binding) -> None:
        self.replicator.emit(bind_message(binding))

    def binding_removed(self, binding: Binding) -> None:
        self.replicator.emit(unbind_message(binding))


class BanReplicator:
    """A ban publisher: bans made here go to the other processes.

    Only main passes on lifted bans: a worker lifts a ban when it runs out, as main does
    and announces, or when main told it to."""

    def __init__(self, replicator: Replicator) -> None:
        self.replicator = replicator

    def ban_saved(self, ban: Ban) -> None:
        until = None if ban.permanent else ban.until_wall
        self.replicator.emit(Banned(ban.ip, until, ban.reason, ban.count))

    def ban_removed(self, ip: str) -> None:
        if self.replicator.index == MAIN:
            self.replicator.emit(Unbanned(ip))


class LimiterReplicator:
    """Outbound calls counted in and out here (toll-fraud limits hold across every worker)."""

    def __init__(self, replicator: Replicator) -> None:
        self.replicator = replicator

    def call_admitted(self, username: str, call_id: str, now: float) -> None:
        self.replicator.emit(CallCounted(username, call_id, now))

    def call_released(self, call_id: str) -> None:
        self.replicator.emit(CallReleased(call_id))


class CdrForwarder:
    """A worker's call sink: each finished call's CDR goes to main's database writer."""

    def __init__(self, links: Links) -> None:
        self.links = links

    def call_finished(self, call: Call) -> None:
        self.links.send(MAIN, Cdr(cdr_for(call)))


def announced_by_main(event: Event) -> bool:
    """Events main publishes itself: bans running out (every process lifts them)."""
    return type(event) is SourceUnbanned and event.detail == "expired"


class WorkerBus(EventBus):
    """A worker's bus: local listeners as usual, then every event goes to main, whose
    console and log show it. Nothing is kept here: nobody reads a worker's rings."""

    def __init__(self, send: Callable[[Message], object]) -> None:
        super().__init__(traffic_capacity=1, feed_capacity=1)
        self._send = send

    def publish(self, event: Event) -> None:
        if type(event) is SipTraffic:
            if self.capture_traffic:
                self._send(Publish(event))
            return
        self.notify(event)  # the local listeners, each with what it asked for
        if not announced_by_main(event):
            self._send(Publish(event))


def ban_row(ip: str, until: float | None, reason: str, count: int) -> BanRow:
    return BanRow(ip, until, reason, count, time.time())


class ChangeApplier:
    """Applies other processes' changes to this process's tables, quietly: no event (the
    process that made the change published it), and no publisher hears of it (the tables'
    adopt paths), so nothing is sent back."""

    def __init__(
        self,
        *,
        location: LocationService,
        security: Security,
        limiter: CallLimiter,
        users: UserDirectory,
        clock: Callable[[], float],
    ) -> None:
        self.location = location
        self.security = security
        self.limiter = limiter
        self.users = users
        self.clock = clock
        self._apply: dict[type, Callable[..., None]] = {
            Bind: self._bind,
            Unbind: self._unbind,
            Banned: self._banned,
            Unbanned: self._unbanned,
            CallCounted: self._counted,
            CallReleased: self._released,
            CallsUp: self._calls_up,
        }

    def apply(self, message: Message) -> bool:
        """False when the message is not a change (the caller handles it)."""
        apply = self._apply.get(type(message))
        if apply is None:
            return False
        apply(message)
        return True

    def _bind(self, message: Bind) -> None:
        now = self.clock()
        try:
            binding = binding_of(message.row, message.connection_id, now)
        except ValueError:
            return  # a contact that no longer parses: the other process had it anyway
        if binding.expires_at > now:
            self.location.adopt(binding)

    def _unbind(self, message: Unbind) -> None:
        try:
            binding = binding_of(message.row, message.connection_id, self.clock())
        except ValueError:
            return
        self.location.forget(binding.user, binding.key)

    def _banned(self, message: Banned) -> None:
        row = ban_row(message.ip, message.until, message.reason, message.hits)
        self.security.adopt_ban(row, self.clock())

    def _unbanned(self, message: Unbanned) -> None:
        self.security.forget_ban(message.ip)

    def _counted(self, message: CallCounted) -> None:
        user = self.users.get(message.username)
        hourly = user is not None and bool(user.max_calls_per_hour)
        self.limiter.count_in(message.username, message.call_id, message.at, hourly=hourly)

    def _released(self, message: CallReleased) -> None:
        self.limiter.release(message.call_id)

    def _calls_up(self, message: CallsUp) -> None:
        """Main's count of every call up, for a worker (re)started."""
        self.limiter.adopt(message.snapshot)
