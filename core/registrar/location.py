"""The location service: which contacts each user has registered, and how to reach them.

RFC 3261 §10 calls it the location service: the registrar writes bindings, the proxy reads
them to fork an INVITE. It lives in memory because the route never waits on SQLite; changes
leave through `BindingSink`s (the Pbx connects one to the store's batching writer, the NAT
keep-alive is another) and come back after a restart through `restore()`.

A `Binding` remembers the `Flow` its REGISTER really arrived on, not only the Contact the
phone wrote, because behind NAT the Contact names an address nobody can reach. `target()`
turns the two into where a request for the contact should go (the fix_nated_register idea of
Kamailio's nathelper: keep the Contact as the Request-URI, send to the source address).

Time comes in as `now`, from the caller's clock (monotonic in the server), and is never read
here; wall-clock times are kept beside it only for display and for the database, where a
monotonic time would mean nothing after a restart.
"""

from __future__ import annotations

import heapq
import math
import sys
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Final, Protocol

from core.events import ContactExpired, ContactUnregistered, EventBus
from core.net.flow import Flow
from core.settings import RegistrarSettings
from core.sip.errors import SipParseError
from core.sip.headers import readable
from core.sip.hostport import format_host
from core.sip.uri import SipUri, parse_uri, target_host
from core.store.rows import BindingRow

DEFAULT_MAX_CONTACTS = 100_000  # all users together: a memory bound, not a licence
SIP_PORT = 5060
SIPS_PORT = 5061

BindingKey = tuple[str | int | None, ...]


class LocationFull(Exception):
    """A binding could not be added: the user or the whole table is at its limit."""


def contact_key(
    uri: SipUri, instance_id: str | None = None, reg_id: int | None = None
) -> BindingKey:
    """What makes two Contacts of one user the same binding.

    RFC 5626 §6: with `+sip.instance` and `reg-id` the binding is the (instance, reg-id) pair,
    whatever URI or flow the phone uses now; with an instance alone, the instance (a rebooted
    phone on a new port replaces its old binding instead of adding one). Otherwise RFC 3261
    §10.3 step 6 compares the URIs by §19.1.4: scheme, user and password exactly, the host
    without regard to case, the port as written, and the user/ttl/method/maddr/transport
    parameters; other parameters do not decide whether two contacts are the same.
    """
    return _contact_key(uri, instance_id, reg_id, None, None)


def _contact_key(
    uri: SipUri,
    instance_id: str | None,
    reg_id: int | None,
    owner: str | None,
    flow: Flow | None,
) -> BindingKey:
    """`contact_key`, made of strings a binding holds anyway where they are equal: the
    user's name (`owner`) for the URI's user part, the source address of `flow` for its
    host (a phone not behind NAT writes where it sends from). Each binding keeps its key,
    so this saves about 110 bytes of copies per binding."""
    if instance_id is not None:
        return ("instance", instance_id, reg_id)
    # Every binding keeps its key: the host's own string when it is already lower case (an
    # address always is), and no trailing Nones when no deciding parameter is present.
    host = uri.host
    lowered = host.lower()
    if lowered == host:
        lowered = host
    user = uri.user
    if owner is not None and user == owner:
        user = owner
    if flow is not None and lowered == flow.remote[0]:
        lowered = flow.remote[0]
    scheme = _SCHEMES.get(uri.scheme, uri.scheme)  # one "sip" for every key, not a copy each
    params = uri.params
    if params:
        decided = tuple([_lower(params.get(name)) for name in _KEY_PARAMS])
        if decided != _NO_PARAMS:
            return ("uri", scheme, user, uri.password, lowered, uri.port, *decided)
    return ("uri", scheme, user, uri.password, lowered, uri.port)


# The URI parameters that decide whether two Contacts are one binding (§19.1.4).
_KEY_PARAMS = ("transport", "user", "ttl", "method", "maddr")
_NO_PARAMS = (None,) * len(_KEY_PARAMS)
_SCHEMES = {"sip": "sip", "sips": "sips"}
# The values those parameters mostly have, one string each for every key that holds one.
_COMMON_VALUES = {value: value for value in ("udp", "tcp", "tls", "sctp", "ws", "wss", "phone")}


