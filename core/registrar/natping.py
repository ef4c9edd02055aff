"""NAT keep-alives: an OPTIONS now and then to every contact registered from behind NAT.

A NAT forgets a UDP mapping after 30 s to a few minutes of silence; after that an INVITE
sent to the registered source address is dropped at the NAT and the phone never rings.
Pinging the contact through the mapping keeps it open, and the answers (any answer will do:
a 200, a 405, a 481 all prove the path works) tell us which contacts are really there, as
Kamailio's nathelper does with `sipping_from`.

Sans-I/O like the rest of the core: `due(now)` hands out the OPTIONS to send, the pipeline
sends each via `binding.target()` and routes responses here through `on_response`;
`on_timeout(now)` counts the pings nobody answered. After
`settings.registrar.nat_ping_failures` failures in a row the contact is flagged unreachable
(ContactUnreachable on the bus), and stays so until it answers a ping or registers again.

A REGISTER replaces the binding, which restarts its ping schedule, so a phone that
re-registers more often than the ping interval is never pinged: its own REGISTERs keep the
mapping open and prove it is alive.
"""

from __future__ import annotations

import heapq
import itertools
import secrets
from collections import OrderedDict
from dataclasses import dataclass

from core.cluster.affinity import MAIN_CALL_ID_PREFIX
from core.events import ContactUnreachable, EventBus
from core.registrar.location import Binding, LocationService
from core.settings import RegistrarSettings
from core.sip.address import NameAddr
from core.sip.headers import Headers
from core.sip.message import Request, Response, new_branch, new_tag
from core.sip.uri import SipUri, format_host

ANSWER_TIMEOUT = 32.0  # 64*T1: how long a non-INVITE transaction waits (RFC 3261 §17.1.2.2)
MAX_OUTSTANDING = 10_000  # pings in flight at once; the rest wait for the next call
PING_USER = "ping"
_UNSPECIFIED = {"0.0.0.0", "::", ""}


@dataclass(frozen=True, slots=True)
class _Ping:
    binding: Binding
    branch: str
    sent_at: float


