"""The Pbx: builds every part of the SIP core, wires them together, starts and stops them.

The headless runner and the console hold the same object. One clock for everything: wall
time in epoch seconds (`time.time`), so binding expiry and ban ends mean the same thing after
a restart as before it, and the console can show them without conversion. Timers armed on the
event loop are converted to its monotonic clock at the moment they are armed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass

from core.accounting.cdrs import CdrWriter
from core.admin import AdminApi
from core.cluster.affinity import MAIN, owner_of
from core.cluster.changes import WorkerBus, WorkerSetup, divided_limits
from core.cluster.main import MainCluster
from core.cluster.worker import WorkerCluster
from core.events import EventBus, SecurityEvent, ServerEvent
from core.net.dns import SrvResolver
from core.net.identity import ServerIdentity
from core.net.tls import Reloaded, TlsError, TlsLayer, watch_certificate
from core.net.transport import ListenError, Transport
from core.proxy.calls import CallInfo, CallTable
from core.proxy.proxy import Proxy
from core.registrar.location import LocationService
from core.registrar.natping import NatKeepalive
from core.registrar.registrar import Registrar
from core.route import Route
from core.security.auth import DigestAuthenticator
from core.security.guard import Security
from core.settings import ListenAddress, Settings
from core.store.database import (
    BanRow,
    DeleteBan,
    DeleteBinding,
    Store,
    StoreError,
    UpsertBan,
    UpsertBinding,
)
from core.trunks.trunks import Trunks
from core.users import UserDirectory

log = logging.getLogger("pbxtui.pbx")

HOUSEKEEPING_INTERVAL = 1.0  # binding expiry, ban expiry, NAT pings, reply-cache trimming


class StartError(Exception):
    """The Pbx cannot start: the message says why, in words for an admin."""


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


class Pbx:
    """The SIP core, in one process or, with `[server] workers`, as the main process or one
    of the workers (core/cluster/changes.py)."""

    def __init__(self, settings: Settings, *, clock: Callable[[], float] = time.time) -> None:
        self.settings = settings
        self.clock = clock
        self.bus = EventBus(settings.events.traffic_capacity, settings.events.feed_capacity)
        self.cluster: MainCluster | WorkerCluster | None = None
        # The console owns the terminal: workers started under it write nothing to stderr.
        self.quiet_workers = False
        self.users = UserDirectory()
        self.store: Store = None  # type: ignore[assignment]  # set by start()
        self.identity = ServerIdentity(settings.domain, settings.listen)
        self.security: Security = None  # type: ignore[assignment]
        self.location: LocationService = None  # type: ignore[assignment]
        self.registrar: Registrar = None  # type: ignore[assignment]
        self.natping: NatKeepalive = None  # type: ignore[assignment]
        self.route: Route = None  # type: ignore[assignment]
        self.proxy: Proxy = None  # type: ignore[assignment]
        self.trunks: Trunks = None  # type: ignore[assignment]  # issue "Carrier trunks"
        # The proxy's one loop timer (issue "Calls"): armed for proxy.next_deadline().
        self._proxy_timer: asyncio.TimerHandle | None = None
        self._proxy_timer_at = 0.0
        self.tls = TlsLayer(settings.tls)
        self.tls.report = self._tls_security_event
        self.transport = Transport(
            settings.transport,
            self._on_message,
            self._on_stream_error,
            self._on_forwarded,
            tls=self.tls,
        )
        self.admin = AdminApi(self)
        self._tasks: list[asyncio.Task[None]] = []
        self._started = False
        self._shed_reported = 0  # transport.shed_requests already reported in the feed
        self._lost_reported = 0  # backlog and link drops already reported

    # -- lifecycle ------------------------------------------------------------------------
    @property
    def listening(self) -> list[ListenAddress]:
        return list(self.transport.bound)

    @property
    def user_count(self) -> int:
        return len(self.users)

    async def start(self) -> None:
        """Open the database, load it into memory, bind the sockets, start the timers."""
        settings = self.settings
        try:
            self.store = await Store.open(settings.db_path)
        except StoreError as error:
            raise StartError(str(error)) from None
        try:
            self._load_tls()
            await self._build()
            # With worker processes, they read the UDP sockets; main only sends from them.
            await self.transport.start(settings.listen, read_udp=not settings.workers)
        except (ListenError, TlsError) as error:
            await self.store.close()
            raise StartError(str(error)) from None
        # Our own Via / Record-Route must name the address actually bound (port 0 → real port).
        self._identify(tuple(self.transport.bound))
        self.store.start_writer()
        self.store.watch_changes(self._reload_changed_tables)
        if settings.workers:
            self.cluster = MainCluster(self, quiet=self.quiet_workers)
            try:
                await self.cluster.start()
            except Exception as error:
                await self.stop()
                raise StartError(f"cannot start the worker processes: {error}") from None
        self._tasks.append(asyncio.create_task(self._housekeeping(), name="pbx-housekeeping"))
        if self.tls.certificate is not None:
            watch = watch_certificate(
                self.tls, self._certificate_reloaded, settings.tls.reload_check_seconds
            )
            self._tasks.append(asyncio.create_task(watch, name="tls-certificate-watch"))
        self._started = True
        workers = f", {settings.workers} worker processes" if settings.workers else ""
        self.bus.publish(
            ServerEvent(f"listening on {', '.join(str(a) for a in self.transport.bound)}{workers}")
        )

    async def start_worker(
        self, setup: WorkerSetup, main_link: socket.socket, udp: list[socket.socket]
    ) -> None:
        """Start as worker `setup.index`: the tables from the database (read only), the
        UDP sockets main bound, and every change to and from main (core/cluster/worker.py)."""
        self.cluster = cluster = WorkerCluster(self, setup, main_link)
        self.bus = WorkerBus(cluster.to_main)
        self.bus.capture_traffic = setup.capture_traffic
        try:
            self.store = await Store.open(self.settings.db_path)
        except StoreError as error:
            raise StartError(str(error)) from None
        await self._build()
        self._identify(setup.bound)  # main's addresses, known before the first datagram
        cluster.install()
        await self.transport.adopt_udp(udp)
        cluster.start()
        self._tasks.append(asyncio.create_task(self._housekeeping(), name="pbx-housekeeping"))
        self._started = True
        cluster.to_main(("ready",))

    def _load_tls(self) -> None:
        """The TLS certificate and the carriers' CA store, loaded before anything listens:
        a tls listener without a usable certificate is a start error (RFC 3261 §26.2.1)."""
        wants_tls = any(address.transport == "tls" for address in self.settings.listen)
        if wants_tls and self.tls.certificate is None:
            raise TlsError(
                "a tls listen address needs [tls] certificate and key "
                "(pbxtui tls selfsigned makes a pair for testing)"
            )
        self.tls.load()

    def reload_certificate(self) -> Reloaded | None:
        """Load the TLS certificate and key again (SIGHUP); None when none is configured."""
        if self.tls.certificate is None:
            return None
        result = self.tls.certificate.reload()
        self._certificate_reloaded(result)
        return result

    def _certificate_reloaded(self, result: Reloaded) -> None:
        if result.ok:
            log.info("%s", result.message)
        else:
            log.error("%s", result.message)
        self.bus.publish(ServerEvent(result.message, level="info" if result.ok else "error"))

    def _tls_security_event(self, action: str, source: str, detail: str) -> None:
        self.bus.publish(SecurityEvent(action, source, detail))

    def _identify(self, bound: tuple[ListenAddress, ...]) -> None:
        self.identity = ServerIdentity(self.settings.domain, bound)
        self.route.identity = self.identity
        self.security.set_own_addresses(self.identity.addresses)

    @property
    def is_worker(self) -> bool:
        return self.cluster is not None and self.cluster.index != MAIN

    async def _build(self) -> None:
        settings = self.settings
        store = self.store
        nonce_secret = bytes.fromhex(
            await store.get_or_create_setting("nonce_secret", lambda: secrets.token_hex(32))
        )
        tag_secret = bytes.fromhex(
            await store.get_or_create_setting("tag_secret", lambda: secrets.token_hex(16))
        )
        stored_realm = await store.get_or_create_setting("realm", lambda: settings.realm)
        if stored_realm != settings.realm and not self.is_worker:
            message = (
                f"the domain changed from {stored_realm!r} to {settings.realm!r}: SIP passwords "
                "are stored as HA1 hashes of the realm, so every user's password must be reset "
                "(pbxtui user passwd NAME)"
            )
            log.warning(message)
            self.bus.publish(ServerEvent(message, level="warning"))
        self.users.replace_all(await store.list_users())
        now = self.clock()

        security_settings = settings.security
        if self.is_worker:  # each worker sees about 1/N of every source's messages
            security_settings = divided_limits(security_settings, settings.workers)
        self.security = Security(security_settings, self.bus, own_addresses=self.identity.addresses)
        # A worker writes nothing itself: its changes go to main (core/cluster/worker.py).
        writes = not self.is_worker
        self.security.sink = _BanWriter(store) if writes else None
        self.security.restore(await store.list_bans(active_at=now), now)

        self.location = LocationService(settings.registrar, self.bus)
        self.location.sink = _BindingWriter(store) if writes else None
        self.location.restore(await store.load_bindings(now), now)
        self.registrar = Registrar(settings.registrar, self.location, self.bus)
        self.natping = NatKeepalive(settings.registrar, self.location, self.bus, settings.domain)

        # Nonces name the process that issued them: each keeps its own nonce counts.
        authenticator = DigestAuthenticator(
            settings.realm,
            nonce_secret,
            settings.auth,
            self._lookup_ha1,
            issuer=self.cluster.index if self.cluster is not None else MAIN,
        )
        # A worker sends on TCP flows through main, which holds the connections.
        cluster = self.cluster
        send = cluster.send if isinstance(cluster, WorkerCluster) else self.transport.send
        self.route = Route(
            identity=self.identity,
            bus=self.bus,
            security=self.security,
            authenticator=authenticator,
            registrar=self.registrar,
            natping=self.natping,
            proxy=None,
            trunks=None,
            send=send,
            clock=self.clock,
            tag_secret=tag_secret,
            user_agent=settings.user_agent,
        )
        # Calls (issue "Calls"): the stateful proxy, its call table, CDRs to the store.
        calls = CallTable(
            self.bus, settings.proxy.max_active_calls, sink=CdrWriter(store) if writes else None
        )
        self.proxy = Proxy(
            settings=settings.proxy,
            realm=settings.realm,
            relay=self.route,
            users=self.users,
            location=self.location,
            calls=calls,
            bus=self.bus,
            route_secret=tag_secret,
        )
        self.route.proxy = self.proxy
        # Carrier trunks (issue "Carrier trunks"): inbound from carriers, outbound to gateways.
        self.trunks = Trunks(
            settings, proxy=self.proxy, users=self.users, bus=self.bus, srv=SrvResolver()
        )
        self.trunks.attach()
        self.route.trunks = self.trunks
        await self.reload_carriers()

    def _lookup_ha1(self, username: str) -> tuple[str, str] | None:
        user = self.users.get(username)
        if user is None or not user.enabled or user.realm != self.settings.realm:
            return None
        return user.ha1_md5, user.ha1_sha256

    async def reload_carriers(self) -> None:
        """Carrier addresses get a higher flood limit; the trunks see carriers and DIDs."""
        carriers = await self.store.list_carriers()
        networks = [
            address for carrier in carriers if carrier.enabled for address in carrier.addresses
        ]
        self.security.set_carrier_networks(networks)
        await self.trunks.reload(carriers, await self.store.list_dids())

    async def reload_tables(self) -> None:
        """Users, carriers and DIDs, read again from the database."""
        self.users.replace_all(await self.store.list_users())
        await self.reload_carriers()

    def tables_changed(self) -> None:
        """The console changed users, carriers or DIDs: worker processes read them again."""
        if isinstance(self.cluster, MainCluster):
            self.cluster.tables_changed()

    async def _reload_changed_tables(self) -> None:
        """Another process (the CLI) wrote to the database: reload what the route reads."""
        await self.reload_tables()
        self.tables_changed()
        # `pbxtui ban add/del` while we run: put the ban in force or lift it (issue "Security").
        # Flushed first, so every ban this process made is in the store: a row of ours that is
        # missing now was deleted by the other process.
        await self.store.flush()
        saved_bans = await self.store.list_bans()
        added, lifted, refused = self.security.sync_bans(saved_bans, self.clock())
        for ip in refused:
            message = f"ban of {ip} ignored: it is this server's address or in the allow_list"
            log.warning(message)
            self.bus.publish(ServerEvent(message, level="warning"))
        log.info(
            "database changed elsewhere: reloaded %d users, %d bans added, %d lifted",
            len(self.users),
            added,
            lifted,
        )

    async def stop(self) -> None:
        cluster = self.cluster
        if isinstance(cluster, MainCluster):
            await cluster.stop()
        elif cluster is not None:
            cluster.close()
        if self.trunks is not None:
            await self.trunks.close()
        if self._proxy_timer is not None:
            self._proxy_timer.cancel()
            self._proxy_timer = None
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks.clear()
        await self.transport.stop()
        if self.store is not None:
            with contextlib.suppress(Exception):
                await self.store.flush()
            await self.store.close()
        self._started = False

    # -- the loop's callbacks -------------------------------------------------------------
    def _on_message(self, data: bytes, flow) -> None:
        try:
            cluster = self.cluster
            if cluster is not None:
                owner = owner_of(data, cluster.workers)
                if owner != cluster.index:
                    # Another process holds this Call-ID's state (core/cluster/affinity.py).
                    if self.route.admit(flow, self.clock()):
                        cluster.forward(owner, data, flow)
                    return
            self.route.on_message(data, flow)
        except Exception:
            # A bug must never take the server down; it is logged with the message that hit it.
            log.exception("unhandled error routing a message from %s", flow)
        self._arm_proxy_timer()

    def _on_forwarded(self, data: bytes, flow) -> None:
        """A message another process read and admitted, for a Call-ID this one owns."""
        try:
            self.route.on_admitted(data, flow, self.clock())
        except Exception:
            log.exception("unhandled error routing a message from %s", flow)
        self._arm_proxy_timer()

    # -- the proxy's timers (issue "Calls") -----------------------------------------------
    def _arm_proxy_timer(self) -> None:
        """One loop timer for the proxy's earliest deadline (transaction timers, ring
        timeouts, call limits). Re-armed only when a message brought the deadline forward;
        a timer that fires early finds nothing due and re-arms for the real deadline."""
        proxy = self.proxy
        if proxy is None:
            return
        deadline = proxy.next_deadline()
        if deadline is None:
            return
        handle = self._proxy_timer
        if handle is not None:
            if self._proxy_timer_at <= deadline:
                return
            handle.cancel()
        loop = asyncio.get_running_loop()
        self._proxy_timer_at = deadline
        delay = max(0.0, deadline - self.clock())
        self._proxy_timer = loop.call_at(loop.time() + delay, self._on_proxy_timer)

    def _on_proxy_timer(self) -> None:
        self._proxy_timer = None
        try:
            self.proxy.on_timer(self.clock())
        except Exception:
            # A bug must not spin the loop on a deadline that stays due: retry in a second.
            log.exception("proxy timer failed")
            loop = asyncio.get_running_loop()
            self._proxy_timer_at = self.clock() + HOUSEKEEPING_INTERVAL
            self._proxy_timer = loop.call_later(HOUSEKEEPING_INTERVAL, self._on_proxy_timer)
            return
        self._arm_proxy_timer()

    def _on_stream_error(self, error, flow, data: bytes) -> None:
        self.security.parse_failed(flow.remote[0], error.reason, self.clock())

    async def _housekeeping(self) -> None:
        while True:
            await asyncio.sleep(HOUSEKEEPING_INTERVAL)
            try:
                self._housekeep(self.clock())
            except Exception:
                log.exception("housekeeping failed")

    def _housekeep(self, now: float) -> None:
        cluster = self.cluster
        worker = isinstance(cluster, WorkerCluster)
        if not worker:
            # Binding expiry and keep-alives are main's; workers hear the result (cluster.py).
            if cluster is not None:
                cluster.housekeeping(now)
            self.registrar.expire(now)
            self.natping.on_timeout(now)
            for binding, request in self.natping.due(now):
                self.route.send(request.to_bytes(), binding.target().flow)
        self.security.expire(now)
        self.route.expire(now)
        self.trunks.expire(now)
        self._report_shedding()
        if worker:
            cluster.report()

    def _report_shedding(self) -> None:
        """A warning a second while overloaded: how many new requests were shed, and how
        many messages of any kind were lost."""
        shed = self.transport.shed_requests
        if shed > self._shed_reported:
            self.bus.publish(
                ServerEvent(
                    f"overloaded: {shed - self._shed_reported} new requests dropped in the "
                    "last second so that calls under way keep going (the UDP backlog's wait "
                    "passed transport.udp_shed_after_seconds)",
                    level="warning",
                )
            )
            self._shed_reported = shed
        lost = self.transport.backlog_drops + (self.cluster.links.dropped if self.cluster else 0)
        if lost > self._lost_reported:
            self.bus.publish(
                ServerEvent(
                    f"overloaded: {lost - self._lost_reported} messages lost in the last "
                    "second: the UDP backlog (transport.udp_backlog_messages) or a link to "
                    "another process was full",
                    level="warning",
                )
            )
            self._lost_reported = lost

    # -- figures for the console ----------------------------------------------------------
    @property
    def dropped_here(self) -> int:
        """Messages this process never handled: from banned or flooding sources, past the UDP
        backlog, or shed under overload."""
        route_drops = self.route.dropped if self.route else 0
        return route_drops + self.transport.backlog_drops + self.transport.shed_requests

    def stats(self) -> PbxStats:
        now = self.clock()
        stats = PbxStats(
            messages_in=self.transport.received_messages,
            messages_out=self.transport.sent_messages,
            contacts=self.location.contact_count if self.location else 0,
            calls_up=len(self.proxy.calls) if self.proxy else 0,
            bans=len(self.security.bans(now)) if self.security else 0,
            users=len(self.users),
            dropped=self.dropped_here,
        )
        cluster = self.cluster
        if isinstance(cluster, MainCluster):
            # What the workers last reported, added to main's own (TCP, keep-alives).
            totals = cluster.totals()
            stats.messages_in += totals.messages_in
            stats.messages_out += totals.messages_out
            stats.dropped += totals.dropped
            stats.calls_up = len(cluster.calls)
        return stats

    def calls(self) -> list[CallInfo]:
        """Active calls, oldest first, for the console."""
        if isinstance(self.cluster, MainCluster):
            return self.cluster.calls.snapshot()
        return self.proxy.calls.snapshot() if self.proxy else []


class _BindingWriter:
    """Location changes → the store's batching writer (never awaited on the SIP path)."""

    def __init__(self, store: Store) -> None:
        self.store = store

    def binding_saved(self, binding) -> None:
        self.store.submit(UpsertBinding(binding.to_row()))

    def binding_removed(self, binding) -> None:
        # The whole row key: one Contact URI may be stored once per RFC 5626 flow (reg-id).
        self.store.submit(DeleteBinding.of(binding.to_row()))


class _BanWriter:
    def __init__(self, store: Store) -> None:
        self.store = store

    def ban_saved(self, ban) -> None:
        until = None if ban.permanent else ban.until_wall
        self.store.submit(UpsertBan(BanRow(ban.ip, until, ban.reason, ban.count, time.time())))

    def ban_removed(self, ip: str) -> None:
        self.store.submit(DeleteBan(ip))