def _lower(value: str | None) -> str | None:
    if value is None:
        return None
    lowered = value.lower()
    return _COMMON_VALUES.get(lowered, lowered)


@dataclass(slots=True, init=False)
class Target:
    """Where to send a request meant for one registered contact.

    `request_uri` is the Contact as registered; `flow` is the transport, the address to send
    to, our local address to send from, and for TCP the connection to reuse (the transport
    opens a new one when that connection is gone). `route` is the Path the contact registered
    through (RFC 3327 §5.3), to be pushed as Route headers.
    """

    # Written-out __init__: a frozen dataclass's generated one costs six times as much.
    request_uri: str
    flow: Flow
    route: tuple[str, ...]

    def __init__(self, request_uri: str, flow: Flow, route: tuple[str, ...] = ()) -> None:
        self.request_uri = request_uri
        self.flow = flow
        self.route = route

    def __hash__(self) -> int:
        return hash((self.request_uri, self.flow, self.route))


@dataclass(slots=True, eq=False, init=False)
class Binding:
    """One registered contact of one user (RFC 3261 §10.3), with how it really reached us.

    Bindings compare by identity: a REGISTER that changes anything but the time (another
    flow, Call-ID, user agent...) replaces the binding with a new object, so "is this still
    the current binding?" is an `is` test. A plain refresh (same contact, flow and Call-ID,
    a higher CSeq) changes the times and CSeq of the same object in place instead
    (`LocationService.refresh`): nothing is built for it, and the sinks hear of it at the
    next `flush`.

    The Contact is held as the text the phone wrote; `uri` parses it when asked (the target
    of a call, a keep-alive), from the parser's cache most of the time. Holding the parsed
    URI of every binding cost about 350 bytes each.
    """

    user: str
    contact: str  # the Contact URI as the phone wrote it (shown in the UI, stored, removed by)
    flow: Flow  # where the REGISTER really came from: transport, source, local, connection
    expires_at: float  # caller's clock
    updated_at: float  # caller's clock: the REGISTER that last set this binding
    registered_at: float  # wall clock: first registration of this contact, for display
    refreshed_at: float  # wall clock: the REGISTER that last set this binding
    q: float
    call_id: str
    cseq: int
    user_agent: str
    behind_nat: bool
    instance_id: str | None  # RFC 5626 +sip.instance, without the quotes
    reg_id: int | None  # RFC 5626 reg-id; only set together with instance_id
    path: tuple[str, ...]  # RFC 3327 Path header values, in order
    # NAT keep-alive state (core/registrar/natping.py); never persisted.
    last_pong: float | None  # caller's clock
    ping_failures: int
    reachable: bool
    next_ping_at: float | None  # caller's clock; None: not scheduled
    key: BindingKey = field(repr=False)

    def __init__(
        self,
        user: str,
        contact: str,
        uri: SipUri,  # `contact` parsed: for the key, not kept
        flow: Flow,
        expires_at: float,
        updated_at: float,
        registered_at: float,
        refreshed_at: float,
        q: float = 1.0,
        call_id: str = "",
        cseq: int = 0,
        user_agent: str = "",
        behind_nat: bool = False,
        instance_id: str | None = None,
        reg_id: int | None = None,
        path: tuple[str, ...] = (),
        last_pong: float | None = None,
        ping_failures: int = 0,
        reachable: bool = True,
        next_ping_at: float | None = None,
    ) -> None:
        self.user = user
        self.contact = contact
        self.flow = flow
        self.expires_at = expires_at
        self.updated_at = updated_at
        self.registered_at = registered_at
        self.refreshed_at = refreshed_at
        self.q = q
        self.call_id = call_id
        self.cseq = cseq
        self.user_agent = user_agent
        self.behind_nat = behind_nat
        self.instance_id = instance_id
        self.reg_id = reg_id
        self.path = path
        self.last_pong = last_pong
        self.ping_failures = ping_failures
        self.reachable = reachable
        self.next_ping_at = next_ping_at
        self.key = _contact_key(uri, instance_id, reg_id, user, flow)

    @property
    def uri(self) -> SipUri:
        """The Contact, parsed (it parsed as a SIP URI when the binding was made)."""
        uri = parse_uri(self.contact)
        if not isinstance(uri, SipUri):
            raise SipParseError(f"Contact is not a SIP URI: {self.contact!r}")
        return uri

    @property
    def outbound(self) -> bool:
        """An RFC 5626 flow binding: requests must use the flow it registered on."""
        return self.instance_id is not None and self.reg_id is not None

    @property
    def source(self) -> tuple[str, int]:
        return self.flow.remote

    @property
    def expires_wall(self) -> float:
        """The expiry on the wall clock, for the database and for display."""
        return self.refreshed_at + (self.expires_at - self.updated_at)

    def remaining(self, now: float) -> int:
        """Whole seconds left, as the 200 to a REGISTER lists them (RFC 3261 §10.3 step 8)."""
        return max(0, rounded(self.expires_at - now))

    def target(self) -> Target:
        """Where a request for this contact goes.

        Behind NAT, registered through a Path, or on an RFC 5626 flow: back along the flow the
        REGISTER came on (the source address; over TCP the same connection while it is open).
        A TCP contact naming the host it connected from is also reached on its connection
        (RFC 5626 §3.3: a phone behind a firewall cannot accept a new one). Otherwise the
        Contact itself: a third-party registration names another host, which must keep
        working, so the host, port and transport come from the Contact URI.
        """
        flow = self.flow
        if (
            self.behind_nat
            or self.outbound
            or self.path
            or (flow.reliable and _same_host(self.uri.host, flow.ip))
        ):
            return Target(self.contact, flow, self.path)
        return Target(self.contact, contact_flow(self.uri, flow.local), self.path)

    def to_row(self) -> BindingRow:
        """The row of the store's `location` table (core/store/schema.py) for this binding.

        Header text may hold bytes that were not UTF-8 (kept as lone surrogates so they go
        back out unchanged); SQLite refuses those, so the row stores `readable()` text.
        """
        flow = self.flow
        return BindingRow(
            aor=self.user,
            contact=readable(self.contact),
            expires_at=self.expires_wall,
            received=flow.ip,
            received_port=flow.port,
            transport=flow.transport,
            socket=format_socket(flow.transport, flow.local),
            user_agent=readable(self.user_agent),
            call_id=readable(self.call_id),
            cseq=self.cseq,
            q=self.q,
            nat=self.behind_nat,
            instance=readable(self.instance_id or ""),
            reg_id=self.reg_id or 0,
            registered_at=self.registered_at,
            path=tuple(readable(route) for route in self.path),
            refreshed_at=self.refreshed_at,
        )

    @classmethod
    def from_row(cls, row: BindingRow, *, now: float, wall: float) -> Binding:
        """A binding loaded from the store; `now` and `wall` are the same instant on both clocks.

        The TCP connection a binding used did not survive the restart, so the flow has none;
        the transport opens a new connection when a request must go there. The Path comes
        back too, so a contact registered through an edge proxy is still reached through it
        (RFC 3327 §5.3).
        Raises ValueError (a SipParseError) when the stored contact no longer parses.
        """
        uri = parse_uri(row.contact)
        if not isinstance(uri, SipUri):
            raise SipParseError(f"Stored contact is not a SIP URI: {row.contact!r}")
        flow = Flow(
            transport=row.transport,
            remote=(row.received, row.received_port),
            local=parse_socket(row.socket)[1],
        )
        # A row made without a refresh time (0: never a real one) falls back to the first
        # registration, as migration 2 fills it in for rows stored under schema version 1.
        refreshed_at = row.refreshed_at or row.registered_at
        return cls(
            user=row.aor,
            contact=row.contact,
            uri=uri,
            flow=flow,
            expires_at=now + (row.expires_at - wall),
            updated_at=now - (wall - refreshed_at),
            registered_at=row.registered_at,
            refreshed_at=refreshed_at,
            q=1.0 if row.q is None else row.q,
            call_id=row.call_id,
            cseq=row.cseq,
            user_agent=sys.intern(row.user_agent),  # held once per text, as the registrar does
            behind_nat=row.nat,
            instance_id=row.instance or None,
            reg_id=(row.reg_id or None) if row.instance else None,
            path=row.path,
        )


