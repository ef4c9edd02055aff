"""Every message pbxtui's processes send each other over their links (core/cluster/links.py).

One small named tuple per kind: a receiver dispatches on the type, reads fields by name, and a
message in a log reads as `Bind(row=(...), connection_id=None)`. A named tuple pickles as its
class (named once per batch) and a plain tuple of its values. Measured here (dumps + loads, in
a batch of 100 distinct messages as the links send them): about 1.3 µs per Bind or Send,
against 0.3-0.6 µs for a bare tagged tuple; the difference is the Python-level
`__getnewargs__` and `__new__` of a named tuple, a few µs per REGISTER (three Binds on its
way round) next to the ~100 µs it costs to handle.

Who sends what (main is process 0, workers 1..N):

    main → worker      Init (first, with the UDP sockets), Peer (with a link to another
                       worker), CallsUp (at start), Reload, and main's changes
    worker → main      Ready, Send, Publish, Cdr, Figures, MediaFigures, LogLine, and the
                       worker's changes
    any → its owner    Sip: a message read here for a Call-ID another process holds
    changes            Bind, Unbind, Banned, Unbanned, CallCounted, CallReleased: applied
                       where they arrive, and passed on by main to the other workers
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, NamedTuple

from core.cluster.media import MediaFields
from core.events import Event
from core.settings import ListenAddress, Settings
from core.store.rows import CdrRow
from core.trunks.tollfraud import LimiterSnapshot

# A Flow as plain values: (transport, remote, local, connection_id).
FlowFields = tuple[str, tuple[str, int], tuple[str, int], "int | None"]


@dataclass(frozen=True, slots=True)
class WorkerSetup:
    """Who a worker is: its number, how many there are, main's addresses (sent once)."""

    index: int
    workers: int
    bound: tuple[ListenAddress, ...]  # main's listen addresses, for Via and Record-Route
    capture_traffic: bool  # the console's Traffic pane wants every message


# -- starting ---------------------------------------------------------------------------------
class Init(NamedTuple):
    """main → a worker, first, carrying the UDP sockets main bound."""

    setup: WorkerSetup
    settings: Settings


class Peer(NamedTuple):
    """main → a worker, carrying a link to worker number `worker`."""

    worker: int


class Ready(NamedTuple):
    """A worker → main: its core is built and it reads its sockets."""


class Reload(NamedTuple):
    """main → the workers: users, carriers or DIDs changed in the database."""


# -- SIP --------------------------------------------------------------------------------------
class Sip(NamedTuple):
    """A message read and admitted here, for the process that owns its Call-ID."""

    data: bytes
    flow: FlowFields


class Send(NamedTuple):
    """A worker → main: send `data` on a flow main holds (a TCP connection)."""

    data: bytes
    flow: FlowFields


# -- changes ----------------------------------------------------------------------------------
class Bind(NamedTuple):
    """A binding saved: the store's row as a plain tuple (a fifth of the row's pickling
    cost), and the TCP connection it came on, which main holds."""

    row: tuple[Any, ...]
    connection_id: int | None


class Unbind(NamedTuple):
    """A binding removed (the row identifies it: one contact may be stored per flow)."""

    row: tuple[Any, ...]
    connection_id: int | None


class Banned(NamedTuple):
    ip: str
    until: float | None  # wall clock; None: permanent
    reason: str
    hits: int  # the ban's count: how often the source was caught


class Unbanned(NamedTuple):
    """A ban lifted (main's only: every process lets bans run out by itself)."""

    ip: str


class CallCounted(NamedTuple):
    """An outbound call admitted under the toll-fraud limits."""

    username: str
    call_id: str
    at: float


class CallReleased(NamedTuple):
    """An outbound call that ended or failed."""

    call_id: str


class CallsUp(NamedTuple):
    """main → a worker (re)started: every outbound call counted, and the hourly windows."""

    snapshot: LimiterSnapshot


# -- reports ----------------------------------------------------------------------------------
class Publish(NamedTuple):
    """A worker → main: an event for main's bus (the console's feed, the log)."""

    event: Event


class Cdr(NamedTuple):
    """A worker → main: a finished call's record, for main's store."""

    row: CdrRow


class Figures(NamedTuple):
    """A worker → main, about once a second: its counters for the console's header."""

    messages_in: int
    messages_out: int
    dropped: int
    forwarded: int


class MediaFigures(NamedTuple):
    """A worker → main, about once a second: the media counters of its relayed calls that
    changed since its last report, None for a call no longer relayed (core/cluster/media.py)."""

    calls: tuple[tuple[str, MediaFields | None], ...]


class LogLine(NamedTuple):
    """A worker → main: a log record, written with main's own."""

    level: int
    logger: str
    text: str


Change = Bind | Unbind | Banned | Unbanned | CallCounted | CallReleased | CallsUp
CHANGES: tuple[type, ...] = (Bind, Unbind, Banned, Unbanned, CallCounted, CallReleased, CallsUp)

Report = Publish | Cdr | Figures | MediaFigures | LogLine
Message = Init | Peer | Ready | Reload | Sip | Send | Change | Report
