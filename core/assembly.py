"""The core, built in one place in dependency order, for whichever role this process has.

`Core` makes every part with what it needs in its constructor, lower parts first, so nothing
is patched in afterwards and no part waits as None:

    users, identity                   what the others look up
    security                          bans restored, its sink (the store, or other processes)
    location → keep-alive, registrar  bindings restored; the role names who hears of changes
    authenticator                     digest nonces that name this process (the role's index)
    outbox                            every message out, through the role's sender
    calls → trunks → proxy            the trunks decide, the proxy acts (core/proxy/decisions.py)
    route                             the request route (core/route.py), last: it calls them all
    admin                             the console's and the CLI's changes (core/admin.py)

A `Role` (standalone, the main process beside workers, a worker: core/roles.py and
core/cluster/) is chosen before the build and owns what differs between processes: the bus,
the sinks, the sender, the security limits, the per-server duties (housekeeping, the store's
writer), the figures and the end. The Pbx (core/pbx.py) asks the role; it never branches on it.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Protocol

from core.accounting.books import Books
from core.accounting.cdrs import Pricer
from core.accounting.manage import AccountingAdmin
from core.admin import AdminApi
from core.events import EventBus
from core.media.anchor import MediaAnchor, build_anchor
from core.media.gate import RtpEngineGate, RtpEngineSessions, rtpengine_sessions
from core.net.dns import SrvResolver
from core.net.flow import Flow
from core.net.identity import ServerIdentity
from core.net.transport import Transport
from core.outbox import Outbox, Sender
from core.proxy.calls import RINGING, TRYING, CallInfo, CallSink, CallTable
from core.proxy.proxy import Proxy
from core.registrar.location import BindingSink, LocationService
from core.registrar.natping import NatKeepalive
from core.registrar.registrar import Registrar
from core.route import Route
from core.security.auth import DigestAuthenticator
from core.security.bans import Ban, BanSink
from core.security.destinations import Destinations
from core.security.guard import Security
from core.security.sources import SourceKeys
from core.settings import ListenAddress, SecuritySettings, Settings
from core.store.database import Store
from core.store.rows import BanRow, BindingRow, CarrierRow, DidRow
from core.trunks.tollfraud import LimiterListener
from core.trunks.trunks import Trunks
from core.users import Credentials, User, UserDirectory

log = logging.getLogger("pbxtui.pbx")


@dataclass(slots=True)
class PbxStats:
    """Live figures for the console's header strip."""

    messages_in: int
    messages_out: int
    contacts: int
    calls_up: int
    bans: int
    users: int
    dropped: int  # never handled: from banned sources, past the UDP backlog, or shed (overload)


@dataclass(frozen=True, slots=True)
class Sinks:
    """Where the core's changes go. Sinks hear of every change (the store's writers);
    publishers only of this process's own (other processes, which hear of them once)."""

    bans: BanSink | None
    calls: CallSink | None  # each finished call's CDR
    ban_publisher: BanSink | None = None
    binding_publisher: BindingSink | None = None
    limiter: LimiterListener | None = None  # outbound calls counted in and out here


class Role(Protocol):
    """What differs between the processes a Pbx can be; chosen before the build."""

    @property
    def index(self) -> int:
        """0 for the main process (and standalone), else the worker's number."""
        ...

    @property
    def bus(self) -> EventBus:
        """The feed; a worker's goes to the main process."""
        ...

    def listen(self, settings: Settings) -> tuple[ListenAddress, ...]:
        """The addresses our Via and Record-Route name until the sockets are bound."""
        ...

    def limits(self, settings: SecuritySettings) -> SecuritySettings:
        """The flood and brute-force limits this process counts against."""
        ...

    @property
    def prices_calls(self) -> bool:
        """Whether CDRs are written, and priced, in this process (core/accounting/books.py)."""
        ...

    def sinks(self, store: Store, meter: Pricer) -> Sinks: ...

    def binding_sinks(self, store: Store, keepalive: NatKeepalive) -> list[BindingSink]:
        """Who hears of every binding saved or removed (the keep-alive only where it pings)."""
        ...

    def sender(self, transport: Transport) -> Sender: ...

    def announce(self, message: str) -> None:
        """A warning for the admin, given once per server."""
        ...

    async def bind(self, transport: Transport, listen: tuple[ListenAddress, ...]) -> None:
        """Open (or adopt) the sockets this process reads."""
        ...

    def bound(self, transport: Transport) -> tuple[ListenAddress, ...]:
        """The addresses our Via and Record-Route name once bound."""
        ...

    def tables_changed(self) -> None:
        """Users, carriers or DIDs changed in the database: whoever else reads them, reload."""
        ...

    async def start(self, core: Core) -> Duties:
        """The core is built and bound: start what the role adds (the store's writer, worker
        processes, links) and return what the running process does differently."""
        ...


