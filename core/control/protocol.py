"""The control protocol: JSON lines over a Unix stream socket, one declared type per message.

A console or the CLI connects and sends `Hello` with its protocol version; the service answers
`Welcome` (same version) or `Refused` (why, in words) and closes. Then the client sends
`Request`s (each answered by a `Reply` with the same id) and at most one `Subscribe`; the
service pushes `Pushed` events, `Figures` and, after a console fell behind, `Dropped`.

JSON, not pickle: the two ends start independently and may be different versions, and a
line from the socket must never be able to run code. Every line is bounded (`MAX_LINE`).
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import Any, ClassVar

from core.control.codec import CodecError

PROTOCOL_VERSION = 1
# A request line (an admin action with its arguments) is small. A service's line is larger:
# a reply carries up to MAX_SNAPSHOT_ROWS rows (core/control/operations.py), and pushed events
# are cut into lines of about PUSH_LINE_BYTES (one SIP message of 64 KiB is ~90 KiB as base64).
MAX_REQUEST_LINE = 64 * 1024
PUSH_LINE_BYTES = 256 * 1024
MAX_LINE = 16 * 1024 * 1024


class ProtocolError(ValueError):
    """A line that breaks the protocol: the connection is closed with this reason."""


@dataclass(slots=True)
class Message:
    kind: ClassVar[str] = ""

    def encode(self) -> bytes:
        body = {"t": self.kind, **{f.name: getattr(self, f.name) for f in dataclasses.fields(self)}}
        return json.dumps(body, separators=(",", ":"), allow_nan=False).encode() + b"\n"


@dataclass(slots=True)
class Hello(Message):
    """Client → service, first line: who is asking, and which protocol it speaks."""

    version: int
    client: str = ""
    kind: ClassVar[str] = "hello"


@dataclass(slots=True)
class Welcome(Message):
    """Service → client: the service's identity, so the header can say what it is attached to."""

    version: int
    pid: int
    domain: str
    listening: list[str]
    started_at: float
    kind: ClassVar[str] = "welcome"


@dataclass(slots=True)
class Refused(Message):
    """Service → client, then the service closes: a version mismatch, too many consoles, ..."""

    reason: str
    kind: ClassVar[str] = "refused"


@dataclass(slots=True)
class Request(Message):
    """Client → service: run operation `op` (core/control/operations.py) with `args`."""

    id: int
    op: str
    args: dict[str, Any] = field(default_factory=dict)
    kind: ClassVar[str] = "request"


@dataclass(slots=True)
class Reply(Message):
    """Service → client: the outcome of request `id`; `error` is a sentence for a form field."""

    id: int
    result: Any = None
    error: str | None = None
    kind: ClassVar[str] = "reply"


@dataclass(slots=True)
class Subscribe(Message):
    """Client → service: push the live feed (registrations, security, calls) and, if asked,
    the SIP traffic."""

    feed: bool = True
    traffic: bool = False
    kind: ClassVar[str] = "subscribe"


@dataclass(slots=True)
class Pushed(Message):
    """Service → console: events, in order, as codec objects."""

    events: list[dict[str, Any]]
    kind: ClassVar[str] = "pushed"

    @staticmethod
    def lines(encoded_events: list[str]) -> list[bytes]:
        """`Pushed` lines of events already encoded as JSON (each once, however many
        consoles get it), every line about PUSH_LINE_BYTES at most."""
        lines: list[bytes] = []
        chunk: list[str] = []
        size = 0
        for event in encoded_events:
            if chunk and size + len(event) > PUSH_LINE_BYTES:
                lines.append(_pushed_line(chunk))
                chunk, size = [], 0
            chunk.append(event)
            size += len(event) + 1
        if chunk:
            lines.append(_pushed_line(chunk))
        return lines


def _pushed_line(encoded_events: list[str]) -> bytes:
    return ('{"t":"pushed","events":[' + ",".join(encoded_events) + "]}\n").encode()


@dataclass(slots=True)
class Figures(Message):
    """Service → console, every tick: the counters of the status strip and the Security pane."""

    messages_in: int
    messages_out: int
    contacts: int
    calls_up: int
    bans: int
    users: int
    dropped: int
    counts: dict[str, int]
    kind: ClassVar[str] = "figures"


@dataclass(slots=True)
class Dropped(Message):
    """Service → console: `count` messages were not sent because the console fell behind."""

    count: int
    kind: ClassVar[str] = "dropped"


MESSAGE_TYPES: dict[str, type[Message]] = {
    cls.kind: cls
    for cls in (Hello, Welcome, Refused, Request, Reply, Subscribe, Pushed, Figures, Dropped)
}

# The JSON type each field must have: anything else is a protocol error, not a crash later.
_FIELD_TYPES: dict[str, tuple[type, ...]] = {
    "int": (int,),
    "str": (str,),
    "bool": (bool,),
    "float": (int, float),
    "list[str]": (list,),
    "list[dict[str, Any]]": (list,),
    "dict[str, Any]": (dict,),
    "dict[str, int]": (dict,),
    "str | None": (str, type(None)),
    "Any": (object,),
}


def _no_constants(name: str) -> object:
    raise ValueError(f"{name} is not JSON")


def decode(line: bytes, accept: tuple[type[Message], ...]) -> Message:
    """One line → one message of a type in `accept`; ProtocolError for anything else."""
    try:
        body = json.loads(line, parse_constant=_no_constants)
    except (ValueError, UnicodeDecodeError):
        raise ProtocolError("a line that is not JSON") from None
    if not isinstance(body, dict):
        raise ProtocolError("a line that is not a JSON object")
    cls = MESSAGE_TYPES.get(str(body.pop("t", "")))
    if cls is None or cls not in accept:
        raise ProtocolError(f"unexpected message {str(body.get('t', ''))[:40]!r}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    for name, value in body.items():
        declared = fields.get(name)
        if declared is None:
            raise ProtocolError(f"{cls.kind} has no field {name[:40]!r}")
        types = _FIELD_TYPES.get(str(declared.type), (object,))
        if isinstance(value, bool) and bool not in types and object not in types:
            raise ProtocolError(f"{cls.kind}.{name} has the wrong type")
        if not isinstance(value, types):
            raise ProtocolError(f"{cls.kind}.{name} has the wrong type")
    try:
        return cls(**body)
    except TypeError:
        raise ProtocolError(f"{cls.kind} is missing a field") from None


__all__ = [
    "MAX_LINE",
    "MAX_REQUEST_LINE",
    "PROTOCOL_VERSION",
    "PUSH_LINE_BYTES",
    "CodecError",
    "Dropped",
    "Figures",
    "Hello",
    "Message",
    "ProtocolError",
    "Pushed",
    "Refused",
    "Reply",
    "Request",
    "Subscribe",
    "Welcome",
    "decode",
]
