"""The route's security steps behind one object: bans, flood detection, REQINIT, brute force.

The route calls, in this order (all synchronous, `now` on the event loop's clock)::

    if not security.admit(ip, now): drop          # every datagram / TCP message, before parsing
    verdict = security.reqinit(request, flow, now) # requests: scanner → Max-Forwards → sanity
    security.auth_failed(ip, username, ua, now)    # after a digest failure that counts
    security.auth_succeeded(ip, now)
    security.parse_failed(ip, reason, now)         # unparseable input
    security.expire(now)                           # about once a second, from a timer

and the admin side (CLI, console) calls `ban`, `unban` and `bans`. Nothing here reads the
clock for decisions or does I/O: bans are handed to a `BanSink` (the store's batching
writer), and every decision is published on the bus as a `SecurityEvent` that
`core.security.seclog` turns into one log line.

Who is never banned nor rate-limited: the server's own addresses and the allow-list
(`settings.security.allow_list`, CIDR). Own addresses are the listen IPs, and for a wildcard
listen address (0.0.0.0 / ::) the loopback addresses 127.0.0.1 and ::1 only — not all of
127.0.0.0/8. Local tools (SIPp benches, a monitoring probe on the box) talk from 127.0.0.1,
so banning it would lock the server out of itself; but other loopback addresses are how
one machine simulates many sources, and a flood from 127.0.0.3 must be caught like any
other. To exempt a range, put it in the allow-list. Exempt sources still get their scanner
requests dropped and bad requests refused: exemption is from bans and limits, not from
checks.

Which heuristic may ban whom. A carrier address is never banned by a heuristic: anyone can
make a carrier send us anything (a PSTN caller picks the display name "friendly-scanner", a
dialler floods a DID), and a ban would cut every inbound call. A carrier gets the scanner
check skipped (its From is a PSTN caller's), its own flood limit, and past that limit its
excess is dropped with a throttled `carrier-over-limit` alert instead of a ban. A source
that authenticated recently (a NATed office's one address) still has its scanner requests
dropped, but is not banned for them, so one misbehaving softphone cannot take the office's
phones off line; it keeps the flood ban (at `flood_limit_authenticated`) and the brute-force
ban, whose count every successful login from that address resets. An admin's ban applies to
everyone but the exempt.

IPv6 sources are counted and banned per prefix (`ipv6_prefix_length`, core/security/sources.py).

Hot path: `admit` is a dict lookup in the ban table plus `FloodDetector.hit` (a look-up and
a move in an ordered dict, a few integer operations). Whether a source is own, allow-listed,
a carrier or authenticated is only worked out for the rare source whose count passes the
base limit. Measured with timeit on the shared 2-core box (`test_admit_is_cheap` prints it):
0.35-0.8 µs per call for a counted source and 0.45-1.0 µs for a banned one, depending on
the load from other work (an empty Python call measures 0.04-0.19 µs there at the same
times). `reqinit` costs about 15 µs on a typical INVITE beyond parsing the headers the
route reads anyway, about half a parse.
"""

from __future__ import annotations

import math
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import ClassVar

from core.events import EventBus, SecurityEvent
from core.net.addresses import AddressSet, IpNetwork, parse_ip
from core.net.flow import Flow
from core.security.bans import Ban, BanList, BanSink, SavedBan
from core.security.flood import FloodDetector
from core.security.sanity import SanityFailure, check_max_forwards, check_request
from core.security.scanners import ScannerMatcher
from core.security.sources import SourceKeys, canonical_source
from core.security.strikes import StrikeCounter
from core.security.throttle import ReportThrottle
from core.security.verdict import CONTINUE, Continue, Drop, Reply, Verdict
from core.settings import ListenAddress, SecuritySettings
from core.sip import Request, make_response

_WILDCARD_HOSTS = frozenset({"0.0.0.0", "::", ""})
_LOOPBACK = ("127.0.0.1", "::1")
_MAX_USERNAME_KEY = 128  # a username is peer-controlled text; keys stay small


def own_addresses_for(listen: Iterable[ListenAddress | str]) -> frozenset[str]:
    """The addresses the server itself sends from, for `Security(own_addresses=...)`.

    Each specific listen IP is its own; a wildcard adds 127.0.0.1 and ::1 (see the module
    docstring for why not all of loopback). The Pbx may add interface addresses it knows.
    """
    own: set[str] = set()
    for entry in listen:
        host = entry.host if isinstance(entry, ListenAddress) else entry
        host = host.strip().strip("[]")
        if host in _WILDCARD_HOSTS:
            own.update(_LOOPBACK)
        else:
            own.add(host)
    return frozenset(own)