def rounded(value: float) -> int:
    """`round(value)`: the nearest whole number, halves to even, exactly as the builtin.

    Compiled, the builtin is a Python call on a new float object (about 700 instructions);
    this is native arithmetic for every value a time can be. Beyond 2**52 a float has no
    fraction, and NaN and the infinities are left to the builtin (which raises).
    """
    if not -_EXACT_WHOLE < value < _EXACT_WHOLE:
        return round(value)
    whole = int(value)  # toward zero
    rest = value - whole  # exact: no more bits than `value` below its unit
    if rest > 0.5 or (rest == 0.5 and whole % 2 != 0):
        return whole + 1
    if rest < -0.5 or (rest == -0.5 and whole % 2 != 0):
        return whole - 1
    return whole


_EXACT_WHOLE: Final = 2.0**52


def contact_flow(uri: SipUri, local: tuple[str, int]) -> Flow:
    """A new flow towards the address a Contact URI names (RFC 3261 §19.1.1, RFC 3263 without
    DNS SRV): maddr over host, the URI's port or the transport's default, the URI's transport
    or UDP (TLS for sips:). A host name is left for the transport to resolve."""
    transport = uri.transport or ("tls" if uri.secure else "udp")
    host = target_host(uri)
    port = uri.port or (SIPS_PORT if transport == "tls" else SIP_PORT)
    return Flow(transport, (host, port), local)


