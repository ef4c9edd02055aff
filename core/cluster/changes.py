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
applied quietly where it arrives: no event (the process that made it published one) and no
echo back.

Flood and brute-force limits are counted in the process that sees the packets, and each sees
about 1/N of a source's packets, so those limits are divided among the workers.
"""

from __future__ import annotations

import logging
import math
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from core.accounting.cdrs import cdr_for
from core.cluster.affinity import MAIN
from core.cluster.links import Links, Message
from core.events import (
    CallEvent,
    Event,
    EventBus,
    SecurityEvent,
    SipTraffic,
    SourceUnbanned,
)
from core.net.flow import Flow
from core.proxy.calls import ANSWERED, ENDED, FAILED, Call, CallInfo, call_event
from core.registrar.location import Binding, LocationService
from core.security.bans import Ban, BanSink
from core.settings import ListenAddress, SecuritySettings
from core.sip.errors import SipParseError
from core.sip.uri import parse_hostport
from core.store.database import BanRow, BindingRow, CdrRow

if TYPE_CHECKING:
    from core.security.guard import Security
    from core.trunks.tollfraud import CallLimiter
    from core.users import UserDirectory

log = logging.getLogger("pbxtui.cluster")

FlowFields = tuple[str, tuple[str, int], tuple[str, int], "int | None"]


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


def binding_message(kind: str, binding: Binding) -> Message:
    """The row as a plain tuple: pickled, a tuple costs a fifth of the dataclass (2 µs each
    way against 9), and every REGISTER is pickled three times on its way round."""
    row = binding.to_row()
    fields = tuple([getattr(row, name) for name in _ROW_FIELDS])
    return (kind, fields, binding.flow.connection_id)


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
    worker. Changes it is applying for another process are not sent (`applying`): main
    passes those on as they came (core/cluster/main.py)."""

    def __init__(self, links: Links, index: int) -> None:
        self.links = links
        self.index = index
        self.applying = False

    def emit(self, message: Message) -> None:
        if self.applying:
            return
        if self.index == MAIN:
            self.links.broadcast(message)
        else:
            self.links.send(MAIN, message)


class BindingReplicator:
    """A location sink: saved and removed bindings go to the other processes."""

    def __init__(self, replicator: Replicator) -> None:
        self.replicator = replicator

    def binding_saved(self, binding: Binding) -> None:
        self.replicator.emit(binding_message("bind", binding))

    def binding_removed(self, binding: Binding) -> None:
        self.replicator.emit(binding_message("unbind", binding))


class BanReplicator:
    """A ban sink: bans go to the other processes, then to `store` (main's writer) if any.

    Only main passes on lifted bans: a worker lifts a ban when it runs out, as main does
    and announces, or when main told it to."""

    def __init__(self, replicator: Replicator, store: BanSink | None) -> None:
        self.replicator = replicator
        self.store = store

    def ban_saved(self, ban: Ban) -> None:
        until = None if ban.permanent else ban.until_wall
        self.replicator.emit(("ban", ban.ip, until, ban.reason, ban.count))
        if self.store is not None:
            self.store.ban_saved(ban)

    def ban_removed(self, ip: str) -> None:
        if self.replicator.index == MAIN:
            self.replicator.emit(("unban", ip))
        if self.store is not None:
            self.store.ban_removed(ip)


class LimiterReplicator:
    """Outbound calls counted in and out (toll-fraud limits hold across every worker)."""

    def __init__(self, replicator: Replicator) -> None:
        self.replicator = replicator

    def call_admitted(self, username: str, call_id: str, now: float) -> None:
        self.replicator.emit(("limit+", username, call_id, now))

    def call_released(self, call_id: str) -> None:
        self.replicator.emit(("limit-", call_id))


class CdrForwarder:
    """A worker's call sink: each finished call's CDR goes to main's database writer."""

    def __init__(self, links: Links) -> None:
        self.links = links

    def call_finished(self, call: Call) -> None:
        self.links.send(MAIN, ("cdr", cdr_for(call)))


def announced_by_main(event: Event) -> bool:
    """Events main publishes itself: bans running out (every process lifts them)."""
    if type(event) is SourceUnbanned:
        return event.reason == "expired"
    if type(event) is SecurityEvent:
        return event.action == "unbanned" and event.detail == "expired"
    return False


class WorkerBus(EventBus):
    """A worker's bus: local listeners as usual, then every event goes to main, whose
    console and log show it. Nothing is kept here: nobody reads a worker's rings."""

    def __init__(self, send: Callable[[Message], object]) -> None:
        super().__init__(traffic_capacity=1, feed_capacity=1)
        self._send = send

    def publish(self, event: Event) -> None:
        if type(event) is SipTraffic:
            if self.capture_traffic:
                self._send(("event", event))
            return
        for listener in self._listeners:
            listener(event)
        if not announced_by_main(event):
            self._send(("event", event))


# -- main's view of the workers --------------------------------------------------------------
@dataclass(slots=True)
class WorkerFigures:
    """A worker's counters, as it last reported them (about once a second)."""

    messages_in: int = 0
    messages_out: int = 0
    dropped: int = 0
    forwarded: int = 0


