"""SIP traffic grouped into dialogs by Call-ID, as sngrep shows it: the Traffic pane's model.

The bus hands the console raw messages; decoding them is the reader's job, done here at the
console's cadence and never on the SIP path. Only the few headers a list row needs are read,
with a line scan rather than the full parser, so a flood costs the console little.

Everything is bounded: at most `max_dialogs` dialogs (the oldest dropped first) and at most
`max_messages` messages in each (a dialog's oldest dropped first), and every drop is counted,
so the pane can say how much history it no longer holds.

No Textual here: the model is plain Python, tested without a terminal.
"""

from __future__ import annotations

import time
from collections import OrderedDict, deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

from core.events import SipTraffic
from core.sip.peek import HeaderPeek, message_head

# The headers a row needs (core/sip/peek.py reads them without the parser). Only the Call-ID
# and CSeq are read for every message: a flood costs the console one or two searches per
# message. From, To and User-Agent are read when shown.
_HEADERS = {
    "call-id": HeaderPeek("Call-ID", "call-id|i"),
    "cseq": HeaderPeek("CSeq", "cseq"),
    "from": HeaderPeek("From", "from|f"),
    "to": HeaderPeek("To", "to|t"),
    "user-agent": HeaderPeek("User-Agent", "user-agent"),
}


def header_value(head: bytes, name: str) -> str:
    """The first `name` header's value in `head` (see `_HEADERS`), "" if there is none."""
    value = _HEADERS[name].value(head)
    return "" if value is None else value.decode("utf-8", "replace")


UNPARSED_PREFIX = "unparsed "


@dataclass(frozen=True, slots=True)
class TrafficMessage:
    """One SIP message as the Traffic pane shows it, with the event it came from."""

    traffic: SipTraffic
    call_id: str
    method: str  # the request's method, or the CSeq method a response answers
    status: int  # 0 for a request
    reason: str

    def _header(self, name: str) -> str:
        return header_value(message_head(self.traffic.data), name)

    @property
    def from_user(self) -> str:
        value = self._header("from")
        return _uri_user(value) if value else ""

    @property
    def to_user(self) -> str:
        value = self._header("to")
        return _uri_user(value) if value else ""

    @property
    def user_agent(self) -> str:
        return self._header("user-agent")

    @property
    def is_request(self) -> bool:
        return self.status == 0

    @property
    def parsed(self) -> bool:
        return bool(self.method) or self.status != 0

    @property
    def label(self) -> str:
        """`INVITE` or `200 OK`, as a ladder arrow is labelled."""
        if not self.parsed:
            return "(unparseable)"
        if self.is_request:
            return self.method
        return f"{self.status} {self.reason}".strip()

    @property
    def source(self) -> tuple[str, int]:
        event = self.traffic
        return event.remote if event.direction == "in" else event.local

    @property
    def destination(self) -> tuple[str, int]:
        event = self.traffic
        return event.local if event.direction == "in" else event.remote


def format_address(address: tuple[str, int]) -> str:
    host, port = address
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _uri_user(value: str) -> str:
    """`alice` from `"Alice" <sip:alice@pbx.test>;tag=1`, the host when there is no user."""
    lower = value.lower()
    for scheme in ("sip:", "sips:", "tel:"):
        start = lower.find(scheme)
        if start >= 0:
            rest = value[start + len(scheme) :]
            break
    else:
        return value.strip()[:40]
    end = len(rest)
    for stop in ">;?, ":
        index = rest.find(stop)
        if 0 <= index < end:
            end = index
    address = rest[:end]
    user, at, _host = address.partition("@")
    return user if at else address


def summarise(event: SipTraffic) -> TrafficMessage:
    """Read the start line and the row's headers; anything unreadable becomes an unparsed row."""
    head = message_head(event.data)
    line_end = head.find(b"\n")
    first = (head if line_end < 0 else head[:line_end]).decode("utf-8", "replace").strip()
    has_headers = line_end >= 0
    method, status, reason = "", 0, ""
    if first.startswith("SIP/2.0 "):
        code, _, reason = first[8:].partition(" ")
        if code.isdigit():
            status = int(code)
            method = header_value(head, "cseq").rpartition(" ")[2].upper()
    else:
        parts = first.split(" ")
        if len(parts) == 3 and parts[2].upper().startswith("SIP/") and parts[0].isalpha():
            method = parts[0].upper()
    call_id = header_value(head, "call-id") if has_headers else ""
    if not (method or status) or not call_id:
        call_id = f"{UNPARSED_PREFIX}{format_address(event.remote)}"
    return TrafficMessage(
        traffic=event,
        call_id=call_id,
        method=method,
        status=status,
        reason=reason.strip(),
    )


@dataclass(slots=True)
class Dialog:
    """Every message seen with one Call-ID (or from one source, when unparseable)."""

    call_id: str
    messages: deque[TrafficMessage]
    first_at: float
    last_at: float
    method: str = ""
    from_user: str = ""
    to_user: str = ""
    source: str = ""
    state: str = ""
    message_count: int = 0  # every message seen, including those dropped from `messages`
    revision: int = 0  # bumped on every change, so views know what to redraw
    _search_text: str | None = field(default=None, repr=False)

    @property
    def dropped_messages(self) -> int:
        return self.message_count - len(self.messages)

    @property
    def addresses(self) -> set[str]:
        found: set[str] = set()
        for message in self.messages:
            found.add(format_address(message.source))
            found.add(format_address(message.destination))
        return found

    def search_text(self) -> str:
        """The raw text of every kept message, lower-cased once per revision."""
        if self._search_text is None:
            self._search_text = "\n".join(
                message.traffic.data.decode("utf-8", "replace") for message in self.messages
            ).lower()
        return self._search_text

    def add(self, message: TrafficMessage) -> None:
        self.messages.append(message)
        self.message_count += 1
        self.revision += 1
        self._search_text = None
        self.last_at = message.traffic.at
        if not self.method and message.is_request and message.parsed:
            self.method = message.method
            self.from_user = message.from_user
            self.to_user = message.to_user
            self.source = format_address(message.source)
        if not self.source:
            self.source = format_address(message.source)
        self.state = _next_state(self.state, self.method, message)


