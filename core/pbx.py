"""The Pbx: starts the SIP core of one process, runs its timers, stops it.

The headless runner, the console and a worker process hold the same object; what differs
between them is the role it is given (core/roles.py, core/cluster/), chosen before anything
is built. `start()` opens the store, builds the core (core/assembly.py), binds the sockets and
starts the role's duties; from then on the loop's callbacks land here: messages go to the
role's `dispatch`, and the proxy's one timer and the housekeeping tick run from here.

One clock for everything: wall time in epoch seconds (`time.time`), so binding expiry and ban
ends mean the same thing after a restart as before it, and the console can show them without
conversion. Timers armed on the event loop are converted to its monotonic clock at the moment
they are armed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from pathlib import Path

from core.accounting.books import Books
from core.admin import AdminApi
from core.assembly import Core, Duties, PbxStats, Role, Stored
from core.cluster.main import MainRole
from core.events import EventBus, SecurityEvent, ServerEvent
from core.faults import FaultLog
from core.net.identity import ServerIdentity
from core.net.tls import Reloaded, TlsError, TlsLayer, watch_certificate
from core.net.transport import ListenError, Transport
from core.private_files import exposure
from core.proxy.calls import CallInfo
from core.proxy.proxy import Proxy
from core.registrar.location import LocationService
from core.registrar.natping import NatKeepalive
from core.registrar.registrar import Registrar
from core.roles import StandaloneRole
from core.route import Route
from core.security.guard import Security
from core.settings import ListenAddress, Settings
from core.store.database import Store
from core.store.errors import StoreError
from core.trunks.trunks import Trunks
from core.users import UserDirectory

__all__ = ["HOUSEKEEPING_INTERVAL", "Pbx", "PbxStats", "StartError", "role_for"]

log = logging.getLogger("pbxtui.pbx")

HOUSEKEEPING_INTERVAL = 1.0  # binding expiry, ban expiry, NAT pings, reply-cache trimming


class StartError(Exception):
    """The Pbx cannot start: the message says why, in words for an admin."""


def role_for(settings: Settings, *, quiet_workers: bool = False) -> Role:
    """Standalone, or the main process when `[server] workers` is set (`quiet_workers`: the
    console owns the terminal, so the workers write nothing to stderr)."""
    if settings.workers:
        return MainRole(settings, quiet=quiet_workers)
    return StandaloneRole(settings)


class Pbx:
    """The SIP core of one process, in the role it is given (by default: standalone, or the
    main process when `[server] workers` is set)."""

    def __init__(
        self,
        settings: Settings,
        *,
        role: Role | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.settings = settings
        self.clock = clock
        self.role: Role = role if role is not None else role_for(settings)
        self.bus: EventBus = self.role.bus
        self.tls = TlsLayer(settings.tls, report=self._tls_security_event)
        self.transport = Transport(
            settings.transport,
            self._on_message,
            self._on_stream_error,
            self._on_forwarded,
            tls=self.tls,
        )
        # Set by `start`, together: the core and what the role does while it runs.
        self._running: tuple[Core, Duties] | None = None
        # The proxy's one loop timer: armed for proxy.next_deadline().
        self._proxy_timer: asyncio.TimerHandle | None = None
        self._proxy_timer_at = 0.0
        # A bug one packet triggers must not write a traceback per packet (core/faults.py).
        self.faults = FaultLog(log, time.monotonic)
        self._tasks: list[asyncio.Task[None]] = []
        self._shed_reported = 0  # transport.shed_requests already reported in the feed
        self._lost_reported = 0  # backlog and link drops already reported

    # -- the parts, once started ------------------------------------------------------------
    @property
    def core(self) -> Core:
        if self._running is None:
            raise RuntimeError("the Pbx is not started")
        return self._running[0]

    @property
    def duties(self) -> Duties:
        """What the role does while the core runs (core/roles.py, core/cluster/)."""
        return self._started()[1]

    @property
    def admin(self) -> AdminApi:
        return self.core.admin

    @property
    def store(self) -> Store:
        return self.core.store

    @property
    def users(self) -> UserDirectory:
        return self.core.users

    @property
    def identity(self) -> ServerIdentity:
        return self.core.identity

    @property
    def security(self) -> Security:
        return self.core.security

    @property
    def location(self) -> LocationService:
        return self.core.location

    @property
    def registrar(self) -> Registrar:
        return self.core.registrar

    @property
    def natping(self) -> NatKeepalive:
        return self.core.natping

    @property
    def proxy(self) -> Proxy:
        return self.core.proxy

    @property
    def trunks(self) -> Trunks:
        return self.core.trunks

    @property
    def route(self) -> Route:
        return self.core.route

    @property
    def books(self) -> Books:
        return self.core.books

    @property
    def listening(self) -> list[ListenAddress]:
        return list(self.transport.bound)

    @property
    def user_count(self) -> int:
        return len(self.core.users)

    # -- lifecycle ------------------------------------------------------------------------
    async def start(self) -> None:
        """Open the database, build the core from it, bind the sockets, start the role."""
        settings = self.settings
        role = self.role
        try:
            store = await Store.open(settings.db_path)
        except StoreError as error:
            raise StartError(str(error)) from None
        self._warn_if_exposed()
        now = self.clock()
        stored = await Stored.load(store, settings, now)
        books = Books(settings.accounting, prices_calls=role.prices_calls)
        await books.load(store, now)
        if stored.realm != settings.realm:
            role.announce(
                f"the domain changed from {stored.realm!r} to {settings.realm!r}: SIP passwords "
                "are stored as HA1 hashes of the realm, so every user's password must be reset "
                "(pbxtui user passwd NAME)"
            )
        core = Core(
            settings, role=role, store=store, stored=stored, transport=self.transport,
            books=books, clock=self.clock,
        )  # fmt: skip
        try:
            self._load_tls()
            await core.trunks.resolve_gateways()
            await role.bind(self.transport, tuple(settings.listen))
        except (ListenError, TlsError) as error:
            await core.close()
            await store.close()
            raise StartError(str(error)) from None
        # Our own Via / Record-Route must name the address actually bound (port 0 → real port).
        core.bound(role.bound(self.transport))
        try:
            duties = await role.start(core)
        except Exception as error:
            await core.close()
            await self.transport.stop()
            with contextlib.suppress(Exception):
                await store.flush()
            await store.close()
            raise StartError(str(error)) from None
        self._running = (core, duties)
        # Datagrams from now on: straight to the role's dispatch (compiled for a standalone
        # server), faults counted here, the proxy's timer re-armed once per batch.
        self.transport.fast_lane(duties.dispatch, self._arm_proxy_timer, self._message_fault)
        self._tasks.append(asyncio.create_task(self._housekeeping(), name="pbx-housekeeping"))
        if self.tls.certificate is not None:
            watch = watch_certificate(
                self.tls, self._certificate_reloaded, settings.tls.reload_check_seconds
            )
            self._tasks.append(asyncio.create_task(watch, name="tls-certificate-watch"))

    # -- TLS: the certificate and what the carriers' servers are checked against -----------
    def _load_tls(self) -> None:
        """Loaded before anything listens: a tls listener without a usable certificate is a
        start error (RFC 3261 §26.2.1), as is an unusable CA file or client certificate."""
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
        """One event: the feed shows it, and headless the event log writes it to stderr."""
        self.bus.publish(ServerEvent(result.message, level="info" if result.ok else "error"))

    def _tls_security_event(self, action: str, source: str, detail: str) -> None:
        self.bus.publish(SecurityEvent(action, source, detail))

    def _warn_if_exposed(self) -> None:
        """The database holds HA1s and carrier passwords: say so at start when other users
        of the host can read it (core/private_files.py)."""
        if str(self.settings.db_path) == ":memory:":
            return
        problem = exposure(Path(self.settings.db_path).expanduser())
        if problem is not None:
            self.role.announce(f"database exposed: {problem}")

    async def stop(self) -> None:
        running = self._running
        self._running = None
        self.transport.fast_lane(None)  # read while stopping: `_on_message` drops it
        if running is not None:
            core, duties = running
            core.location.flush()  # the last refreshes, to the store and the other processes
            await duties.stop()
            await core.close()
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
        if running is not None:
            store = running[0].store
            with contextlib.suppress(Exception):
                await store.flush()
            await store.close()

    # -- the loop's callbacks -------------------------------------------------------------
    def _on_message(self, data: bytes, flow) -> None:
        running = self._running
        if running is None:
            return  # read while stopping: nobody left to answer it
        try:
            running[1].dispatch(data, flow)
        except Exception as error:
            self._message_fault(error, flow)
        self._arm_proxy_timer()

    def _message_fault(self, error: Exception, flow) -> None:
        # A bug must never take the server down; logged once per kind, then counted.
        self.faults.fault(error, f"a message from {flow}")

    def _on_forwarded(self, data: bytes, flow) -> None:
        """A message another process read and admitted, for a Call-ID this one owns."""
        running = self._running
        if running is None:
            return
        try:
            running[0].route.on_admitted(data, flow, self.clock())
        except Exception as error:
            self.faults.fault(error, f"a message from {flow}")
        self._arm_proxy_timer()

    def _on_stream_error(self, error, flow, data: bytes) -> None:
        if self._running is not None:
            self._running[0].security.parse_failed(flow.remote[0], error.reason, self.clock())

    # -- the proxy's timer ------------------------------------------------------------------
    def _arm_proxy_timer(self) -> None:
        """One loop timer for the proxy's earliest deadline (transaction timers, ring
        timeouts, call limits). Re-armed only when a message brought the deadline forward;
        a timer that fires early finds nothing due and re-arms for the real deadline."""
        running = self._running
        if running is None:
            return
        deadline = running[0].proxy.next_deadline()
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
            self.core.proxy.on_timer(self.clock())
        except Exception:
            # A bug must not spin the loop on a deadline that stays due: retry in a second.
            log.exception("proxy timer failed")
            loop = asyncio.get_running_loop()
            self._proxy_timer_at = self.clock() + HOUSEKEEPING_INTERVAL
            self._proxy_timer = loop.call_later(HOUSEKEEPING_INTERVAL, self._on_proxy_timer)
            return
        self._arm_proxy_timer()

    # -- housekeeping -----------------------------------------------------------------------
    async def _housekeeping(self) -> None:
        while True:
            await asyncio.sleep(HOUSEKEEPING_INTERVAL)
            try:
                self._housekeep(self.clock())
            except Exception:
                log.exception("housekeeping failed")

    def _housekeep(self, now: float) -> None:
        core, duties = self._started()
        # Refreshes changed in place reach the store and the other processes (every role).
        core.location.flush()
        duties.housekeep(now)  # binding expiry and keep-alives where this process has them
        core.security.expire(now)
        core.outbox.expire(now)
        core.trunks.expire(now)
        for call, reason in core.trunks.calls_past_spend_limits(now):
            core.proxy.end_call(call, now, reason)
        core.books.housekeep(core.store, now)
        core.expire_media(now)
        self._report_shedding()

    def _report_shedding(self) -> None:
        """A warning a second while overloaded: how many new requests were shed, and how
        many messages of any kind were lost."""
        _core, duties = self._started()
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
        lost = self.transport.backlog_drops + duties.lost
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

    def _started(self) -> tuple[Core, Duties]:
        if self._running is None:
            raise RuntimeError("the Pbx is not started")
        return self._running

    # -- figures for the console ----------------------------------------------------------
    def stats(self) -> PbxStats:
        core, duties = self._started()
        stats = core.stats()
        duties.add_figures(stats)
        return stats

    def calls(self) -> list[CallInfo]:
        """Active calls, oldest first, for the console, with their relayed media's counters."""
        core, duties = self._started()
        return core.with_media(duties.calls())