class RemoteCalls:
    """The workers' active calls, followed from their CallEvents, for the console.

    Bounded: at most `capacity` calls; a call whose end was never heard of (its worker died)
    goes when its worker is lost or after `max_age` seconds.
    """

    def __init__(self, capacity: int, max_age: float) -> None:
        self.capacity = capacity
        self.max_age = max_age
        self._calls: OrderedDict[str, tuple[CallInfo, int]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._calls)

    def follow(self, event: CallEvent, worker: int) -> None:
        call_id = event.call_id
        if event.state in (ENDED, FAILED):
            self._calls.pop(call_id, None)
            return
        held = self._calls.get(call_id)
        started_at = event.at if held is None else held[0].started_at
        answered_at = None if held is None else held[0].answered_at
        if event.state == ANSWERED and answered_at is None:
            answered_at = event.at
        info = CallInfo(
            call_id,
            event.caller,
            event.callee,
            event.source,
            event.state,
            started_at,
            answered_at,
            event.direction,
        )
        self._calls[call_id] = (info, worker)
        if held is None and len(self._calls) > self.capacity:
            self._calls.popitem(last=False)

    def forget_worker(self, worker: int) -> list[CallInfo]:
        """The calls of a worker that died, which will never be heard of again."""
        gone = [call_id for call_id, (_, owner) in self._calls.items() if owner == worker]
        return [self._calls.pop(call_id)[0] for call_id in gone]

    def sweep(self, now: float) -> None:
        while self._calls:
            call_id, (info, _) = next(iter(self._calls.items()))
            if info.started_at + self.max_age > now:
                break
            del self._calls[call_id]

    def snapshot(self) -> list[CallInfo]:
        return [info for info, _ in self._calls.values()]


LOST_CALL_REASON = "worker process stopped"


def lost_call(info: CallInfo, now: float) -> tuple[CdrRow, CallEvent]:
    """The CDR and the last event of a call whose worker died, from what main knew of it.

    The call itself may carry on end to end (its BYE follows our Record-Route), but nobody
    follows it any more: it is accounted for as ending now, so it is not missing from the
    CDRs (status 200 if it was answered, 0 if no final answer was known)."""
    answered_at = info.answered_at
    try:
        host, port = parse_hostport(info.source)  # as `Call.source_text` wrote it
    except SipParseError:  # no source known
        host, port = "", None
    call = Call(
        info.call_id,
        info.caller,
        info.callee,
        (host, port or 0),
        info.started_at,
        direction=info.direction,
        state=FAILED if answered_at is None else ENDED,
        answered_at=answered_at,
        ended_at=now,
        status=0 if answered_at is None else 200,
        reason=LOST_CALL_REASON,
    )
    return cdr_for(call), call_event(call, now)


def ban_row(ip: str, until: float | None, reason: str, count: int) -> BanRow:
    return BanRow(ip, until, reason, count, time.time())


CHANGES = frozenset({"bind", "unbind", "ban", "unban", "limit+", "limit-", "limits"})


class ChangeApplier:
    """Applies other processes' changes to this process's tables, quietly: no event (the
    process that made the change published it), and the replicator sends nothing."""

    def __init__(
        self,
        replicator: Replicator,
        *,
        location: LocationService,
        security: Security,
        limiter: CallLimiter,
        users: UserDirectory,
        clock: Callable[[], float],
    ) -> None:
        self.replicator = replicator
        self.location = location
        self.security = security
        self.limiter = limiter
        self.users = users
        self.clock = clock

    def apply(self, message: Message) -> bool:
        """False when the message is not a change (the caller handles it)."""
        if message[0] not in CHANGES:
            return False
        replicator = self.replicator
        replicator.applying = True
        try:
            self._apply(message, self.clock())
        finally:
            replicator.applying = False
        return True

    def _apply(self, message: Message, now: float) -> None:
        kind = message[0]
        if kind in ("bind", "unbind"):
            _, row, connection_id = message
            try:
                binding = binding_of(row, connection_id, now)
            except ValueError:
                return  # a contact that no longer parses: the other process had it anyway
            if kind == "unbind":
                self.location.forget(binding.user, binding.key)
            elif binding.expires_at > now:
                self.location.adopt(binding)
        elif kind == "ban":
            _, ip, until, reason, count = message
            self.security.adopt_ban(ban_row(ip, until, reason, count), now)
        elif kind == "unban":
            self.security.forget_ban(message[1])
        elif kind == "limit+":
            _, username, call_id, at = message
            user = self.users.get(username)
            hourly = user is not None and bool(user.max_calls_per_hour)
            self.limiter.count_in(username, call_id, at, hourly=hourly)
        elif kind == "limit-":
            self.limiter.release(message[1])
        elif kind == "limits":  # main's count of every call up, for a worker (re)started
            self.limiter.adopt(message[1])


# -- what both sides share ---------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class WorkerSetup:
    """What main tells a worker at start (the "init" message)."""

    index: int
    workers: int
    bound: tuple[ListenAddress, ...]  # main's listen addresses, for Via and Record-Route
    capture_traffic: bool  # the console's Traffic pane wants every message
