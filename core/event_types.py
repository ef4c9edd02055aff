"""The events the core publishes (core/events.py has the bus): dataclasses, compiled.

Every call publishes four events and every REGISTER refresh one, so the module is compiled
with the SIP core (setup.py) and each event writes its __init__ out: a dataclass-generated
__init__ runs interpreted even in a compiled class, at about ten times the cost (some 6,600
instructions a CallEvent). The dataclass stays for the fields (the control protocol's codec
walks them), equality and repr. The bus (core/events.py) is compiled too, and lets the
cluster's WorkerBus subclass it.

Events are shared by every reader: never change one. They are not frozen because a frozen
dataclass's generated __init__ sets each field through object.__setattr__, several times the
cost of a plain assignment.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field, fields
from typing import Any

# The clock of an event built without `at`.
_now = time.time


@dataclass(slots=True, init=False)
class Event:
    """Base of every event; `at` is wall-clock time (for display and logs)."""

    at: float = field(default_factory=time.time, kw_only=True)

    @property
    def kind(self) -> str:
        """What the feed counts the event as (a security event: its action). A property,
        not a class variable: a compiled dataclass would take that for a field."""
        return "event"

    def __init__(self, *, at: float | None = None) -> None:
        self.at = _now() if at is None else at

    def __reduce__(self) -> tuple[Any, ...]:
        # A compiled class has no default pickling (its __new__ wants the __init__'s
        # arguments): rebuilt through the __init__, by field name.
        cls = type(self)
        return (_restore, (cls, {name: getattr(self, name) for name in _field_names(cls)}))


# -- traffic ----------------------------------------------------------------------------
@dataclass(slots=True, init=False)
class SipTraffic(Event):
    """One SIP message in or out, raw. Decoding is the reader's job, not the hot path's."""

    direction: str  # "in" or "out"
    transport: str  # "udp" / "tcp"
    remote: tuple[str, int]
    local: tuple[str, int]
    data: bytes

    @property
    def kind(self) -> str:
        return "traffic"

    def __init__(
        self,
        direction: str,
        transport: str,
        remote: tuple[str, int],
        local: tuple[str, int],
        data: bytes,
        *,
        at: float | None = None,
    ) -> None:
        self.at = _now() if at is None else at
        self.direction = direction
        self.transport = transport
        self.remote = remote
        self.local = local
        self.data = data


# -- registrar --------------------------------------------------------------------------
@dataclass(slots=True, init=False)
class ContactRegistered(Event):
    user: str
    contact: str
    source: tuple[str, int]
    transport: str
    expires: int
    user_agent: str = ""
    behind_nat: bool = False

    @property
    def kind(self) -> str:
        return "registered"

    def __init__(
        self,
        user: str,
        contact: str,
        source: tuple[str, int],
        transport: str,
        expires: int,
        user_agent: str = "",
        behind_nat: bool = False,
        *,
        at: float | None = None,
    ) -> None:
        self.at = _now() if at is None else at
        self.user = user
        self.contact = contact
        self.source = source
        self.transport = transport
        self.expires = expires
        self.user_agent = user_agent
        self.behind_nat = behind_nat


@dataclass(slots=True, init=False)
class ContactRefreshed(Event):
    user: str
    contact: str
    source: tuple[str, int]
    expires: int

    @property
    def kind(self) -> str:
        return "refreshed"

    def __init__(
        self,
        user: str,
        contact: str,
        source: tuple[str, int],
        expires: int,
        *,
        at: float | None = None,
    ) -> None:
        self.at = _now() if at is None else at
        self.user = user
        self.contact = contact
        self.source = source
        self.expires = expires


@dataclass(slots=True, init=False)
class ContactUnregistered(Event):
    user: str
    contact: str
    source: tuple[str, int] | None = None
    reason: str = "unregistered"  # or "admin", "replaced"

    @property
    def kind(self) -> str:
        return "unregistered"

    def __init__(
        self,
        user: str,
        contact: str,
        source: tuple[str, int] | None = None,
        reason: str = "unregistered",
        *,
        at: float | None = None,
    ) -> None:
        self.at = _now() if at is None else at
        self.user = user
        self.contact = contact
        self.source = source
        self.reason = reason


@dataclass(slots=True, init=False)
class ContactExpired(Event):
    user: str
    contact: str

    @property
    def kind(self) -> str:
        return "expired"

    def __init__(self, user: str, contact: str, *, at: float | None = None) -> None:
        self.at = _now() if at is None else at
        self.user = user
        self.contact = contact


@dataclass(slots=True, init=False)
class ContactUnreachable(Event):
    """A NAT keep-alive OPTIONS went unanswered too many times."""

    user: str
    contact: str
    failures: int

    @property
    def kind(self) -> str:
        return "unreachable"

    def __init__(self, user: str, contact: str, failures: int, *, at: float | None = None) -> None:
        self.at = _now() if at is None else at
        self.user = user
        self.contact = contact
        self.failures = failures


# -- security ---------------------------------------------------------------------------
@dataclass(slots=True, init=False)
class SecurityEvent(Event):
    """A security decision: one shape so the UI feed and the log treat all alike.

    `action` is one of: "auth-failed", "scanner-dropped", "sanity-rejected", "max-forwards",
    "loop", "brute-force-user", "toll-fraud", "too-large", "parse-error", "banned-dropped",
    "tls-verify-failed" (a server we connected to showed a certificate that does not verify:
    expired, wrong host, unknown issuer), "tls-failed" (another TLS error on such a connection),
    "tls-required" (a "TLS only" user's request over UDP or TCP, refused); and, as the
    `SourceBanned` / `SourceUnbanned` below, "banned", "flood-banned", "unbanned".
    """

    action: str
    source: str  # IP address
    detail: str = ""
    user: str = ""
    user_agent: str = ""
    count: int = 1

    @property
    def kind(self) -> str:
        return "security"

    def __init__(
        self,
        action: str,
        source: str,
        detail: str = "",
        user: str = "",
        user_agent: str = "",
        count: int = 1,
        *,
        at: float | None = None,
    ) -> None:
        self.at = _now() if at is None else at
        self.action = action
        self.source = source
        self.detail = detail
        self.user = user
        self.user_agent = user_agent
        self.count = count


@dataclass(slots=True, init=False)
class SourceBanned(SecurityEvent):
    """A source was banned: the one event for it. `action` says what banned it ("banned" by
    an admin or another process, "flood-banned", ...), `detail` why in words, `count` what
    triggered it (1 for an admin's ban); `until` is its end on the wall clock (math.inf:
    until lifted) and `reason` what the ban table shows."""

    until: float = field(default=math.inf, kw_only=True)
    reason: str = field(default="", kw_only=True)

    @property
    def kind(self) -> str:
        return "ban"

    def __init__(
        self,
        action: str,
        source: str,
        detail: str = "",
        user: str = "",
        user_agent: str = "",
        count: int = 1,
        *,
        until: float = math.inf,
        reason: str = "",
        at: float | None = None,
    ) -> None:
        self.at = _now() if at is None else at
        self.action = action
        self.source = source
        self.detail = detail
        self.user = user
        self.user_agent = user_agent
        self.count = count
        self.until = until
        self.reason = reason


@dataclass(slots=True, init=False)
class SourceUnbanned(SecurityEvent):
    """A ban was lifted (`action` "unbanned"); `detail` says why: "admin", "expired" or
    "evicted"."""

    @property
    def kind(self) -> str:
        return "unban"


# -- calls ------------------------------------------------------------------------------
@dataclass(slots=True, init=False)
class CallEvent(Event):
    """A call changed state: "trying", "ringing", "answered", "ended", "failed"."""

    call_id: str
    state: str
    caller: str
    callee: str
    source: str = ""
    status: int = 0
    reason: str = ""
    duration: float = 0.0  # seconds from answer to end, on "ended"
    direction: str = "internal"  # or "inbound", "outbound": as in the CDR

    @property
    def kind(self) -> str:
        return "call"

    def __init__(
        self,
        call_id: str,
        state: str,
        caller: str,
        callee: str,
        source: str = "",
        status: int = 0,
        reason: str = "",
        duration: float = 0.0,
        direction: str = "internal",
        *,
        at: float | None = None,
    ) -> None:
        self.at = _now() if at is None else at
        self.call_id = call_id
        self.state = state
        self.caller = caller
        self.callee = callee
        self.source = source
        self.status = status
        self.reason = reason
        self.duration = duration
        self.direction = direction


# -- server -----------------------------------------------------------------------------
@dataclass(slots=True, init=False)
class ServerEvent(Event):
    """Start, stop, listening, configuration reloads, and errors worth an admin's eye."""

    message: str
    level: str = "info"

    @property
    def kind(self) -> str:
        return "server"

    def __init__(self, message: str, level: str = "info", *, at: float | None = None) -> None:
        self.at = _now() if at is None else at
        self.message = message
        self.level = level


def _restore(cls: type[Event], values: dict[str, Any]) -> Event:
    """An event rebuilt from its fields (pickle: the cluster's links carry events)."""
    return cls(**values)


# The field names of each event class, looked up once for pickling.
_FIELD_NAMES: dict[type, tuple[str, ...]] = {}


def _field_names(cls: type) -> tuple[str, ...]:
    names = _FIELD_NAMES.get(cls)
    if names is None:
        names = _FIELD_NAMES[cls] = tuple(f.name for f in fields(cls))
    return names