class Duties(Protocol):
    """What differs between roles once the core runs (a role's `start` returns it)."""

    def dispatch(self, data: bytes, flow: Flow) -> None:
        """A message read here: routed here, or handed to the process that owns it."""
        ...

    def housekeep(self, now: float) -> None:
        """The role's share of the once-a-second duties."""
        ...

    @property
    def lost(self) -> int:
        """Messages lost on the way to or from other processes."""
        ...

    def add_figures(self, stats: PbxStats) -> None:
        """Add what other processes report to this process's own figures."""
        ...

    def calls(self) -> list[CallInfo]:
        """Active calls, oldest first, for the console."""
        ...

    async def stop(self) -> None: ...


@dataclass(frozen=True, slots=True)
class Stored:
    """What the build reads from the database first (the route never awaits it later)."""

    nonce_secret: bytes
    tag_secret: bytes
    realm: str  # the realm the stored HA1 hashes were made with
    users: list[User]
    bans: list[BanRow]
    bindings: list[BindingRow]
    carriers: list[CarrierRow]
    dids: list[DidRow]

    @classmethod
    async def load(cls, store: Store, settings: Settings, now: float) -> Stored:
        nonce_secret = await store.get_or_create_setting(
            "nonce_secret", lambda: secrets.token_hex(32)
        )
        tag_secret = await store.get_or_create_setting("tag_secret", lambda: secrets.token_hex(16))
        return cls(
            nonce_secret=bytes.fromhex(nonce_secret),
            tag_secret=bytes.fromhex(tag_secret),
            realm=await store.get_or_create_setting("realm", lambda: settings.realm),
            users=await store.list_users(),
            bans=await store.list_bans(active_at=now),
            bindings=await store.load_bindings(now),
            carriers=await store.list_carriers(),
            dids=await store.list_dids(),
        )