class NatKeepalive:
    """Schedules OPTIONS pings for NATed bindings and keeps their reachability.

    A `BindingSink`: it schedules from what it hears, so add it to the location's `sinks` in
    the one process that pings (core/assembly.py)."""

    def __init__(
        self,
        settings: RegistrarSettings,
        location: LocationService,
        bus: EventBus,
        domain: str,
        *,
        user_agent: str = "pbxtui",
        answer_timeout: float | None = None,
        max_outstanding: int = MAX_OUTSTANDING,
    ) -> None:
        self.domain = domain  # the From of every ping: sip:ping@<domain>
        self.user_agent = user_agent
        self.interval = settings.nat_ping_interval
        self.failure_limit = max(1, settings.nat_ping_failures)
        # A ping is settled before the next one to the same contact is due.
        self.answer_timeout = (
            min(ANSWER_TIMEOUT, self.interval) if answer_timeout is None else answer_timeout
        )
        self.max_outstanding = max_outstanding
        self.location = location
        self.bus = bus
        self.sent = 0
        self.answered = 0
        self.unanswered = 0
        # (next ping time, tie-breaker, binding); an entry is stale once the binding was
        # replaced, removed or rescheduled, and is skipped when it comes up.
        self._schedule: list[tuple[float, int, Binding]] = []
        self._sequence = itertools.count()
        # Call-ID → ping, in the order sent (which is also the order they time out).
        self._outstanding: OrderedDict[str, _Ping] = OrderedDict()
        self._cseq = 0
        self._restores_seen = -1

    @property
    def outstanding(self) -> int:
        return len(self._outstanding)

    # -- BindingSink ----------------------------------------------------------------------
    def binding_saved(self, binding: Binding) -> None:
        if binding.behind_nat:
            self._schedule_ping(binding, binding.updated_at + self.interval)
            self._compact()

    def binding_removed(self, binding: Binding) -> None:
        """Nothing to do: its schedule entry and any ping in flight are dropped when they
        come up, as the binding is no longer current."""

    # -- the sans-I/O interface -----------------------------------------------------------
    def due(self, now: float) -> list[tuple[Binding, Request]]:
        """The pings to send now: (binding, OPTIONS); send each via `binding.target()`.

        Settles timed-out pings first, so a contact whose last ping went unanswered is
        counted before it is pinged again.
        """
        self.on_timeout(now)
        if self._restores_seen != self.location.restores:
            self._schedule_restored()
        pings: list[tuple[Binding, Request]] = []
        schedule = self._schedule
        while schedule and schedule[0][0] <= now and len(self._outstanding) < self.max_outstanding:
            at, _, binding = heapq.heappop(schedule)
            if binding.next_ping_at != at or not self._wanted(binding):
                continue
            request, branch = self._options(binding)
            self._outstanding[str(request.call_id)] = _Ping(binding, branch, now)
            self._schedule_ping(binding, now + self.interval)
            pings.append((binding, request))
        self.sent += len(pings)
        self._compact()
        return pings

    def on_response(self, response: Response, now: float) -> bool:
        """True when `response` answers one of our pings (it is then consumed here).

        Any status proves the contact is there: failures reset, the flag clears.
        """
        call_id = response.call_id
        if call_id is None:
            return False
        ping = self._outstanding.get(call_id)
        if ping is None:
            return False
        via = response.top_via
        if via is None or via.branch != ping.branch:
            return False
        del self._outstanding[call_id]
        self.answered += 1
        # The binding may have been refreshed since: the answer is news about the contact.
        binding = self.location.get(ping.binding.user, ping.binding.key)
        if binding is not None:
            binding.last_pong = now
            binding.ping_failures = 0
            binding.reachable = True
        return True

    def on_timeout(self, now: float) -> list[Binding]:
        """Count the pings unanswered after `answer_timeout`; returns the bindings that just
        became unreachable (each also announced as ContactUnreachable)."""
        outstanding = self._outstanding
        became_unreachable: list[Binding] = []
        deadline = now - self.answer_timeout
        while outstanding:
            call_id, ping = next(iter(outstanding.items()))
            if ping.sent_at > deadline:
                break
            del outstanding[call_id]
            self.unanswered += 1
            binding = ping.binding
            if not self.location.is_current(binding):
                continue  # re-registered or gone since: that says more than a lost ping
            binding.ping_failures += 1
            if binding.reachable and binding.ping_failures >= self.failure_limit:
                binding.reachable = False
                became_unreachable.append(binding)
                self.bus.publish(
                    ContactUnreachable(binding.user, binding.contact, binding.ping_failures)
                )
        return became_unreachable

    def next_deadline(self) -> float | None:
        """When `due`/`on_timeout` next has work (for a `loop.call_at`), or None."""
        deadlines: list[float] = []
        if self._schedule:
            deadlines.append(self._schedule[0][0])
        if self._outstanding:
            deadlines.append(next(iter(self._outstanding.values())).sent_at + self.answer_timeout)
        return min(deadlines) if deadlines else None

    # -- internals ------------------------------------------------------------------------
    def _wanted(self, binding: Binding) -> bool:
        return binding.behind_nat and self.location.is_current(binding)

    def _schedule_ping(self, binding: Binding, at: float) -> None:
        binding.next_ping_at = at
        heapq.heappush(self._schedule, (at, next(self._sequence), binding))

    def _compact(self) -> None:
        """Drop stale entries once they outnumber the live ones (refreshes leave one each)."""
        if len(self._schedule) > 2 * len(self.location) + 1_024:
            self._schedule = [
                entry
                for entry in self._schedule
                if entry[0] == entry[2].next_ping_at and self._wanted(entry[2])
            ]
            heapq.heapify(self._schedule)

    def _schedule_restored(self) -> None:
        """Bindings restored after a restart never passed through `binding_saved`."""
        self._restores_seen = self.location.restores
        for binding in self.location.all_bindings():
            if binding.behind_nat and binding.next_ping_at is None:
                self._schedule_ping(binding, binding.updated_at + self.interval)

    def _options(self, binding: Binding) -> tuple[Request, str]:
        """An out-of-dialog OPTIONS to the contact (RFC 3261 §11.1), addressed as a request
        for the user would be (Request-URI = the Contact, Route = its Path)."""
        target = binding.target()
        flow = target.flow
        host, port = flow.local
        sent_by = self.domain if host in _UNSPECIFIED else f"{format_host(host)}:{port}"
        branch = new_branch()
        # Answers come back to the main process, which sent it (core/cluster/affinity.py).
        call_id = f"{MAIN_CALL_ID_PREFIX}{secrets.token_hex(10)}@{self.domain}"
        self._cseq = self._cseq % (2**31 - 1) + 1
        contact = NameAddr(uri=binding.uri)
        from_addr = NameAddr(
            uri=SipUri(user=PING_USER, host=self.domain), params={"tag": new_tag()}
        )
        headers = Headers(
            [
                ("Via", f"SIP/2.0/{flow.transport.upper()} {sent_by};branch={branch};rport"),
                *(("Route", hop) for hop in target.route),
                ("Max-Forwards", "70"),
                ("From", str(from_addr)),
                ("To", str(contact)),
                ("Call-ID", call_id),
                ("CSeq", f"{self._cseq} OPTIONS"),
                ("User-Agent", self.user_agent),
                ("Content-Length", "0"),
            ]
        )
        return Request("OPTIONS", binding.uri, headers), branch
