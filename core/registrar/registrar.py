"""The registrar (RFC 3261 §10.3): REGISTER in, bindings changed, a response out.

`register()` runs on the hot path after digest authentication, synchronously, and does no
I/O: it reads the request, decides, and either changes nothing (any error: the update is
atomic, §10.3 step 7) or applies every change through the location service and reports it on
the event bus. Problems leave as `RegisterRejected`, which carries the status, reason and
headers of the answer (h11's "errors carry the answer").

NAT is judged the way Kamailio's `nat_uac_test` does it, on what the phone claims (the top
Via's sent-by, the Contact) against what the packet shows (the flow's source address).
"""

from __future__ import annotations

import re
import sys
import time
from collections.abc import Iterable
from dataclasses import dataclass
from email.utils import formatdate
from typing import Final

from core.events import (
    ContactRefreshed,
    ContactRegistered,
    ContactUnregistered,
    EventBus,
)
from core.net.addresses import is_private, parse_ip
from core.net.flow import Flow
from core.registrar.location import Binding, BindingKey, LocationService, contact_key, rounded
from core.security.destinations import Destinations
from core.security.reports import SecurityReport, publish_each
from core.settings import RegistrarSettings
from core.sip.address import NameAddr, parse_name_addr
from core.sip.errors import SipParseError
from core.sip.fields import Via
from core.sip.headers import check_line
from core.sip.message import Request, Response, make_response, response_bytes
from core.sip.uri import SipUri

SUPPORTED_EXTENSIONS: Final = frozenset({"path", "outbound"})
MAX_EXPIRES = 2**32 - 1  # RFC 3261 §20.19
MAX_REG_ID = 2**31 - 1  # RFC 5626 §4.2.1
_REQUIRE_OUTBOUND: Final = ("require", "Require", "outbound")
_QVALUE = re.compile(r"^(0(\.\d{0,3})?|1(\.0{0,3})?)$")  # RFC 3261 §25.1 qvalue


class RegisterRejected(Exception):
    """A REGISTER the registrar refuses, with the answer to send."""

    def __init__(self, status: int, reason: str, headers: list[tuple[str, str]] | None = None):
        super().__init__(f"{status} {reason}")
        self.status = status
        self.reason = reason
        self.headers = headers or []


def detect_nat(via: Via | None, contact: SipUri, flow: Flow) -> bool:
    """True when the phone sits behind NAT, judged like Kamailio's nat_uac_test.

    - the top Via's sent-by address differs from the packet's source address (test 2), or over
      UDP its port differs from the source port (test 16). The route may already have stamped
      `received`/`rport` on that Via (RFC 3581 §4); those describe the packet, not the phone's
      claim, so only the sent-by is compared. Over TCP the source port is an ephemeral one and
      says nothing, so only the address counts;
    - the Contact names a private or unroutable address while the packet came from a public
      one (test 1, sharpened so that a phone on the server's own LAN is not "behind NAT").
    A sent-by or Contact written as a host name cannot match an address: the phone is treated
    as NATed, which sends to the source, where the REGISTER came from anyway.
    """
    source_ip, source_port = flow.remote
    if via is not None:
        if not _same_address(via.host, source_ip):
            return True
        if flow.transport == "udp" and (via.port or _default_port(via.transport)) != source_port:
            return True
    return is_private(contact.host) and not is_private(source_ip)


def _same_address(host: str, ip: str) -> bool:
    if host == ip:
        return True  # the common case (no NAT), without parsing either address twice
    try:
        return parse_ip(host) == parse_ip(ip)
    except ValueError:
        return host.lower() == ip.lower()


def _default_port(transport: str) -> int:
    return 5061 if transport.upper() == "TLS" else 5060


