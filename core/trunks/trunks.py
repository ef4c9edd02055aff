"""Carrier trunks: calls in from carriers' addresses, calls out through their gateways.

Inbound (the route's step 5, before digest auth). A request whose source address is inside a
carrier's networks is trusted without a challenge, as Kamailio's `allow_source_address()`
does; nothing else about the request counts (a stranger whose From names the carrier still
gets 407). The Request-URI user is looked up as a DID (in canonical form, so `+44…`, `0044…`
and `0…` reach the same DID), then as a username; found, the request goes to the proxy as a
call from a trusted carrier (forking to the user's contacts: 480 when none is registered);
not found, 404.

The trunks decide and the proxy or the route acts (core/proxy/decisions.py): they answer with
a refusal, a local user, or a gateway to dial, and never send anything themselves.

Outbound (asked by the proxy for a request it has no local user for). An authenticated user's
request for a number that is neither a user nor a DID:

    not a number                   404 (our domain) / 403 (elsewhere: no open relay)
    a DID                          to the DID's user, like any internal call
    not an INVITE                  403: only calls go to carriers
    policy (core/trunks/tollfraud.py)     403 + SecurityEvent("toll-fraud")
    spend limit (core/accounting)  403 + SecurityEvent("toll-fraud")
    no gateway                     503
    limits                         486 / 503 + SecurityEvent("toll-fraud")
    → the first gateway (core/trunks/gateways.py), with the caller ID set

and `reroute` answers, for each attempt that fails: a 401/407 from the
gateway is answered once with the carrier's credentials (digest as a client, RFC 3261 §22.2:
the INVITE again, CSeq + 1, same Call-ID and From tag); a 5xx, 408 or transport failure
moves on to the next gateway (RFC 3263 §4.3). A request from a carrier never goes back out.

Re-sending the INVITE with a higher CSeq means the gateway's dialog counts from there, so
every later request of the caller in that dialog (ACK, BYE, re-INVITE) goes out with its
CSeq raised by the same amount (`rewrite`); the proxy puts the caller's own CSeq and
From back on the responses it relays (RFC 3261 §8.2.6.2). Caller ID: the From user becomes
the user's configured outbound number, and P-Asserted-Identity says the same (RFC 3325 §9.1);
identity headers the phone itself sent are removed, so a user cannot choose whom to pose as.
RFC 4916 §4 lets the From URI of the caller's later requests change the same way.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import Callable, Iterable

from core.accounting.meter import Meter, RunningCall
from core.events import CallEvent, Event, EventBus, ServerEvent
from core.net.addresses import AddressSet
from core.net.flow import Flow
from core.net.identity import ServerIdentity
from core.net.tls import parse_carrier_subjects
from core.proxy.calls import ENDED, FAILED, TRYING, Call, CallTable
from core.proxy.decisions import Decision, Dial, Refuse, Rewrite, ToUser
from core.proxy.dialogs import call_for_invite
from core.proxy.forking import Branch
from core.proxy.routing import local_address
from core.registrar.location import Target
from core.route import ALLOWED_METHODS, ROUTABLE_METHODS
from core.security.throttle import ReportThrottle
from core.settings import Settings
from core.sip.address import NameAddr
from core.sip.errors import SipParseError
from core.sip.message import Request, Response
from core.sip.uri import SipUri, TelUri
from core.store.rows import CarrierRow, DidRow
from core.trunks.dialplan import DialledNumber, Dialplan
from core.trunks.gateways import (
    REFRESH_SECONDS,
    GatewayTable,
    HostLookup,
    SrvLookup,
    gateway_of,
    resolve,
)
from core.trunks.outbound import (
    OutboundCall,
    address_text,
    fails_over,
    gateway_authorization,
)
from core.trunks.tollfraud import CallLimiter, LimiterListener, Refusal, check_policy
from core.users import UserDirectory

# Per-call outbound state outlives the call by Timer J (64*T1): the BYE that ended it, and its
# retransmissions, still need the CSeq shift on their way to the gateway.
STATE_GRACE_SECONDS = 32.0
# Call-IDs of INVITEs refused lately, so a retransmission of one leaves no second CDR.
MAX_REFUSED_REMEMBERED = 4_096


class Trunks:
    """Carriers, DIDs and gateways in memory; what the route and the proxy ask of them.

    Build it before the proxy (which it serves as `carriers`), call `load()` (or `reload()`,
    which also resolves gateway names) whenever carriers or DIDs change, and `expire(now)`
    about once a second.
    """

    def __init__(
        self,
        settings: Settings,
        *,
        identity: ServerIdentity,
        users: UserDirectory,
        calls: CallTable,
        bus: EventBus,
        srv: SrvLookup | None = None,
        meter: Meter | None = None,
        hosts: HostLookup | None = None,
        limiter_listener: LimiterListener | None = None,
        tls_names: Callable[[tuple[str, int], str], None] | None = None,
        peer_names: Callable[[Flow], tuple[str, ...]] | None = None,
    ) -> None:
        self.settings = settings
        self.meter = meter
        self.domain = settings.domain
        self.identity = identity
        self.users = users
        self.calls = calls
        self.bus = bus
        self.srv = srv
        self.hosts = hosts
        # A TLS gateway's certificate must name the gateway as configured (RFC 5922 §7.2),
        # not the address it resolved to: the transport is told which name to check.
        self.tls_names = tls_names or (lambda remote, name: None)
        # [tls] carrier_subjects: carriers trusted only with a client certificate naming them.
        self.carrier_subjects = parse_carrier_subjects(settings.tls.carrier_subjects)
        self.peer_names = peer_names or (lambda flow: ())
        self._subject_networks: list[tuple[AddressSet, str]] = []
        self.dialplan = Dialplan(settings.dialplan)
        self.limiter = CallLimiter(settings.proxy.max_calls_global, limiter_listener)
        self.carriers: list[CarrierRow] = []
        self.carrier_networks = AddressSet()
        self.dids: dict[str, str] = {}  # canonical number → username
        self.gateways = GatewayTable()
        self._outbound: dict[str, OutboundCall] = {}  # by Call-ID
        self._finishing: deque[OutboundCall] = deque()  # finished, in finishing order
        self._reports = ReportThrottle(
            bus.publish,
            interval=settings.security.report_interval,
            max_per_second=settings.security.max_reports_per_second,
            max_keys=settings.security.max_tracked_sources,
        )
        self._refresh_task: asyncio.Task[None] | None = None
        self._refresh_at: float | None = None  # None: counted from the next `expire`
        self._unsubscribe = bus.subscribe(self._on_event)
        self.inbound_calls = 0
        self.outbound_calls = 0
        self.refused = 0
        self._refused_call_ids: dict[str, None] = {}  # insertion-ordered, bounded
        # Inbound INVITEs let through, until their call starts: the number the carrier sent
        # (the Request-URI becomes the user's), for the CDR. Bounded like the refusals.
        self._inbound_numbers: dict[str, str] = {}
        self._carrier_sets: list[tuple[str, AddressSet]] = []

    # -- set-up ---------------------------------------------------------------------------
    def load(self, carriers: Iterable[CarrierRow], dids: Iterable[DidRow]) -> None:
        """Replace carriers and DIDs (from the store). Resolved gateway addresses of carriers
        whose gateway did not change are kept until the next resolution."""
        self.carriers = [carrier for carrier in carriers if carrier.enabled]
        self.carrier_networks = AddressSet(
            address for carrier in self.carriers for address in carrier.addresses
        )
        self._carrier_sets = [
            (carrier.name, AddressSet(carrier.addresses)) for carrier in self.carriers
        ]
        self._subject_networks = [
            (AddressSet(carrier.addresses), self.carrier_subjects[carrier.name])
            for carrier in self.carriers
            if carrier.name in self.carrier_subjects
        ]
        self.dids = {row.number: row.username for row in dids}
        previous = self.gateways
        table = GatewayTable(
            gateway for gateway in map(gateway_of, self.carriers) if gateway is not None
        )
        for gateway in table.names_to_resolve:
            for old in previous.gateways:
                if old.carrier == gateway.carrier and old.host == gateway.host:
                    table.set_resolved(gateway, previous.addresses(old))
        self.gateways = table
        self._name_tls_gateways()

    def _name_tls_gateways(self) -> None:
        """Tell the transport the name each TLS gateway address must prove (RFC 5922 §7.2:
        the host as configured, also when SRV led to the address). Done where the addresses
        are learnt, so the process holding the connections knows them whoever routes."""
        for target in self.gateways.targets():
            if target.transport == "tls":
                self.tls_names((target.ip, target.port), target.gateway.host)

    async def reload(self, carriers: Iterable[CarrierRow], dids: Iterable[DidRow]) -> None:
        self.load(carriers, dids)
        await self.resolve_gateways()

    async def resolve_gateways(self) -> None:
        """Look up every gateway name (concurrently, each bounded by DNS_TIMEOUT)."""
        table = self.gateways
        names = table.names_to_resolve
        answers = await asyncio.gather(
            *(resolve(gateway, srv=self.srv, hosts=self.hosts) for gateway in names)
        )
        for gateway, (addresses, via_srv) in zip(names, answers, strict=True):
            if addresses:
                table.set_resolved(gateway, addresses, via_srv=via_srv)
            elif not table.addresses(gateway):
                self.bus.publish(
                    ServerEvent(
                        f"carrier {gateway.carrier}: gateway {gateway.host} does not resolve",
                        level="warning",
                    )
                )
        self._name_tls_gateways()
        self._refresh_at = None

    def expire(self, now: float) -> None:
        """Housekeeping: hourly windows, coalesced reports, finished calls' state, DNS."""
        self.limiter.expire(now)
        self._reports.flush(now)
        finishing = self._finishing
        while finishing and (finishing[0].finished_at or 0.0) + STATE_GRACE_SECONDS <= now:
            state = finishing.popleft()
            if self._outbound.get(state.call_id) is state:
                del self._outbound[state.call_id]
        if self._refresh_task is None and self.gateways.names_to_resolve:
            if self._refresh_at is None:
                self._refresh_at = now + REFRESH_SECONDS
            elif now >= self._refresh_at:
                self._refresh_at = None
                loop = asyncio.get_running_loop()
                self._refresh_task = loop.create_task(self._refresh(), name="trunks-dns")

    async def _refresh(self) -> None:
        try:
            await self.resolve_gateways()
        finally:
            self._refresh_task = None

    async def close(self) -> None:
        self._unsubscribe()
        task = self._refresh_task
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    # -- inbound (the route) --------------------------------------------------------------
    def is_carrier(self, ip: str) -> bool:
        return bool(self.carrier_networks) and self.carrier_networks.contains(ip)

    def is_carrier_destination(self, host: str) -> bool:
        """A carrier's address range, a gateway's host, or an address a gateway resolved to:
        no user's contact may point there (core/security/destinations.py)."""
        return self.is_carrier(host) or self.gateways.owns(host)

    def trusts(self, flow: Flow) -> bool:
        """A request on `flow` comes from a carrier: its address is a carrier's and, for a
        carrier with a required certificate subject, the flow is TLS and the peer's
        verified certificate names it (RFC 5922 §7.1). Otherwise it is anyone's."""
        ip = flow.remote[0]
        if not self.is_carrier(ip):
            return False
        for networks, subject in self._subject_networks:
            if networks.contains(ip) and subject not in self.peer_names(flow):
                return False
        return True

    def inbound(self, request: Request) -> Refuse | ToUser:
        """An out-of-dialog request from a carrier's address: to a DID's or a user's URI,
        else refused (404)."""
        method = request.method
        if method == "REGISTER":
            return Refuse(403, "Carriers do not register")
        if method not in ROUTABLE_METHODS:
            return Refuse(405, extra=[("Allow", ALLOWED_METHODS)])
        uri = request.uri
        username = self.local_user(uri.user) if isinstance(uri, SipUri | TelUri) else None
        if username is None:
            return Refuse(404)
        if method == "INVITE":
            self.inbound_calls += 1
            numbers = self._inbound_numbers
            numbers[request.call_id or ""] = uri.user or ""
            if len(numbers) > MAX_REFUSED_REMEMBERED:
                del numbers[next(iter(numbers))]
        return ToUser(SipUri(user=username, host=self.domain))

    def local_user(self, user_part: str | None) -> str | None:
        """The user a Request-URI user reaches: a DID's owner, else a username."""
        if not user_part:
            return None
        canonical = self.dialplan.canonical(user_part)
        if canonical is not None:
            owner = self.dids.get(canonical)
            if owner is not None:
                return owner
        return user_part if user_part in self.users else None

    # -- outbound (asked by the proxy) ----------------------------------------------------
    def outbound(
        self, request: Request, caller: str | None, flow: Flow, now: float, *, ours: bool
    ) -> Decision:
        """A request the proxy has no local user for (`ours`: its URI names our domain): a
        DID's user, a gateway to dial, or a refusal (404 ours / 403 elsewhere)."""
        uri = request.uri
        number = self.dialplan.parse(uri.user) if isinstance(uri, SipUri | TelUri) else None
        if number is None:
            if ours:
                return Refuse(404)
            return Refuse(403, "Outbound calls not allowed")
        owner = self.dids.get(number.canonical)
        if owner is not None and owner in self.users:
            return ToUser(SipUri(user=owner, host=self.domain))
        if caller is None:
            # From a carrier: a number we do not own. Never relayed back out (toll fraud).
            return Refuse(404)
        if request.method != "INVITE":
            return Refuse(403, "Only calls go to carriers")
        user = self.users.get(caller)
        if user is None:
            return Refuse(403, "Outbound calls not allowed")
        refusal = check_policy(user, number, self.dialplan) or self._spend_refusal(caller, now)
        if refusal is not None:
            return self._refuse(request, flow, caller, refusal, now, number)
        call_id = request.call_id or ""
        if call_id in self._outbound or call_id in self.calls:
            return Refuse(482, "Call-ID already in use")
        targets = self.gateways.targets(self._can_send_to)
        if not targets:
            return Refuse(503, "No carrier available", [("Retry-After", "60")])
        refusal = self.limiter.admit(user, call_id, now)
        if refusal is not None:
            return self._refuse(request, flow, caller, refusal, now, number)
        state = OutboundCall(
            call_id=call_id,
            caller=caller,
            caller_tag=request.from_tag or "",
            number=number,
            targets=targets,
            arrived=flow,
        )
        self._set_caller_id(state, request, user.caller_id)
        self._outbound[call_id] = state
        self.outbound_calls += 1
        target = state.target
        return Dial(
            self._target_of(state),
            number.carrier_form,
            carrier=target.gateway.carrier,
            gateway=address_text(target.ip, target.port),
            dialled=number.dialled,
            number=number.canonical,
        )

    def not_dialled(self, call_id: str, now: float) -> None:
        """The proxy did not make a call of a `Dial` (503: the call table is full)."""
        self._finished(call_id, now)

    def _spend_refusal(self, caller: str, now: float) -> Refusal | None:
        """403 when the caller, or the PBX in all, is at a spend limit (core/accounting)."""
        breach = self.meter.refusal(caller, now) if self.meter is not None else None
        return None if breach is None else Refusal(403, "Spend limit reached", breach.detail)

    def _refuse(
        self,
        request: Request,
        flow: Flow,
        caller: str,
        refusal: Refusal,
        now: float,
        number: DialledNumber,
    ) -> Refuse:
        """A policy or limit refusal: counted, reported (toll fraud) and recorded as a CDR,
        then answered."""
        self.refused += 1
        self._record_refusal(request, flow, caller, refusal, now, number)
        self._reports.report(
            "toll-fraud",
            flow.ip,
            now,
            f"{refusal.status} {refusal.reason}: {refusal.detail}",
            user=caller,
            user_agent=request.user_agent or "",
        )
        return Refuse(refusal.status, refusal.reason, refusal.extra_headers)

    def _record_refusal(
        self,
        request: Request,
        flow: Flow,
        caller: str,
        refusal: Refusal,
        now: float,
        number: DialledNumber,
    ) -> None:
        """A CDR for the refused attempt, once per Call-ID (not per retransmission)."""
        call_id = request.call_id or ""
        remembered = self._refused_call_ids
        if call_id in remembered:
            return
        remembered[call_id] = None
        if len(remembered) > MAX_REFUSED_REMEMBERED:
            del remembered[next(iter(remembered))]
        call = call_for_invite(request, caller, number.carrier_form, flow, now, "outbound")
        call.dialled = number.dialled
        call.number = number.canonical
        self.calls.refused(call, now, refusal.status, f"{refusal.reason}: {refusal.detail}")

    def calls_past_spend_limits(self, now: float) -> list[tuple[Call, str]]:
        """Every answered outbound call that, priced as if it ended now, takes its user or
        the PBX past a hard spend limit, with the reason for its CDR; the proxy hangs them up
        (BYE to both sides). Each is reported as toll fraud."""
        meter = self.meter
        if meter is None or not meter.ledger.active or not self._outbound:
            return []
        calls = self.calls
        running: list[RunningCall] = []
        for state in self._outbound.values():
            call = calls.get(state.call_id) if state.finished_at is None else None
            if call is not None and call.answered_at is not None and call.carrier:
                running.append(
                    RunningCall(
                        call.call_id, call.caller, call.carrier, call.number, call.answered_at
                    )
                )
        ending: list[tuple[Call, str]] = []
        for call_id, breach in meter.calls_to_end(running, now):
            call = calls.get(call_id)
            if call is None:
                continue
            ending.append((call, f"spend limit: {breach.detail}"))
            self._reports.report(
                "toll-fraud",
                call.source[0],
                now,
                f"call {call_id} ended: {breach.detail}",
                user=call.caller,
            )
        return ending

    def _can_send_to(self, ip: str) -> bool:
        """An address of a family we have a listener for (no IPv6 gateway from IPv4 only)."""
        v6 = ":" in ip
        return any((":" in address.host) == v6 for address in self.identity.listen)

    def _target_of(self, state: OutboundCall) -> Target:
        """Where the current attempt goes: `sip:+NUMBER@gateway;user=phone` (§19.1.1)."""
        target = state.target
        transport = f";transport={target.transport}" if target.transport != "udp" else ""
        uri = f"sip:{state.number.carrier_form}@{target.uri_hostport};user=phone{transport}"
        local = local_address(self.identity, target.transport, state.arrived)
        return Target(uri, Flow(target.transport, (target.ip, target.port), local))

    def _set_caller_id(self, state: OutboundCall, request: Request, caller_id: str) -> None:
        """The From user and P-Asserted-Identity become the user's outbound number."""
        if not caller_id:
            return
        try:
            from_addr = request.from_addr
        except SipParseError:
            return
        if from_addr is None:
            return
        uri = from_addr.uri
        new_uri = (
            uri.replace(user=caller_id)
            if isinstance(uri, SipUri)
            else SipUri(user=caller_id, host=self.domain)
        )
        carrier_from = NameAddr(new_uri, from_addr.display_name, dict(from_addr.params))
        state.from_value = str(carrier_from)
        state.identity_value = f"<{SipUri(user=caller_id, host=self.domain)}>"

    # -- attempts under way (asked by the proxy) ------------------------------------------
    def reroute(
        self, branch: Branch, status: int, response: Response | None, now: float
    ) -> Target | None:
        """An attempt of an outbound call failed: answer the gateway's challenge, or try the
        next gateway; None lets the answer go to the caller."""
        request = branch.context.request
        if request.method != "INVITE" or request.to_tag is not None:
            return None
        state = self._outbound.get(request.call_id or "")
        if state is None or state.finished_at is not None or state.caller_tag != request.from_tag:
            return None
        gateway = state.target.gateway
        if status in (401, 407):
            if response is not None and not state.challenged:
                authorization = gateway_authorization(gateway, branch.request, response, status)
                if authorization is not None:
                    state.challenged = True
                    state.authorization = authorization
                    state.cseq_shift += 1  # §22.2: the retry is a new transaction, CSeq + 1
                    return Target(str(branch.request.uri), branch.flow)
            # A challenge we cannot answer (no credentials for this carrier, or ours were
            # refused): the caller could not answer it either, so the next carrier.
        elif not fails_over(status):
            return None
        if state.attempt + 1 >= len(state.targets):
            return None
        failed = state.target
        state.attempt += 1
        state.challenged = False
        state.cseq_shift += 1
        following = state.target
        call = self.calls.get(state.call_id)
        if call is not None:  # the CDR names the carrier and gateway that answered
            call.carrier = following.gateway.carrier
            call.gateway = address_text(following.ip, following.port)
        self.bus.publish(
            ServerEvent(
                f"outbound call {state.call_id}: {failed.gateway.carrier} "
                f"({failed.ip}:{failed.port}) answered {status}; trying "
                f"{following.gateway.carrier} ({following.ip}:{following.port})",
                level="warning",
                at=now,
            )
        )
        return self._target_of(state)

    def rewrite(self, request: Request) -> Rewrite | None:
        """How a copy of the caller's `request` changes on its way towards a gateway: its
        CSeq raised by the call's shift, the caller ID, and the carrier credentials once.
        None: not a request of an outbound call's caller."""
        if not self._outbound:
            return None
        state = self._outbound.get(request.call_id or "")
        if state is None or request.from_tag != state.caller_tag:
            return None
        initial = request.method == "INVITE" and request.to_tag is None
        if not initial:
            return Rewrite(state.cseq_shift, state.from_value, False)
        authorization = state.authorization
        state.authorization = None  # one INVITE copy carries it
        return Rewrite(
            state.cseq_shift, state.from_value, True, state.identity_value, authorization
        )

    # -- call ends --------------------------------------------------------------------------
    def _on_event(self, event: Event) -> None:
        if type(event) is CallEvent and event.state in (ENDED, FAILED):  # type: ignore[attr-defined]
            self._finished(event.call_id, event.at)  # type: ignore[attr-defined]
        elif type(event) is CallEvent and event.state == TRYING and self._inbound_numbers:  # type: ignore[attr-defined]
            self._stamp_inbound(event.call_id)  # type: ignore[attr-defined]

    def _stamp_inbound(self, call_id: str) -> None:
        """An inbound call just started: its CDR names the carrier it came from and the
        number the carrier dialled, as sent and in canonical form."""
        dialled = self._inbound_numbers.pop(call_id, None)
        call = self.calls.get(call_id)
        if dialled is None or call is None or call.direction != "inbound":
            return
        ip = call.source[0]
        call.carrier = next((name for name, nets in self._carrier_sets if nets.contains(ip)), "")
        call.dialled = dialled
        call.number = self.dialplan.canonical(dialled) or ""

    def _finished(self, call_id: str, now: float) -> None:
        self.limiter.release(call_id)
        state = self._outbound.get(call_id)
        if state is not None and state.finished_at is None:
            state.finished_at = now
            self._finishing.append(state)

    def outbound_state(self, call_id: str) -> OutboundCall | None:
        """The outbound state of a call (tests, the console)."""
        return self._outbound.get(call_id)