class Core:
    """Every part of the SIP core of one process, built in dependency order."""

    def __init__(
        self,
        settings: Settings,
        *,
        role: Role,
        store: Store,
        stored: Stored,
        transport: Transport,
        books: Books,
        clock: Callable[[], float],
    ) -> None:
        self.settings = settings
        self.store = store
        self.transport = transport
        self.books = books
        self.clock = clock
        self.bus = bus = role.bus
        self.announce = role.announce
        now = clock()
        sinks = role.sinks(store, books.meter)

        self.users = UserDirectory(stored.users)
        # The digest check's HA1 look-up and the route's "TLS only" rule, compiled
        # (core/directory.py): called with every REGISTER and INVITE.
        self.credentials = credentials = Credentials(self.users, settings.realm)
        self.identity = ServerIdentity(settings.domain, role.listen(settings))
        self.security = Security(
            role.limits(settings.security),
            bus,
            own_addresses=self.identity.addresses,
            sink=_closing_connections(sinks.bans, transport, settings.security),
            publisher=sinks.ban_publisher,
        )
        self.security.restore(stored.bans, now)
        security = self.security
        # A banned source's new TCP connections are refused at accept.
        transport.refuse_source = lambda ip: security.is_banned(ip, clock())

        self.location = LocationService(settings.registrar, bus)
        self.natping = NatKeepalive(settings.registrar, self.location, bus, settings.domain)
        self.location.sinks.extend(role.binding_sinks(store, self.natping))
        if sinks.binding_publisher is not None:
            self.location.publishers.append(sinks.binding_publisher)
        self.location.restore(stored.bindings, now)

        # Nonces name the process that issued them: each keeps its own nonce counts.
        authenticator = DigestAuthenticator(
            settings.realm, stored.nonce_secret, settings.auth, credentials.ha1, role.index
        )
        self.outbox = Outbox(
            identity=self.identity,
            bus=bus,
            send=role.sender(transport),
            clock=clock,
            tag_secret=stored.tag_secret,
            user_agent=settings.user_agent,
        )
        # Media anchoring (core/media/anchor.py): its relay lives in the process that owns the
        # call, and it sees every call end before the call's CDR is written.
        anchor = build_anchor(
            settings.media, [listen.host for listen in settings.listen], self.location,
            self.identity,
            clock, sinks.calls,
        )  # fmt: skip
        rtpengine = rtpengine_sessions(settings.media, sinks.calls, bus, clock)
        self.media: MediaAnchor | RtpEngineSessions | None = rtpengine or anchor
        calls = CallTable(bus, settings.proxy.max_active_calls, sink=self.media or sinks.calls)
        dns = SrvResolver()
        self.trunks = Trunks(
            settings,
            identity=self.identity,
            users=self.users,
            calls=calls,
            bus=bus,
            srv=dns,
            hosts=dns.addresses,
            meter=books.meter,
            limiter_listener=sinks.limiter,
            tls_names=transport.tls.expect_name if transport.tls is not None else None,
            peer_names=transport.peer_names,
        )
        self._load_carriers(stored.carriers, stored.dids)
        # No contact may point at our own sockets or a carrier (core/security/destinations.py):
        # the registrar refuses such bindings, the proxy and the transport never send there.
        destinations = Destinations(self.identity, self.trunks.is_carrier_destination)
        transport.refuse_destination = lambda ip, port: destinations.refusal(ip, port) is not None
        self.registrar = Registrar(
            settings.registrar,
            self.location,
            bus,
            destinations=destinations,
            security_report=security.report,
        )
        self.proxy = Proxy(
            settings=settings.proxy,
            realm=settings.realm,
            relay=self.outbox,
            users=self.users,
            location=self.location,
            calls=calls,
            bus=bus,
            route_secret=stored.tag_secret,
            carriers=self.trunks,
            destinations=destinations,
            security_report=security.report,
            media=anchor or rtpengine,  # rtpengine's: bodies as the gate left them, failures
        )
        # With rtpengine, SDP is rewritten before the proxy sees it (core/media/gate.py).
        gate = None
        if rtpengine is not None:
            gate = RtpEngineGate(settings.media, rtpengine, self.proxy, self.location, clock)
        self.route = Route(
            identity=self.identity,
            bus=bus,
            security=self.security,
            authenticator=authenticator,
            registrar=self.registrar,
            natping=self.natping,
            proxy=gate or self.proxy,
            trunks=self.trunks,
            outbox=self.outbox,
            clock=clock,
            tls_only=settings.tls.tls_only,
            requires_tls=credentials.requires_tls,
        )
        self.admin = AdminApi(
            store=store,
            users=self.users,
            location=self.location,
            security=self.security,
            settings=settings,
            bus=bus,
            accounting=AccountingAdmin(
                store=store,
                books=books,
                currency=settings.accounting.currency,
                clock=clock,
                tables_changed=role.tables_changed,
            ),
            clock=clock,
            carriers_changed=self.reload_carriers,
            tables_changed=role.tables_changed,
        )

    def bound(self, addresses: tuple[ListenAddress, ...]) -> None:
        """The sockets are bound (port 0 is a real port now): name what was bound."""
        self.identity.bind(addresses)
        self.security.set_own_addresses(self.identity.addresses)

    # -- tables read again ----------------------------------------------------------------
    def _load_carriers(self, carriers: list[CarrierRow], dids: list[DidRow]) -> None:
        """Carrier addresses get a higher flood limit; the trunks see carriers and DIDs."""
        networks = [
            address for carrier in carriers if carrier.enabled for address in carrier.addresses
        ]
        self.security.set_carrier_networks(networks)
        self.trunks.load(carriers, dids)

    async def reload_carriers(self) -> None:
        """Carriers and DIDs read again, gateway names resolved again."""
        self._load_carriers(await self.store.list_carriers(), await self.store.list_dids())
        await self.trunks.resolve_gateways()

    async def reload_tables(self) -> None:
        """Users, carriers and DIDs, read again from the database."""
        self.users.replace_all(await self.store.list_users())
        await self.reload_carriers()
        await self.books.reload(self.store, self.clock())

    async def changed_elsewhere(self) -> None:
        """Another process (the CLI) wrote to the database: reload what the route reads, and
        put bans added or lifted there in force here."""
        await self.reload_tables()
        # Flushed first, so every ban this process made is in the store: a row of ours that is
        # missing now was deleted by the other process.
        await self.store.flush()
        saved_bans = await self.store.list_bans()
        added, lifted, refused = self.security.sync_bans(saved_bans, self.clock())
        for ip in refused:
            self.announce(f"ban of {ip} ignored: it is this server's address or in the allow_list")
        log.info(
            "database changed elsewhere: reloaded %d users, %d bans added, %d lifted",
            len(self.users),
            added,
            lifted,
        )

    # -- figures --------------------------------------------------------------------------
    @property
    def dropped_here(self) -> int:
        """Messages this process never handled: from banned or flooding sources, past the UDP
        backlog, or shed under overload."""
        transport = self.transport
        return self.route.dropped + transport.backlog_drops + transport.shed_requests

    def stats(self) -> PbxStats:
        """This process's own figures (the role adds the other processes')."""
        now = self.clock()
        return PbxStats(
            messages_in=self.transport.received_messages,
            messages_out=self.transport.sent_messages,
            contacts=self.location.contact_count,
            calls_up=len(self.proxy.calls),
            bans=len(self.security.bans(now)),
            users=len(self.users),
            dropped=self.dropped_here,
        )

    def expire_media(self, now: float) -> None:
        """Calls whose media stopped are hung up, "media timeout" in their CDRs."""
        if self.media is not None:
            calls = self.proxy.calls
            for call_id in self.media.expire(now, self._ringing):
                call = calls.get(call_id)
                if call is not None:
                    self.proxy.end_call(call, now, "media timeout")

    def _ringing(self, call_id: str) -> bool:
        call = self.proxy.calls.get(call_id)
        return call is not None and call.state in (TRYING, RINGING)

    def with_media(self, calls: list[CallInfo]) -> list[CallInfo]:
        """The console's call rows with the counters of the media relayed here."""
        media = self.media
        if media is None or not media.calls:
            return calls
        now = self.clock()
        rows = []
        for call in calls:  # a worker's call keeps the counters its worker reported
            stats = media.stats(call.call_id, now)
            rows.append(call if stats is None else replace(call, media=stats))
        return rows

    async def close(self) -> None:
        if self.media is not None:
            self.media.close()
        await self.trunks.close()
        await self.books.close()


class _ClosingConnections:
    """A ban sink that first ends the banned source's TCP connections (a ban of an IPv6
    prefix ends every connection from inside it), then hands the ban on to be stored."""

    def __init__(self, then: BanSink, transport: Transport, source_key: Callable[[str], str]):
        self.then = then
        self.transport = transport
        self.source_key = source_key

    def ban_saved(self, ban: Ban) -> None:
        banned, key = ban.ip, self.source_key
        self.transport.close_connections_from(lambda ip: ip == banned or key(ip) == banned)
        self.then.ban_saved(ban)

    def ban_removed(self, ip: str) -> None:
        self.then.ban_removed(ip)


def _closing_connections(
    sink: BanSink | None, transport: Transport, settings: SecuritySettings
) -> BanSink | None:
    """The process that stores bans holds the TCP connections too: its sink closes them."""
    if sink is None:
        return None
    return _ClosingConnections(sink, transport, SourceKeys(settings.ipv6_prefix_length).key)