@dataclass(slots=True, init=False)
class ContactRequest:
    """One Contact of a REGISTER, checked: what the phone asks to bind, and for how long."""

    uri: SipUri
    expires: int  # granted: 0 (remove) or between min_expires and max_expires
    q: float
    instance_id: str | None
    reg_id: int | None  # only when the binding is an RFC 5626 flow (instance + outbound)

    # Written-out __init__: a frozen dataclass's generated one costs six times as much.
    def __init__(
        self, uri: SipUri, expires: int, q: float, instance_id: str | None, reg_id: int | None
    ) -> None:
        self.uri = uri
        self.expires = expires
        self.q = q
        self.instance_id = instance_id
        self.reg_id = reg_id


@dataclass(slots=True, init=False)
class _Plan:
    """What one REGISTER will change, computed in full before anything changes."""

    removals: list[Binding]
    saves: list[tuple[Binding, Binding | None]]  # (new binding, the one it replaces)
    # Plain refreshes, changed in place: (binding, its new expiry on the caller's clock).
    refreshes: list[tuple[Binding, float]]
    cseq: int  # the REGISTER's, for the refreshes
    outbound: bool
    supported: set[str] | None  # the Supported option tags, once read

    # Written-out __init__: the generated one, with a default_factory, cost 3k instructions.
    def __init__(
        self,
        removals: list[Binding],
        saves: list[tuple[Binding, Binding | None]],
        cseq: int = 0,
        supported: set[str] | None = None,
    ) -> None:
        self.removals = removals
        self.saves = saves
        self.refreshes = []
        self.cseq = cseq
        self.outbound = False
        self.supported = supported