def format_socket(transport: str, local: tuple[str, int]) -> str:
    """`udp:192.0.2.1:5060`, `tcp:[2001:db8::1]:5060`: a local listener, as stored."""
    return f"{transport}:{format_host(local[0])}:{local[1]}"


def parse_socket(text: str) -> tuple[str, tuple[str, int]]:
    """The inverse of `format_socket`; an empty or malformed text gives an unspecified address."""
    transport, _, hostport = text.partition(":")
    host, _, port = hostport.rpartition(":")
    if not host or not port.isdigit():
        return transport, ("", 0)
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    return transport, (host, int(port))


def _same_host(host: str, ip: str) -> bool:
    return host.strip("[]").lower() == ip.lower()


class BindingSink(Protocol):
    """Told of every binding the location service stores or drops (persistence, keep-alives).

    Sinks run inline on the hot path and must not block: the store's sink only queues a write.
    A refresh is a `binding_saved` of the new binding; when a refresh changes the Contact URI
    (RFC 5626 instance matching) the old one is first reported removed.
    """

    def binding_saved(self, binding: Binding) -> None: ...

    def binding_removed(self, binding: Binding) -> None: ...


class LocationService:
    """Bindings by user, bounded per user and in total, with expiry driven by `expire(now)`."""

    def __init__(
        self,
        settings: RegistrarSettings,
        bus: EventBus,
        *,
        max_contacts: int = DEFAULT_MAX_CONTACTS,
    ) -> None:
        self.settings = settings
        self.bus = bus
        self.max_contacts = max_contacts
        # Chosen by the role when the core is built (core/assembly.py). `sinks` hear of every
        # change, another process's too (the store's writer, the NAT keep-alive);
        # `publishers` hear only of this process's own, so a change never echoes back
        # (the other processes: core/cluster/changes.py).
        self.sinks: list[BindingSink] = []
        self.publishers: list[BindingSink] = []
        self.restores = 0  # how many times restore() ran; the keep-alive rescans when it moves
        # Each user's bindings in the order first saved: the binding itself for a user with
        # one (most users: a list of one cost about 85 bytes more), else a list of two or
        # more, found by key with a scan of at most max_contacts_per_user (a dict per user
        # cost about 170 bytes more than a list).
        self._bindings_by_user: dict[str, Binding | list[Binding]] = {}
        self._count = 0
        # The expiry schedule, by whole second: each second's bindings in the order they were
        # scheduled, and the seconds in a heap. A heap of (expires_at, tie-breaker, binding)
        # cost about 120 bytes a binding; a place in a second's list costs 8. A binding
        # refreshed in place to a later time keeps its place, which moves on when its second
        # comes; places of replaced or removed bindings are skipped then, and everything is
        # scheduled again when they outnumber the live ones.
        self._due_by_second: dict[int, list[Binding]] = {}
        self._due_seconds: list[int] = []
        self._scheduled = 0  # places in the schedule, stale ones included
        # Bindings refreshed in place since the last flush(), in refresh order (a dict used
        # as an ordered set: bindings hash by identity).
        self._dirty: dict[Binding, None] = {}

    # -- reading ------------------------------------------------------------------------
    def __len__(self) -> int:
        return self._count

    @property
    def contact_count(self) -> int:
        """Contacts held, all users (the header strip's number)."""
        return self._count

    @property
    def user_count(self) -> int:
        """Users with at least one contact."""
        return len(self._bindings_by_user)

    @property
    def room(self) -> int:
        """How many more contacts the table takes."""
        return max(0, self.max_contacts - self._count)

    def get(self, user: str, key: BindingKey) -> Binding | None:
        held = self._bindings_by_user.get(user)
        if held is None:
            return None
        if isinstance(held, Binding):
            return held if held.key == key else None
        for binding in held:
            if binding.key == key:
                return binding
        return None

    def bindings_of(self, user: str) -> list[Binding]:
        """Every binding held for `user`, including any expired one not swept yet."""
        return _as_list(self._bindings_by_user.get(user))

    def is_current(self, binding: Binding) -> bool:
        """True while `binding` has been neither refreshed (replaced) nor removed."""
        return self.get(binding.user, binding.key) is binding

    def lookup(self, user: str, now: float) -> list[Binding]:
        """Where to fork a request for `user`: unexpired contacts, highest q first, then newest.

        Contacts flagged unreachable by the NAT keep-alive are included (`reachable` is False),
        so the proxy decides whether to try them.
        """
        held = self._bindings_by_user.get(user)
        if held is None:
            return []
        if isinstance(held, Binding):
            return [held] if held.expires_at > now else []
        live = [binding for binding in held if binding.expires_at > now]
        if len(live) > 1:  # one live contact left of several: no key call, no tuple
            live.sort(key=_fork_order)
        return live

    def all_bindings(self) -> list[Binding]:
        """Every binding, by user then fork order, for the console."""
        result: list[Binding] = []
        for user in sorted(self._bindings_by_user):
            result.extend(sorted(_as_list(self._bindings_by_user[user]), key=_fork_order))
        return result

    # -- writing ------------------------------------------------------------------------
    def save(self, binding: Binding) -> Binding | None:
        """Add `binding`, or replace the one with the same key; returns the one replaced.

        Raises LocationFull when it would be a new contact beyond the per-user or global limit
        (the registrar checks first and answers 403/503; this is the last line).
        """
        return self._put(binding, self._everyone())

    def refresh(
        self,
        binding: Binding,
        expires_at: float,
        updated_at: float,
        refreshed_at: float,
        cseq: int,
    ) -> None:
        """A plain refresh of a current binding: new times and CSeq, the same object.

        Saving a new binding costs a row for the store, a message to every other process and a
        new object; a phone re-registering with nothing changed (RFC 3261 §10.2.4, every few
        minutes per phone) needs none of those at once. The binding is updated here, at once,
        for the route and the console; the sinks and publishers hear of it at the next
        `flush()` (once a second, and when the server stops), as a `binding_saved` of the
        same object. Keep-alive state is reset as a new binding's would be: the REGISTER came
        through, so the contact is reachable.
        """
        shorter = expires_at < binding.expires_at
        binding.expires_at = expires_at
        binding.updated_at = updated_at
        binding.refreshed_at = refreshed_at
        binding.cseq = cseq
        binding.ping_failures = 0
        binding.reachable = True
        if shorter:
            # The heap's entry for it is now too late; a later one is moved on when popped.
            self._push_expiry(binding)
        self._dirty[binding] = None

    def flush(self) -> int:
        """Tell the sinks and publishers of the bindings refreshed in place since the last
        flush that are still current (a replaced or removed one was reported already).
        Returns how many were reported; call about once a second and before stopping."""
        dirty = self._dirty
        if not dirty:
            return 0
        self._dirty = {}
        told = self._everyone()
        reported = 0
        for binding in dirty:
            if not self.is_current(binding):
                continue
            reported += 1
            for sink in told:
                sink.binding_saved(binding)
        return reported

    @property
    def pending(self) -> int:
        """Bindings refreshed in place and not yet flushed to the sinks."""
        return len(self._dirty)

    def _put(self, binding: Binding, told: list[BindingSink]) -> Binding | None:
        previous = self.get(binding.user, binding.key)
        if previous is None:
            self._check_room(binding.user)
            self._count += 1
        self._hold(binding, previous)
        self._push_expiry(binding)
        for sink in told:
            if previous is not None and previous.contact != binding.contact:
                sink.binding_removed(previous)
            sink.binding_saved(binding)
        return previous

    def unregister(
        self,
        binding: Binding,
        *,
        reason: str = "unregistered",
        source: tuple[str, int] | None = None,
    ) -> bool:
        """Remove a current binding and say so on the bus; False if it was not current."""
        if not self._drop(binding):
            return False
        self.bus.publish(ContactUnregistered(binding.user, binding.contact, source, reason))
        return True

    def remove(self, user: str, contact: str) -> int:
        """The console's "unregister": drop `user`'s contact(s) matching `contact`.

        `contact` is the URI as shown (`Binding.contact`); a differently written but equal URI
        matches too (RFC 3261 §19.1.4), as do several flows of one RFC 5626 instance.
        Returns how many bindings went.
        """
        wanted: BindingKey | None = None
        try:
            uri = parse_uri(contact.strip().strip("<>"))
        except SipParseError:
            uri = None
        if isinstance(uri, SipUri):
            wanted = contact_key(uri)
        removed = 0
        for binding in self.bindings_of(user):
            same_uri = wanted is not None and contact_key(binding.uri) == wanted
            if (binding.contact == contact or same_uri) and self.unregister(
                binding, reason="admin"
            ):
                removed += 1
        return removed

    def remove_user(self, user: str) -> int:
        """Drop every contact of `user` (the account was deleted or disabled)."""
        removed = 0
        for binding in self.bindings_of(user):
            if self.unregister(binding, reason="admin"):
                removed += 1
        return removed

    def adopt(self, binding: Binding) -> bool:
        """Hold a binding another process of this server saved (core/cluster/changes.py): no event
        and no publisher (that process announced it and passed it on), but every sink hears
        of it. False when it did not fit."""
        try:
            self._put(binding, self.sinks)
        except LocationFull:
            return False
        return True

    def forget(self, user: str, key: BindingKey) -> bool:
        """Drop a binding another process removed (the sinks hear of it, the publishers do
        not); False when it was not held here."""
        binding = self.get(user, key)
        return binding is not None and self._drop(binding, self.sinks)

    def expire(self, now: float) -> list[Binding]:
        """Drop bindings whose time is up, emitting ContactExpired for each (in the order of
        their expiry); returns them."""
        by_second = self._due_by_second
        seconds = self._due_seconds
        expired: list[Binding] = []
        while seconds and seconds[0] <= now:
            second = seconds[0]
            places = by_second[second]
            due: list[Binding] = []
            kept: list[Binding] = []  # due later in this second, which is not over yet
            later: list[Binding] = []  # refreshed in place to a later second since
            for binding in places:
                if binding.expires_at <= now:
                    due.append(binding)
                elif self.is_current(binding):
                    (kept if _second(binding.expires_at) == second else later).append(binding)
            self._scheduled -= len(places) - len(kept)
            if kept:
                by_second[second] = kept
            else:
                heapq.heappop(seconds)
                del by_second[second]
            for binding in later:
                self._schedule(binding)
            due.sort(key=_expiry)
            for binding in due:
                if self._drop(binding):  # False: replaced, removed, or a second place
                    expired.append(binding)
                    self.bus.publish(ContactExpired(binding.user, binding.contact))
            if kept:
                break  # the seconds after this one are all still to come
        return expired

    def restore(
        self, bindings: Iterable[Binding | BindingRow], now: float, *, wall: float | None = None
    ) -> int:
        """Load bindings saved before a restart (or the store's rows as they are); expired
        ones, rows whose contact no longer parses, and any beyond the limits are skipped.
        No events, no sink calls: the rows are already in the store. `wall` is the wall-clock
        time at `now` (read from the system when not given) for converting rows. Returns how
        many were restored."""
        wall = time.time() if wall is None else wall
        restored = 0
        for item in bindings:
            if isinstance(item, Binding):
                binding = item
            else:
                try:
                    binding = Binding.from_row(item, now=now, wall=wall)
                except ValueError:
                    continue
            if binding.expires_at <= now:
                continue
            existing = self.get(binding.user, binding.key)
            if existing is not None and existing.expires_at >= binding.expires_at:
                continue  # two rows for one binding (URIs written differently): keep the later
            if existing is None:
                try:
                    self._check_room(binding.user)
                except LocationFull:
                    continue
                self._count += 1
            self._hold(binding, existing)
            self._push_expiry(binding)
            restored += 1
        self.restores += 1
        return restored

    # -- internals ------------------------------------------------------------------------
    def _check_room(self, user: str) -> None:
        """Raise LocationFull unless one more contact fits for `user` and in the table."""
        if self._count >= self.max_contacts:
            raise LocationFull("the location table is full")
        held = self._bindings_by_user.get(user)
        if held is None:
            return
        count = 1 if isinstance(held, Binding) else len(held)
        if count >= self.settings.max_contacts_per_user:
            raise LocationFull(f"{user} has too many contacts")

    def _hold(self, binding: Binding, previous: Binding | None) -> None:
        """Put `binding` among its user's, in the place of `previous` (same key) if any."""
        by_user = self._bindings_by_user
        held = by_user.get(binding.user)
        if held is None or held is previous:
            by_user[binding.user] = binding
        elif isinstance(held, Binding):
            by_user[binding.user] = [held, binding]
        else:
            index = -1 if previous is None else _position(held, previous)
            if index < 0:
                held.append(binding)
            else:
                held[index] = binding

    def _drop(self, binding: Binding, told: list[BindingSink] | None = None) -> bool:
        """Remove `binding`; `told` hear of it (by default: sinks and publishers)."""
        by_user = self._bindings_by_user
        held = by_user.get(binding.user)
        if held is None:
            return False
        if isinstance(held, Binding):
            if held is not binding:
                return False
            del by_user[binding.user]
        else:
            index = _position(held, binding)
            if index < 0:
                return False
            del held[index]
            if len(held) == 1:
                by_user[binding.user] = held[0]
        self._count -= 1
        if told is None:
            told = self._everyone()
        for sink in told:
            sink.binding_removed(binding)
        return True

    def _everyone(self) -> list[BindingSink]:
        """The sinks, then the publishers (other processes): who hears of a change here."""
        return self.sinks + self.publishers if self.publishers else self.sinks

    def _push_expiry(self, binding: Binding) -> None:
        """Schedule `binding`'s expiry (again, after a refresh to a shorter time)."""
        self._schedule(binding)
        if self._scheduled > 2 * self._count + 1_024:
            self._due_by_second = {}
            self._due_seconds = []
            self._scheduled = 0
            for held in self._bindings_by_user.values():
                for current in _as_list(held):
                    self._schedule(current)

    def _schedule(self, binding: Binding) -> None:
        second = _second(binding.expires_at)
        places = self._due_by_second.get(second)
        if places is None:
            self._due_by_second[second] = [binding]
            heapq.heappush(self._due_seconds, second)
        else:
            places.append(binding)
        self._scheduled += 1


# Beyond any clock: the second of an expiry that is not a finite time (never due).
_NEVER_AT = 2.0**62
_NEVER_SECOND = 2**62


def _second(at: float) -> int:
    """The whole second an expiry time falls in, for the schedule."""
    if at >= _NEVER_AT or at != at:  # infinite or NaN: never due
        return _NEVER_SECOND
    if at <= -_NEVER_AT:
        return -_NEVER_SECOND
    return math.floor(at)


def _expiry(binding: Binding) -> float:
    return binding.expires_at


def _as_list(held: Binding | list[Binding] | None) -> list[Binding]:
    """A user's bindings as a new list, whichever way they are held."""
    if held is None:
        return []
    if isinstance(held, Binding):
        return [held]
    return list(held)


def _position(bindings: list[Binding], binding: Binding) -> int:
    """Where `binding` itself (not an equal one) is in `bindings`; -1 when it is not."""
    for index, held in enumerate(bindings):
        if held is binding:
            return index
    return -1


def _fork_order(binding: Binding) -> tuple[float, float]:
    return (-binding.q, -binding.updated_at)