def _next_state(state: str, dialog_method: str, message: TrafficMessage) -> str:
    """sngrep's call states for INVITE dialogs; the last final answer for everything else."""
    if not message.parsed:
        return "UNPARSEABLE"
    if dialog_method == "INVITE":
        if message.is_request:
            if message.method == "INVITE" and state in ("", "CHALLENGED"):
                return "CALL SETUP"
            if message.method == "CANCEL":
                return "CANCELLED"
            if message.method == "BYE":
                return "COMPLETED"
            return state
        if message.method != "INVITE" or state in ("COMPLETED", "CANCELLED"):
            return state
        status = message.status
        if status < 200:
            return "RINGING" if status in (180, 183) else state or "CALL SETUP"
        if status < 300:
            return "IN CALL"
        if status in (401, 407):
            return "CHALLENGED"
        if status == 487:
            return "CANCELLED"
        if status in (486, 600):
            return "BUSY"
        return "REJECTED"
    if message.is_request:
        return state or "SENT"
    if message.status >= 200:
        return message.label
    return state


class DialogLog:
    """The bounded, ordered history of dialogs the Traffic pane lists (oldest first)."""

    def __init__(self, max_dialogs: int = 2_000, max_messages: int = 200) -> None:
        self.max_dialogs = max_dialogs
        self.max_messages = max_messages
        self._dialogs: OrderedDict[str, Dialog] = OrderedDict()
        self.dropped_dialogs = 0
        self.dropped_messages = 0  # messages no longer held: cut from a dialog or dropped with it
        self.missed = 0  # messages the bus no longer held when the console read it
        self.total_messages = 0
        self.revision = 0

    def __len__(self) -> int:
        return len(self._dialogs)

    def __iter__(self) -> Iterator[Dialog]:
        return iter(list(self._dialogs.values()))

    def get(self, call_id: str) -> Dialog | None:
        return self._dialogs.get(call_id)

    def add(self, events: Iterable[SipTraffic], missed: int = 0) -> int:
        """Group new traffic into dialogs; returns how many messages were added."""
        self.missed += missed
        added = 0
        for event in events:
            message = summarise(event)
            dialog = self._dialogs.get(message.call_id)
            if dialog is None:
                dialog = Dialog(
                    call_id=message.call_id,
                    messages=deque(maxlen=self.max_messages),
                    first_at=event.at,
                    last_at=event.at,
                )
                self._dialogs[message.call_id] = dialog
                if len(self._dialogs) > self.max_dialogs:
                    _, oldest = self._dialogs.popitem(last=False)
                    self.dropped_dialogs += 1
                    self.dropped_messages += len(oldest.messages)
            elif len(dialog.messages) == self.max_messages:
                self.dropped_messages += 1
            dialog.add(message)
            added += 1
        if added or missed:
            self.total_messages += added
            self.revision += 1
        return added

    def clear(self) -> None:
        self._dialogs.clear()
        self.dropped_dialogs = self.dropped_messages = self.missed = self.total_messages = 0
        self.revision += 1


@dataclass(frozen=True, slots=True)
class TrafficFilter:
    """What the filter bar asked for: free text plus `u:` user, `a:` address, `m:` method.

    Every part must match (AND); a part matches by case-insensitive substring, the method by
    equality with any message's method, e.g. `m:invite u:alice a:203.0.113.9 busy`.
    """

    text: str = ""
    user: str = ""
    address: str = ""
    method: str = ""

    PREFIXES = {
        "u": "user",
        "user": "user",
        "a": "address",
        "addr": "address",
        "ip": "address",
        "m": "method",
        "method": "method",
    }

    @classmethod
    def parse(cls, query: str) -> TrafficFilter:
        parts: dict[str, str] = {}
        words: list[str] = []
        for token in query.split():
            prefix, colon, value = token.partition(":")
            name = cls.PREFIXES.get(prefix.lower()) if colon else None
            if name is None or not value:
                words.append(token)
            else:
                parts[name] = value
        return cls(
            text=" ".join(words).lower(),
            user=parts.get("user", "").lower(),
            address=parts.get("address", ""),
            method=parts.get("method", "").upper(),
        )

    @property
    def empty(self) -> bool:
        return not (self.text or self.user or self.address or self.method)

    def matches(self, dialog: Dialog) -> bool:
        if self.method and not any(m.method == self.method for m in dialog.messages):
            return False
        if self.user and not any(
            self.user in m.from_user.lower() or self.user in m.to_user.lower()
            for m in dialog.messages
        ):
            return False
        if self.address and not any(self.address in a for a in dialog.addresses):
            return False
        return not self.text or self.text in dialog.search_text()


def export_text(messages: Iterable[TrafficMessage]) -> str:
    """Messages as sngrep's plain-text save writes them: a header line, then the raw message."""
    chunks = []
    for message in messages:
        event = message.traffic
        stamp = time.strftime("%Y/%m/%d %H:%M:%S", time.localtime(event.at))
        micros = int((event.at % 1) * 1_000_000)
        arrow = f"{format_address(message.source)} -> {format_address(message.destination)}"
        raw = event.data.decode("utf-8", "replace").replace("\r\n", "\n")
        chunks.append(f"{stamp}.{micros:06d} {event.transport.upper()} {arrow}\n{raw.rstrip()}\n")
    return "\n".join(chunks)