class Registrar:
    """RFC 3261 §10.3 registrar over a `LocationService`, with RFC 3327 Path and RFC 5626
    outbound."""

    def __init__(
        self,
        settings: RegistrarSettings,
        location: LocationService,
        bus: EventBus,
        *,
        destinations: Destinations | None = None,
        security_report: SecurityReport | None = None,
    ) -> None:
        self.settings = settings
        self.location = location
        self.bus = bus
        # Contacts that must be refused (our own sockets, carriers).
        self.destinations = destinations
        # Refusals reported through the security layer's throttle.
        self.security_report: SecurityReport = security_report or publish_each(bus)
        # The plain refresh of one unchanged binding (most REGISTERs) takes `_refresh`, which
        # answers as the general path would; False sends everything through the general path
        # (the equivalence tests compare the two). `fast_refreshes` counts the ones it took.
        self.fast_refresh = True
        self.fast_refreshes = 0
        # The Date header's text and the whole second it shows (see `_date`).
        self._date_second = -1
        self._date_text = ""

    def expire(self, now: float) -> list[Binding]:
        """Drop expired bindings (ContactExpired events); call about once a second."""
        return self.location.expire(now)

    def register(
        self,
        request: Request,
        username: str,
        flow: Flow,
        now: float,
        *,
        wall: float | None = None,
        to_tag: str | None = None,
    ) -> Response:
        """Process a REGISTER that authenticated as `username`; returns the response.

        `now` is the caller's clock (expiry runs on it); `wall` is the wall-clock time for the
        Date header and the console, read from the system when not given. The response's
        To-tag is `to_tag` (the route's own, §8.2.6.2), or none when not given.
        """
        wall = time.time() if wall is None else wall
        refreshed = self._plain_refresh(request, username, flow, now, wall)
        if refreshed is not None:
            return self._answer(request, username, now, wall, False, refreshed.outbound, to_tag)
        return self._general(request, username, flow, now, wall, to_tag)

    def register_answer(
        self,
        request: Request,
        username: str,
        flow: Flow,
        now: float,
        *,
        wall: float | None = None,
        to_tag: str | None = None,
    ) -> tuple[int, bytes]:
        """`register`, answered as (status, the response's bytes): what the route sends.

        A plain refresh's 200 is written straight as bytes (`_answer_bytes`), without
        building the Response that `register` returns; the bytes are the same.
        """
        wall = time.time() if wall is None else wall
        refreshed = self._plain_refresh(request, username, flow, now, wall)
        if refreshed is not None:
            return 200, self._answer_bytes(request, username, now, wall, refreshed.outbound, to_tag)
        response = self._general(request, username, flow, now, wall, to_tag)
        return response.status, response.to_bytes()

    def _plain_refresh(
        self, request: Request, username: str, flow: Flow, now: float, wall: float
    ) -> Binding | None:
        """Both entry points' first step: expired contacts dropped (the limits count only live
        ones), then the short path when on; the refreshed binding, or None for `_general`."""
        self.location.expire(now)
        if not self.fast_refresh:
            return None
        refreshed = self._refresh(request, username, flow, now, wall)
        if refreshed is not None:
            self.fast_refreshes += 1
        return refreshed

    def _general(
        self,
        request: Request,
        username: str,
        flow: Flow,
        now: float,
        wall: float,
        to_tag: str | None,
    ) -> Response:
        """Every REGISTER the plain refresh does not take: plan, commit, answer."""
        try:
            plan = self._plan(request, username, flow, now, wall)
        except RegisterRejected as rejection:
            return make_response(
                request, rejection.status, rejection.reason, to_tag=to_tag, extra=rejection.headers
            )
        self._commit(plan, flow, now, wall)
        return self._ok(request, username, now, wall, plan, to_tag)

    # -- the plain refresh --------------------------------------------------------------
    def _refresh(
        self,
        request: Request,
        username: str,
        flow: Flow,
        now: float,
        wall: float,
    ) -> Binding | None:
        """A phone re-registering its one Contact with nothing changed but the CSeq (RFC 3261
        §10.2.4, every few minutes per phone): the binding's times move in place and the 200
        is written, as `_plan`, `_commit` and `_ok` would do it, without their general
        machinery (no plan, no dict of wanted contacts, no Supported or Path reading).

        Returns None, having changed nothing, for anything else: several Contacts, a
        wildcard or a query, a removal, an RFC 5626 flow, a Require or Path header, a new
        binding or a changed one, and every request the general path refuses (which then
        refuses it, with its own answer and report). Only what the general path would also
        conclude is taken here: the conditions are `_plan`'s, read in the same way.
        Returns the refreshed binding; the caller writes the 200 (`_answer` or
        `_answer_bytes`).
        """
        try:
            call_id = request.call_id
            cseq = request.cseq
            to_addr = request.to_addr
            contacts = request.contacts
            header_expires = request.expires
            top_via = request.top_via
        except SipParseError:
            return None
        if not call_id or cseq is None or to_addr is None or not contacts or len(contacts) != 1:
            return None
        to_uri = to_addr.uri
        if not isinstance(to_uri, SipUri) or to_uri.user != username:
            return None
        headers = request.headers
        if "require" in headers or "path" in headers:
            return None
        try:
            contact = self._read_contact(contacts[0], header_expires)
        except RegisterRejected:
            return None
        if contact.expires == 0 or contact.reg_id is not None:
            # A removal, or a reg-id: a flow (the first-hop check, Require: outbound) or,
            # when the UA did not say Supported: outbound, a reg-id ignored.
            return None
        existing = self.location.get(
            username, contact_key(contact.uri, contact.instance_id, contact.reg_id)
        )
        cseq_number = cseq.number
        if existing is None or (existing.call_id == call_id and cseq_number <= existing.cseq):
            return None
        if not _unchanged(
            existing,
            contact,
            call_id,
            flow,
            request.user_agent or "",
            (),
            detect_nat(top_via, contact.uri, flow),
        ):
            return None
        destinations = self.destinations
        if (
            destinations is not None
            and destinations.contact_refusal(contact.uri, flow.remote[0]) is not None
        ):
            return None  # refused (and reported) by the general path
        expires_at = now + contact.expires
        self.location.refresh(existing, expires_at, now, wall, cseq_number)
        self.bus.publish(
            ContactRefreshed(
                existing.user, existing.contact, flow.remote, rounded(expires_at - now)
            )
        )
        return existing

    # -- deciding -------------------------------------------------------------------------
    def _plan(self, request: Request, username: str, flow: Flow, now: float, wall: float) -> _Plan:
        try:
            call_id = request.call_id
            cseq = request.cseq
            to_addr = request.to_addr
            contacts = request.contacts
            header_expires = request.expires
            top_via = request.top_via
        except SipParseError as error:
            raise RegisterRejected(error.status, error.reason) from None
        if not call_id or cseq is None or to_addr is None:
            raise RegisterRejected(400, "Missing Call-ID, CSeq or To")
        self._check_require(request)
        # §10.3 step 4: only the owner changes an address-of-record's bindings.
        if not isinstance(to_addr.uri, SipUri) or to_addr.uri.user != username:
            raise RegisterRejected(403, "To Does Not Match Authenticated User")
        if contacts is None:
            # §10.3 step 6: `Contact: *` removes everything, but only with Expires: 0.
            if header_expires != 0:
                raise RegisterRejected(400, "Contact * Requires Expires: 0")
            current = self.location.bindings_of(username)
            for binding in current:
                self._check_order(binding, call_id, cseq.number)
            return _Plan(removals=current, saves=[])
        if not contacts:
            return _Plan(removals=[], saves=[])  # a query (§10.2.3)

        supported = _option_tags(request, "supported")
        path = self._read_path(request)
        requested = self._read_contacts(contacts, header_expires, "outbound" in supported)
        if any(contact.reg_id is not None for contact in requested):
            self._check_outbound_first_hop(request, path)

        wanted: dict[BindingKey, ContactRequest] = {}
        for contact in requested:  # a contact listed twice: the last one counts
            wanted[contact_key(contact.uri, contact.instance_id, contact.reg_id)] = contact
        self._check_destinations(wanted.values(), username, flow, now)
        # Phones of one model send one text: held once, not once per binding.
        user_agent = sys.intern(request.user_agent or "")
        plan = _Plan(removals=[], saves=[], cseq=cseq.number, supported=supported)
        for key, contact in wanted.items():
            existing = self.location.get(username, key)
            if existing is not None:
                self._check_order(existing, call_id, cseq.number)
            if contact.expires == 0:
                if existing is not None:
                    plan.removals.append(existing)
                continue
            behind_nat = detect_nat(top_via, contact.uri, flow)
            if existing is not None and _unchanged(
                existing, contact, call_id, flow, user_agent, path, behind_nat
            ):
                plan.refreshes.append((existing, now + contact.expires))
                plan.outbound = plan.outbound or existing.outbound
                continue
            binding = Binding(
                user=username,
                contact=str(contact.uri),
                uri=contact.uri,
                flow=flow,
                expires_at=now + contact.expires,
                updated_at=now,
                registered_at=existing.registered_at if existing is not None else wall,
                refreshed_at=wall,
                q=contact.q,
                call_id=call_id,
                cseq=cseq.number,
                user_agent=user_agent,
                behind_nat=behind_nat,
                instance_id=contact.instance_id,
                reg_id=contact.reg_id,
                path=path,
                last_pong=existing.last_pong if existing is not None else None,
            )
            plan.saves.append((binding, existing))
            plan.outbound = plan.outbound or binding.outbound
        self._check_limits(username, plan)
        return plan

    def _check_destinations(
        self, contacts: Iterable[ContactRequest], username: str, flow: Flow, now: float
    ) -> None:
        """A Contact naming one of our own sockets or a carrier would turn calls to this
        user into loops or into carrier calls no policy saw (core/security/destinations.py)."""
        destinations = self.destinations
        if destinations is None:
            return
        for contact in contacts:
            if contact.expires == 0:
                continue
            why = destinations.contact_refusal(contact.uri, flow.remote[0])
            if why is not None:
                self.security_report(
                    "contact-refused",
                    flow.remote[0],
                    now,
                    f"Contact {contact.uri} {why}",
                    user=username,
                )
                raise RegisterRejected(403, "Contact Not Allowed")

    def _check_require(self, request: Request) -> None:
        """§10.3 step 2 / §8.2.2.3: an extension we don't know must be refused with 420."""
        if "require" not in request.headers:
            return
        unsupported = sorted(_option_tags(request, "require") - SUPPORTED_EXTENSIONS)
        if unsupported:
            raise RegisterRejected(420, "Bad Extension", [("Unsupported", ", ".join(unsupported))])

    @staticmethod
    def _check_order(binding: Binding, call_id: str, cseq: int) -> None:
        """§10.3 step 7: a request from the same Call-ID must carry a higher CSeq, else it is
        an old or reordered REGISTER and the whole update fails. The RFC names no code for
        this failure; 500 is what it uses for a failed update (a 400 would tell the phone its
        request is malformed, which it is not)."""
        if binding.call_id == call_id and cseq <= binding.cseq:
            raise RegisterRejected(500, "Out of Order CSeq")

    def _read_contacts(
        self, contacts: list[NameAddr], header_expires: int | None, outbound_supported: bool
    ) -> list[ContactRequest]:
        """Each Contact's URI, expiry (§10.3 step 6: its `expires` parameter, else the Expires
        header, else our default), q, and RFC 5626 instance / reg-id."""
        requested: list[ContactRequest] = []
        flows = 0
        for address in contacts:
            contact = self._read_contact(address, header_expires)
            if contact.reg_id is not None:
                flows += 1
                if not outbound_supported:
                    contact.reg_id = None  # RFC 5626 §6: outbound only when the UA supports it
            requested.append(contact)
        if flows > 1:
            # RFC 5626 §4.2: one flow per REGISTER; several reg-ids cannot be told apart.
            raise RegisterRejected(400, "Multiple reg-id Contacts")
        return requested

    def _read_contact(self, address: NameAddr, header_expires: int | None) -> ContactRequest:
        """One Contact, as `_read_contacts` reads each (and `_refresh` the only one); its
        reg-id is the one written, whether or not the UA supports outbound."""
        registrar = self.settings
        uri = address.uri
        if not isinstance(uri, SipUri):
            raise RegisterRejected(400, "Contact Must Be a SIP URI")
        params = address.params
        if params:
            expires = _contact_expires(address, header_expires, registrar.default_expires)
        else:
            expires = registrar.default_expires if header_expires is None else header_expires
        if 0 < expires < registrar.min_expires:
            raise RegisterRejected(
                423, "Interval Too Brief", [("Min-Expires", str(registrar.min_expires))]
            )
        expires = min(expires, registrar.max_expires)
        if not params:
            # What phones mostly send (`<sip:...>`, the time in the Expires header): each
            # look-up below would find nothing.
            return ContactRequest(uri, expires, 1.0, None, None)
        instance_id = _instance_id(address)
        reg_id = _reg_id(address) if instance_id is not None else None
        return ContactRequest(uri, expires, _q(address), instance_id, reg_id)

    @staticmethod
    def _read_path(request: Request) -> tuple[str, ...]:
        """RFC 3327 §5.3: keep the Path, to reach the contact through the proxies that
        relayed its REGISTER (nearest to us first). It is kept even when the UA did not say
        `Supported: path`: the proxies on the way still need it; only the echo in the 200
        depends on the UA's support."""
        values = request.headers.values("path")
        if not values:
            return ()
        for value in values:
            try:
                parse_name_addr(value)
            except SipParseError:
                raise RegisterRejected(400, "Bad Path") from None
        return tuple(values)

    @staticmethod
    def _check_outbound_first_hop(request: Request, path: tuple[str, ...]) -> None:
        """RFC 5626 §6: a flow registered through a proxy needs that edge proxy to support
        outbound (an `ob` parameter on its Path URI, the last one: each proxy adds its own on
        top), or requests could not use the flow. Several Vias and no Path means a proxy that
        does not even do Path."""
        if path:
            first_hop = parse_name_addr(path[-1]).uri
            if not isinstance(first_hop, SipUri) or not first_hop.has_param("ob"):
                raise RegisterRejected(439, "First Hop Lacks Outbound Support")
        elif len(request.vias) > 1:
            raise RegisterRejected(439, "First Hop Lacks Outbound Support")

    def _check_limits(self, username: str, plan: _Plan) -> None:
        """Per-user and global bounds, on the count after the whole request is applied.

        A user already above the limit (the limit was lowered) may still refresh or remove;
        only growth beyond it is refused.
        """
        if not plan.saves and not plan.removals:
            return  # refreshes alone: the same bindings, no more of them
        current = self.location.bindings_of(username)  # unchanged while planning
        removed = {binding.key for binding in plan.removals}
        current_keys = {binding.key for binding in current}
        final = (current_keys - removed) | {binding.key for binding, _ in plan.saves}
        final.update(binding.key for binding, _ in plan.refreshes)
        limit = self.settings.max_contacts_per_user
        if len(final) > limit and len(final) > len(current_keys):
            raise RegisterRejected(403, f"Too Many Contacts (limit {limit})")
        added = sum(1 for _, existing in plan.saves if existing is None)
        if added - len(plan.removals) > self.location.room:
            raise RegisterRejected(503, "Location Table Full", [("Retry-After", "60")])

    # -- changing -------------------------------------------------------------------------
    def _commit(self, plan: _Plan, flow: Flow, now: float, wall: float) -> None:
        location = self.location
        bus = self.bus
        source = flow.remote
        for binding in plan.removals:
            location.unregister(binding, reason="unregistered", source=source)
        for binding, expires_at in plan.refreshes:
            location.refresh(binding, expires_at, now, wall, plan.cseq)
            expires = rounded(expires_at - now)
            bus.publish(ContactRefreshed(binding.user, binding.contact, source, expires))
        for binding, existing in plan.saves:
            location.save(binding)
            expires = rounded(binding.expires_at - binding.updated_at)
            if existing is not None and existing.contact == binding.contact:
                bus.publish(ContactRefreshed(binding.user, binding.contact, source, expires))
                continue
            if existing is not None:
                # RFC 5626 §6: the same instance (and flow) now has another Contact URI.
                bus.publish(
                    ContactUnregistered(existing.user, existing.contact, source, "replaced")
                )
            bus.publish(
                ContactRegistered(
                    binding.user,
                    binding.contact,
                    source,
                    flow.transport,
                    expires,
                    user_agent=binding.user_agent,
                    behind_nat=binding.behind_nat,
                )
            )

    def _ok(
        self,
        request: Request,
        username: str,
        now: float,
        wall: float,
        plan: _Plan,
        to_tag: str | None,
    ) -> Response:
        """§10.3 step 8: 200 listing every current binding with its remaining time."""
        supported = plan.supported
        if supported is None:
            supported = _option_tags(request, "supported")
        return self._answer(
            request, username, now, wall, "path" in supported, plan.outbound, to_tag
        )

    def _answer(
        self,
        request: Request,
        username: str,
        now: float,
        wall: float,
        echo_path: bool,
        outbound: bool,
        to_tag: str | None,
    ) -> Response:
        """The 200 of `_ok`: every current binding, the Path when `echo_path` (the UA
        supports it, RFC 3327 §5.3), Require: outbound for a flow, and the Date."""
        # Keyed lines, checked by _contact_value (a stored Contact is text from a header or
        # from the store).
        lines: list[tuple[str, str, str]] = []
        for binding in self.location.lookup(username, now):
            lines.append(("contact", "Contact", _contact_value(binding, now)))
        if echo_path:
            lines.extend(("path", "Path", value) for value in request.headers.values("path"))
        if outbound:
            lines.append(_REQUIRE_OUTBOUND)  # RFC 5626 §6
        lines.append(("date", "Date", self._date(wall)))
        return make_response(request, 200, to_tag=to_tag, keyed=lines)

    def _answer_bytes(
        self,
        request: Request,
        username: str,
        now: float,
        wall: float,
        outbound: bool,
        to_tag: str | None,
    ) -> bytes:
        """`_answer(..., echo_path=False, ...).to_bytes()` (a refresh never echoes a Path:
        it has none) written straight as bytes: the same lines in the same order, then
        Content-Length as `to_bytes` states it, after the copied headers of
        `response_bytes`."""
        parts: list[str] = []
        for binding in self.location.lookup(username, now):
            parts.append(f"Contact: {_contact_value(binding, now)}\r\n")
        if outbound:
            parts.append("Require: outbound\r\n")  # RFC 5626 §6, as _REQUIRE_OUTBOUND
        parts.append(f"Date: {self._date(wall)}\r\nContent-Length: 0\r\n\r\n")
        return response_bytes(request, 200, None, to_tag, "".join(parts))

    def _date(self, wall: float) -> str:
        """The Date header value (RFC 3261 §20.17) for `wall`, formatted once per second.

        formatdate shows whole seconds, so every REGISTER answered within one second carries
        the same text. A time within a millisecond of the next second is formatted directly,
        since the microsecond rounding inside formatdate could carry it over. Kept on the
        registrar rather than in a module global: compiled, a global is a dict look-up.
        """
        second = int(wall)
        if wall < 0 or wall - second >= 0.999:
            return formatdate(wall, usegmt=True)
        if self._date_second != second:
            self._date_text = formatdate(second, usegmt=True)
            self._date_second = second
        return self._date_text