def canonical_ip(text: str) -> str:
    """`text` as the transport reports addresses (`::ffff:a.b.c.d` → `a.b.c.d`); ValueError
    naming the text when it is not an IP address."""
    return str(parse_ip(text))


@dataclass(slots=True)
class SecurityStats:
    """Running totals for the console; cheap integer increments on the hot path."""

    banned_drops: int = 0
    flood_bans: int = 0
    scanner_drops: int = 0
    carrier_drops: int = 0  # a carrier's messages past flood_limit_carrier (never a ban)
    scanner_bans: int = 0
    sanity_rejects: int = 0
    max_forwards_rejects: int = 0
    parse_errors: int = 0
    auth_failures: int = 0
    brute_force_bans: int = 0
    brute_force_user_alerts: int = 0


class Security:
    """One per Pbx; see the module docstring for the calls and what each decides."""

    CONTINUE: ClassVar[Continue] = CONTINUE  # what `reqinit` returns when the request may go on

    def __init__(
        self,
        settings: SecuritySettings,
        bus: EventBus,
        *,
        own_addresses: Iterable[str] = (),
        sink: BanSink | None = None,
        publisher: BanSink | None = None,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        """`wall_clock` only stamps bans with an epoch time for display and the store."""
        self.settings = settings
        self.stats = SecurityStats()
        self._bus = bus
        self._own = _with_mapped_forms(own_addresses)
        self._keys = SourceKeys(settings.ipv6_prefix_length)
        self.source_key = self._keys.key
        self._allowed = AddressSet(settings.allow_list)
        self._carriers = AddressSet()
        self._flood = FloodDetector(
            settings.flood_window, settings.flood_limit, settings.max_tracked_sources
        )
        self._flood_base_limit = settings.flood_limit
        self._bans = BanList(
            bus, max_bans=settings.max_bans, sink=sink, publisher=publisher, wall_clock=wall_clock
        )
        self._ban_until = self._bans.until_by_ip  # the per-packet lookup
        self._scanners = ScannerMatcher(settings.scanner_user_agents)
        self._scanner_hits = StrikeCounter(
            settings.scanner_ban_seconds,
            max(1, settings.scanner_ban_after),
            settings.max_tracked_sources,
        )
        self._auth_failures_by_ip = StrikeCounter(
            settings.auth_fail_window,
            max(1, settings.auth_fail_limit_per_ip),
            settings.max_tracked_sources,
        )
        self._auth_failures_by_user = StrikeCounter(
            settings.auth_fail_window,
            max(1, settings.auth_fail_limit_per_user),
            settings.max_tracked_sources,
        )
        # ip → remembered until; kept in refresh order, so the oldest come first.
        self._authenticated_until: OrderedDict[str, float] = OrderedDict()
        self._reports = ReportThrottle(
            bus.publish,
            interval=settings.report_interval,
            max_per_second=settings.max_reports_per_second,
            max_keys=settings.max_tracked_sources,
        )

    # -- configuration --------------------------------------------------------------------
    def set_carrier_networks(self, networks: Iterable[IpNetwork | str] | AddressSet) -> None:
        """Carrier addresses get `flood_limit_carrier` (a higher limit, not an exemption)."""
        self._carriers = networks if isinstance(networks, AddressSet) else AddressSet(networks)

    def apply_settings(self, settings: SecuritySettings) -> None:
        """New limits and allow-list in force from the next message (a reload, SIGHUP).

        Counts already made are kept where their meaning is unchanged: flood estimates, strikes
        and bans in force stay; only the thresholds move. Table sizes (`max_*`) are fixed at
        start and keep their old values.
        """
        self.settings = settings
        self._allowed = AddressSet(settings.allow_list)
        flood = self._flood
        if settings.flood_window > 0 and settings.flood_window != flood.window:
            flood.set_window(settings.flood_window)
        flood.base_limit = settings.flood_limit
        self._flood_base_limit = settings.flood_limit
        self._scanners = ScannerMatcher(settings.scanner_user_agents)
        self._scanner_hits.window = settings.scanner_ban_seconds
        self._scanner_hits.limit = max(1, settings.scanner_ban_after)
        for counter, limit in (
            (self._auth_failures_by_ip, settings.auth_fail_limit_per_ip),
            (self._auth_failures_by_user, settings.auth_fail_limit_per_user),
        ):
            counter.window = settings.auth_fail_window
            counter.limit = max(1, limit)

    def set_own_addresses(self, addresses: Iterable[str]) -> None:
        """Replace the server's own addresses (known once the sockets are bound)."""
        self._own = _with_mapped_forms(addresses)

    @property
    def sink(self) -> BanSink | None:
        """Where bans are persisted (`ban_saved` / `ban_removed`); None: nowhere."""
        return self._bans.sink

    @sink.setter
    def sink(self, sink: BanSink | None) -> None:
        self._bans.sink = sink

    def is_exempt(self, ip: str) -> bool:
        """Own and allow-listed addresses are never banned nor rate-limited."""
        return ip in self._own or (bool(self._allowed) and self._allowed.contains(ip))

    # -- per packet -------------------------------------------------------------------------
    def admit(self, ip: str, now: float) -> bool:
        """False: drop the message unread (the source is banned, or just became so)."""
        key = ip if ":" not in ip else self.source_key(ip)
        if key is not ip and self._banned(ip, now):  # an admin's ban of one IPv6 address
            return False
        if self._banned(key, now):
            return False
        estimate = self._flood.hit(key, now)
        if estimate > self._flood_base_limit:
            return self._over_base_limit(ip, key, estimate, now)
        return True

    def is_banned(self, ip: str, now: float) -> bool:
        """Is `ip` (or its IPv6 prefix) banned at `now`? For the transport's accept check."""
        key = self.source_key(ip)
        for banned in {ip, key}:
            until = self._ban_until.get(banned)
            if until is not None and now < until:
                return True
        return False

    def _banned(self, key: str, now: float) -> bool:
        until = self._ban_until.get(key)
        if until is None:
            return False
        if now < until:
            self.stats.banned_drops += 1
            self._reports.report("banned-dropped", key, now, "source is banned")
            return True
        self._bans.expire_ip(key, now)
        return False

    def is_carrier(self, ip: str) -> bool:
        return bool(self._carriers) and self._carriers.contains(ip)

    def _over_base_limit(self, ip: str, key: str, estimate: float, now: float) -> bool:
        limit = self._flood_limit_for(ip, now)
        if limit is None:
            # Exempt: start its count again, so it pays for this look-up once per
            # `flood_limit` messages rather than on every one (the bench's 127.0.0.1).
            self._flood.forget(key)
            return True
        if estimate <= limit:
            return True
        settings = self.settings
        if self.is_carrier(ip):
            # Never banned by a heuristic: the excess is dropped, the admin alerted.
            self.stats.carrier_drops += 1
            self._reports.report(
                "carrier-over-limit",
                ip,
                now,
                f"carrier over its flood limit ({limit} in {settings.flood_window:g}s): "
                "excess dropped, not banned",
            )
            return False
        self._flood.forget(key)
        count = round(estimate)
        self._bans.add(
            key,
            settings.flood_ban_seconds,
            "flood",
            now,
            count=count,
            action="flood-banned",
            detail=f"{count} messages in {settings.flood_window:g}s (limit {limit})",
        )
        self.stats.flood_bans += 1
        return False

    def _flood_limit_for(self, ip: str, now: float) -> int | None:
        """The limit that applies to `ip` (None: exempt). Only asked above the base limit."""
        if self.is_exempt(ip):
            return None
        settings = self.settings
        limit = settings.flood_limit
        authenticated_until = self._authenticated_until.get(ip)
        if authenticated_until is not None and now < authenticated_until:
            limit = max(limit, settings.flood_limit_authenticated)
        if self.is_carrier(ip):
            limit = max(limit, settings.flood_limit_carrier)
        return limit

    # -- per request ------------------------------------------------------------------------
    def reqinit(self, request: Request, flow: Flow, now: float) -> Verdict:
        """Scanner → drop; Max-Forwards 0 → 483 (missing → added); sanity → 400/416/420.

        A bad ACK is dropped, never answered (RFC 3261 §17.1.1: ACK gets no response).
        """
        ip = flow.ip
        scanner = self._scanners.match_request(request)
        if scanner is not None and not self.is_carrier(ip):
            return self._scanner_dropped(request, ip, scanner, now)
        failure = check_max_forwards(request) or check_request(request, reliable=flow.reliable)
        if failure is None:
            return CONTINUE
        return self._refused(request, ip, failure, now)

    def _scanner_dropped(self, request: Request, ip: str, what: str, now: float) -> Drop:
        settings = self.settings
        user_agent = request.user_agent or ""
        self.stats.scanner_drops += 1
        known = self._authenticated_recently(ip, now)
        # A source that logged in is reported under another action, which the fail2ban
        # filter does not count (core/security/seclog.py): it must not ban it either.
        action = "scanner-dropped-known" if known else "scanner-dropped"
        self._reports.report(
            action, ip, now, detail=f"{request.method}: {what}", user_agent=user_agent
        )
        if not self.is_exempt(ip) and not known:
            key = self.source_key(ip)
            hits = self._scanner_hits.strike(key, now)
            if hits >= settings.scanner_ban_after:
                detail = f"scanner ({what}): {hits} requests"
                seconds = settings.scanner_ban_seconds
                self._strikes_ban(
                    self._scanner_hits, key, seconds, "scanner", now, hits, detail, user_agent
                )
                self.stats.scanner_bans += 1
        return Drop(f"scanner: {what}")

    def _strikes_ban(
        self,
        counter: StrikeCounter,
        key: str,
        seconds: float,
        reason: str,
        now: float,
        hits: int,
        detail: str,
        user_agent: str,
        user: str = "",
    ) -> None:
        """`key` reached `counter`'s limit: ban it, and start its strikes and its flood count
        again, so that it comes back from the ban with a clean slate."""
        counter.clear(key)
        self._flood.forget(key)
        self._bans.add(
            key, seconds, reason, now, count=hits, detail=detail, user_agent=user_agent, user=user
        )

    def _refused(self, request: Request, ip: str, failure: SanityFailure, now: float) -> Verdict:
        if failure.status == 483:
            action = "max-forwards"
            self.stats.max_forwards_rejects += 1
        else:
            action = "sanity-rejected"
            self.stats.sanity_rejects += 1
        answer = f"{failure.status} {failure.reason}"
        self._reports.report(
            action,
            ip,
            now,
            detail=f"{request.method}: {answer}",
            user_agent=request.user_agent or "",
        )
        if request.method == "ACK" or request.headers.get("via") is None:
            # RFC 3261 §17.1.1: an ACK gets no response; §18.2.2: one without Via can't.
            return Drop(answer)
        return Reply(
            make_response(request, failure.status, failure.reason, extra=list(failure.headers))
        )

    # -- authentication -------------------------------------------------------------------
    def auth_failed(self, ip: str, username: str, user_agent: str, now: float) -> None:
        """A digest check failed: count it per source (→ ban) and per user (→ alert only;
        users are never locked out, or an attacker could lock anyone out at will)."""
        settings = self.settings
        self.stats.auth_failures += 1
        user_key = username[:_MAX_USERNAME_KEY]
        exempt = self.is_exempt(ip)
        key = self.source_key(ip)
        from_ip = 0 if exempt else self._auth_failures_by_ip.strike(key, now)
        window = f"{settings.auth_fail_window:g}s"
        self._bus.publish(
            SecurityEvent(
                action="auth-failed",
                source=ip,
                user=username,
                user_agent=user_agent,
                detail=f"{from_ip} from this address in {window}" if not exempt else "exempt",
            )
        )
        if from_ip >= settings.auth_fail_limit_per_ip:
            detail = f"{from_ip} failed authentications in {window}"
            counter, seconds = self._auth_failures_by_ip, settings.auth_fail_ban_seconds
            self._strikes_ban(
                counter, key, seconds, "brute-force", now, from_ip, detail, user_agent, username
            )
            self.stats.brute_force_bans += 1
        if user_key:
            for_user = self._auth_failures_by_user.strike(user_key, now)
            if for_user >= settings.auth_fail_limit_per_user:
                self._auth_failures_by_user.clear(user_key)
                self.stats.brute_force_user_alerts += 1
                self._bus.publish(
                    SecurityEvent(
                        action="brute-force-user",
                        source=ip,
                        user=username,
                        user_agent=user_agent,
                        count=for_user,
                        detail=f"{for_user} failed authentications for this user in {window}",
                    )
                )

    def report(
        self,
        action: str,
        source: str,
        now: float,
        detail: str = "",
        *,
        user: str = "",
        user_agent: str = "",
    ) -> None:
        """A security decision made elsewhere (the proxy, the registrar), coalesced per
        (action, source) and capped a second like this layer's own (core/security/reports.py)."""
        self._reports.report(action, source, now, detail, user=user, user_agent=user_agent)

    def auth_succeeded(self, ip: str, now: float) -> None:
        """The source proved a password: forget its failures, give it the higher flood limit."""
        self._auth_failures_by_ip.clear(self.source_key(ip))
        remembered = self._authenticated_until
        if ip in remembered:
            remembered.move_to_end(ip)
        elif len(remembered) >= self.settings.max_authenticated_sources:
            remembered.popitem(last=False)
        remembered[ip] = now + self.settings.authenticated_memory_seconds

    def _authenticated_recently(self, ip: str, now: float) -> bool:
        until = self._authenticated_until.get(ip)
        return until is not None and now < until

    def parse_failed(self, ip: str, reason: str, now: float) -> None:
        """Input from `ip` could not be parsed (the route answers or drops it)."""
        self.stats.parse_errors += 1
        self._reports.report("parse-error", ip, now, detail=reason)

    # -- bans (admin API) ----------------------------------------------------------------
    def ban(self, ip: str, seconds: float | None, reason: str, now: float) -> Ban:
        """Ban `ip` by hand for `seconds` (None or math.inf: until unbanned).

        ValueError if `ip` is not an address, or is one of ours or allow-listed: banning it
        would cut the server off from itself or from a range the admin declared safe.
        """
        address = canonical_ip(ip)
        if self.is_exempt(address):
            raise ValueError(
                f"{address} is exempt from bans (an address of this server or in the "
                "security allow_list); remove it from allow_list first if you mean it"
            )
        duration = math.inf if seconds is None else seconds
        self._flood.forget(address)
        return self._bans.add(address, duration, reason, now, detail=f"admin: {reason}")

    def unban(self, ip: str, now: float) -> bool:
        """Lift a ban by hand; False when `ip` was not banned. Its strike counts are cleared."""
        address = canonical_source(ip)
        if address not in self._bans and "/" not in address:
            address = self.source_key(address)  # the IPv6 prefix the address was banned in
        self._scanner_hits.clear(address)
        self._auth_failures_by_ip.clear(address)
        return self._bans.remove(address, "admin") is not None

    def bans(self, now: float) -> list[Ban]:
        """Bans in force at `now`, soonest to end first."""
        return self._bans.active(now)

    def restore(self, bans: Iterable[SavedBan], now: float) -> int:
        """Reload bans from the store at start-up (see `BanList.restore`)."""
        return self._bans.restore(bans, now, skip=self.is_exempt)

    def adopt_ban(self, saved: SavedBan, now: float) -> bool:
        """Hold a ban another process of this server made and announced (core/cluster)."""
        return self._bans.adopt(saved, now, skip=self.is_exempt)

    def forget_ban(self, ip: str) -> bool:
        """Lift a ban another process of this server lifted and announced (core/cluster)."""
        return self._bans.forget(ip)

    def sync_bans(self, bans: Iterable[SavedBan], now: float) -> tuple[int, int, list[str]]:
        """Follow the store after another process (the CLI) changed it: `bans` is every ban
        the store holds now (see `BanList.sync`). Returns (how many were put in force, how
        many lifted, the exempt addresses refused)."""
        added, lifted, refused = self._bans.sync(bans, now, skip=self.is_exempt)
        for ban in added:
            self._flood.forget(ban.ip)
        for ip in lifted:
            self._scanner_hits.clear(ip)
            self._auth_failures_by_ip.clear(ip)
        return len(added), len(lifted), refused

    # -- housekeeping -----------------------------------------------------------------------
    def expire(self, now: float) -> list[Ban]:
        """Periodic work, about once a second: end bans that ran out, publish pending drop
        counts, forget flood counters that no longer matter and authenticated sources not
        seen for `authenticated_memory_seconds`."""
        expired = self._bans.expire(now)
        self._reports.flush(now)
        self._flood.sweep(now)
        remembered = self._authenticated_until
        while remembered:
            oldest, until = next(iter(remembered.items()))
            if until > now:
                break
            del remembered[oldest]
        return expired

    @property
    def tracked_sources(self) -> int:
        """Sources with flood counters now (bounded by `max_tracked_sources`)."""
        return self._flood.tracked


def _with_mapped_forms(addresses: Iterable[str]) -> frozenset[str]:
    """Own addresses as a dual-stack socket may report them (`::ffff:127.0.0.1` too).

    A host name among them is skipped: packets arrive from addresses, never from names.
    """
    forms: set[str] = set()
    for text in addresses:
        try:
            address = parse_ip(text)
        except ValueError:
            continue
        forms.add(str(address))
        if address.version == 4:
            forms.add(f"::ffff:{address}")
    return frozenset(forms)