def _unchanged(
    existing: Binding,
    contact: ContactRequest,
    call_id: str,
    flow: Flow,
    user_agent: str,
    path: tuple[str, ...],
    behind_nat: bool,
) -> bool:
    """True when a REGISTER would save `existing` again with only its times and CSeq moved:
    the same Contact as written, from the same flow, with the same Call-ID (the CSeq order
    was checked already), user agent, Path, q, instance, flow id and NAT verdict. Such a
    refresh changes the binding in place (LocationService.refresh)."""
    return (
        existing.call_id == call_id
        and existing.contact == str(contact.uri)
        and _same_flow(existing.flow, flow)
        and existing.user_agent == user_agent
        and existing.q == contact.q
        and existing.behind_nat == behind_nat
        and existing.instance_id == contact.instance_id
        and existing.reg_id == contact.reg_id
        and existing.path == path
    )


def _same_flow(held: Flow, flow: Flow) -> bool:
    """`held == flow`, field by field: the dataclass's generated __eq__ is interpreted code
    that builds two tuples (most of `_unchanged`'s cost, measured compiled)."""
    return held is flow or (
        held.remote == flow.remote
        and held.transport == flow.transport
        and held.local == flow.local
        and held.connection_id == flow.connection_id
    )


def _option_tags(request: Request, header: str) -> set[str]:
    return {value.lower() for value in request.headers.values(header)}


def _contact_expires(address: NameAddr, header_expires: int | None, default: int) -> int:
    value = address.param("expires")
    if value is not None:
        if not value.isdigit():
            raise RegisterRejected(400, "Bad Contact expires")
        return min(int(value), MAX_EXPIRES)
    return default if header_expires is None else header_expires


def _q(address: NameAddr) -> float:
    value = address.param("q")
    if value is None:
        return 1.0
    if not _QVALUE.match(value):
        raise RegisterRejected(400, "Bad Contact q")
    return float(value)


def _instance_id(address: NameAddr) -> str | None:
    value = address.param("+sip.instance")
    if value is None:
        return None
    value = value.strip()
    if len(value) >= 2 and value[0] == value[-1] == '"':
        value = value[1:-1]
    if not value:
        raise RegisterRejected(400, "Bad +sip.instance")
    return value


def _reg_id(address: NameAddr) -> int | None:
    value = address.param("reg-id")
    if value is None:
        return None
    if not value.isdigit() or not 1 <= int(value) <= MAX_REG_ID:
        raise RegisterRejected(400, "Bad reg-id")
    return int(value)


def _contact_value(binding: Binding, now: float) -> str:
    """A Contact line of the 200, checked to be one line (`check_line`: only the stored
    contact and instance could break it; a parsed header never does)."""
    value = f"<{binding.contact}>;expires={binding.remaining(now)}"
    if binding.q != 1.0:
        value += f";q={binding.q:g}"
    if binding.instance_id is not None:
        value += f';+sip.instance="{binding.instance_id}"'
    if binding.reg_id is not None:
        value += f";reg-id={binding.reg_id}"
    if "\n" in value or "\r" in value:
        check_line("Contact", value)  # raises, as for any header text that is not one line
    return value
