"""UDP intake: each datagram read is checked, queued, and handed on a batch per loop turn.

This is the part of the transport every datagram crosses, so it is compiled with the core
(mypyc) instead of running as interpreted glue between uvloop and the route: measured with
callgrind on a real server answering SIPp's OPTIONS, the interpreted intake, backlog and
Pbx callback cost about 20,000 instructions per datagram, an eighth of the whole message.

The policy itself is the transport's (core/net/transport.py explains the batch and the shed):
bounded backlog, new work shed once the oldest waiting datagram is stale, NAT keep-alive
padding dropped unread, oversized datagrams counted and dropped.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable
from typing import Any, Final

from core.net.flow import Flow

MessageHandler = Callable[[bytes, Flow], None]
FaultHandler = Callable[[Exception, Flow], None]

# Datagrams handled per loop turn before other callbacks run (about 2 ms of work).
UDP_BATCH: Final = 8

# What keeps the calls under way going: responses, and the requests that end or confirm a
# transaction or a dialog. Everything else starts new work, and can be shed under overload.
_KEEPS_CALLS_GOING: Final = (b"SIP/", b"ACK ", b"CANCEL ", b"BYE ")
_IPV4_MAPPED: Final = "::ffff:"


def starts_new_work(data: bytes) -> bool:
    """Would this datagram start new work (a new call, a registration, a probe)?

    Decided from the first bytes alone, before any parsing: under overload the point is to
    spend nothing on what will be dropped. A dropped UDP request is retransmitted by its
    sender (RFC 3261 §17.1.1.2) and served once the backlog has drained; meanwhile the
    responses, ACKs, CANCELs and BYEs of the calls already under way are served in time,
    instead of every call timing out behind a queue of new ones.
    """
    return not data.startswith(_KEEPS_CALLS_GOING)


def peer_address(address: Any) -> tuple[str, int]:
    """(host, port) from a socket address; IPv4-mapped IPv6 shown as plain IPv4."""
    host: str = address[0]
    port: int = address[1]
    if host.startswith(_IPV4_MAPPED) and "." in host:
        host = host[7:]
    return host, port


def _keep_alive(data: bytes) -> bool:
    """NAT keep-alive padding some phones send over UDP: nothing to answer."""
    return data == b"\r\n\r\n" or data == b"\r\n" or data == b"\x00\x00\x00\x00"


class DatagramIntake:
    """The backlog between the UDP sockets and the core, with its counters.

    `on_message` takes what the transport was built with; `fast_lane` (set while the server
    runs) replaces it for datagrams, with the handler's faults and the once-a-batch duty
    (re-arming the proxy's timer) handled here instead of per message in interpreted code.
    """

    def __init__(
        self,
        max_message_bytes: int,
        backlog_messages: int,
        shed_after_seconds: float,
        on_message: MessageHandler,
        on_forwarded: MessageHandler,
    ) -> None:
        self.max_message_bytes = max_message_bytes
        self.backlog_messages = backlog_messages
        self.shed_after_seconds = shed_after_seconds
        self.on_message = on_message
        self.on_forwarded = on_forwarded
        self.handler: MessageHandler | None = None
        self.after_batch: Callable[[], None] | None = None
        self.fault: FaultHandler | None = None
        self.loop: asyncio.AbstractEventLoop | None = None
        self.clock: Callable[[], float] | None = None  # the loop's time (tests set their own)
        # (data, flow, queued at, forwarded by another worker process)
        self.backlog: deque[tuple[bytes, Flow, float, bool]] = deque()
        # Bound once: compiled code calls a deque's (or the loop's) method by looking its
        # name up on every call, a few hundred instructions per datagram between them.
        self._push: Callable[[tuple[bytes, Flow, float, bool]], None] = self.backlog.append
        self._pop: Callable[[], tuple[bytes, Flow, float, bool]] = self.backlog.popleft
        self._call_soon: Callable[[Callable[[], None]], object] | None = None
        self._drain: Callable[[], None] = self.drain
        self.draining = False
        self.received = 0
        self.oversized = 0
        self.backlog_drops = 0
        self.shed_requests = 0  # new requests dropped: the backlog had waited too long

    def fast_lane(
        self,
        handler: MessageHandler | None,
        after_batch: Callable[[], None] | None = None,
        fault: FaultHandler | None = None,
    ) -> None:
        """Hand datagrams straight to `handler` (None: back to `on_message`); a handler that
        raises is reported to `fault` and the batch goes on; `after_batch` runs once per
        batch handled."""
        self.handler = handler
        self.after_batch = after_batch if handler is not None else None
        self.fault = fault if handler is not None else None

    def attach(self, loop: asyncio.AbstractEventLoop) -> None:
        """The loop whose turns the backlog drains on."""
        self.loop = loop
        self.clock = loop.time
        self._call_soon = loop.call_soon

    def receiver(self, local: tuple[str, int]) -> DatagramReceiver:
        """The `datagram_received` of one UDP socket bound to `local`."""
        return DatagramReceiver(self, local)

    def enqueue(self, data: bytes, flow: Flow, forwarded: bool) -> None:
        backlog = self.backlog
        if len(backlog) >= self.backlog_messages:
            self.backlog_drops += 1
            return
        call_soon = self._call_soon
        clock = self.clock
        assert call_soon is not None and clock is not None
        now = clock()
        shed_after = self.shed_after_seconds
        if shed_after and backlog and now - backlog[0][2] > shed_after and starts_new_work(data):
            self.shed_requests += 1
            return
        self._push((data, flow, now, forwarded))
        if not self.draining:
            self.draining = True
            call_soon(self._drain)

    def drain(self) -> None:
        backlog = self.backlog
        handler = self.handler
        pop = self._pop
        try:
            count = min(len(backlog), UDP_BATCH)
            for _ in range(count):
                data, flow, _queued_at, forwarded = pop()
                if forwarded:
                    self.on_forwarded(data, flow)
                elif handler is None:
                    self.on_message(data, flow)
                else:
                    try:
                        handler(data, flow)
                    except Exception as error:
                        fault = self.fault
                        if fault is None:
                            raise
                        fault(error, flow)
            after = self.after_batch
            if after is not None and count:
                after()
        finally:
            # Rescheduled even if a handler raised (the loop logs it): one bad message must
            # not leave the rest of the backlog unread.
            loop = self.loop
            call_soon = self._call_soon
            if backlog and loop is not None and call_soon is not None and not loop.is_closed():
                call_soon(self._drain)
            else:
                self.draining = False


class DatagramReceiver:
    """One UDP socket's `datagram_received`: counted, bounded, keep-alives dropped, queued."""

    def __init__(self, intake: DatagramIntake, local: tuple[str, int]) -> None:
        self.intake = intake
        self.local = local

    def datagram_received(self, data: bytes, addr: Any) -> None:
        intake = self.intake
        intake.received += 1
        size = len(data)
        if size > intake.max_message_bytes:
            intake.oversized += 1
            return
        if size <= 4 and _keep_alive(data):
            return
        intake.enqueue(data, Flow("udp", peer_address(addr), self.local), False)


class SocketTable:
    """The UDP sockets this process reads, by local address, as the transport fills it
    (`table[local] = transport`, `clear()`). A server nearly always reads one socket: that one
    is kept apart, so a send compares its local address field by field instead of boxing it
    into a tuple, hashing it and looking it up, and calls a `sendto` bound once."""

    def __init__(self) -> None:
        self._by_local: dict[tuple[str, int], Any] = {}
        # The one socket's address and transport; None when there are none or several.
        self.only_host = ""
        self.only_port = -1
        self.only: Any = None
        self.only_sendto: Callable[[bytes, tuple[str, int]], object] | None = None

    def __setitem__(self, local: tuple[str, int], udp: Any) -> None:
        self._by_local[local] = udp
        self._settle()

    def __len__(self) -> int:
        return len(self._by_local)

    def get(self, local: tuple[str, int]) -> Any:
        return self._by_local.get(local)

    def clear(self) -> None:
        self._by_local.clear()
        self._settle()

    def _settle(self) -> None:
        self.only_host, self.only_port, self.only, self.only_sendto = "", -1, None, None
        if len(self._by_local) == 1:
            for local, udp in self._by_local.items():
                if udp is not None:
                    self.only_host, self.only_port = local
                    self.only = udp
                    self.only_sendto = udp.sendto


class DatagramSender:
    """UDP out to an IP address from a socket this process reads: nearly every send the core
    makes, so compiled too. Anything else (a host name to resolve first, TCP or TLS, a socket
    only bound here, a host not yet seen) goes to `fallback`, the transport's general send,
    which learns the host into `literal` on the way."""

    def __init__(self, fallback: Callable[[bytes, Flow], bool], literal: dict[str, bool]) -> None:
        self.fallback = fallback
        self.literal = literal  # host → is it an IP address (shared with the transport)
        self.sockets = SocketTable()  # local address → its DatagramTransport
        self.sent = 0

    def send(self, data: bytes, flow: Flow) -> bool:
        """Send without blocking; False when the data could not be handed to a socket."""
        if flow.transport == "udp":
            remote = flow.remote
            if not self.literal.get(remote[0], False):
                return self.fallback(data, flow)
            local = flow.local
            table = self.sockets
            sendto = table.only_sendto
            if sendto is not None and local[1] == table.only_port and local[0] == table.only_host:
                sendto(data, remote)  # the one socket read here: the usual case
                self.sent += 1
                return True
            udp = table.get(local)
            if udp is not None:
                udp.sendto(data, remote)
                self.sent += 1
                return True
        return self.fallback(data, flow)
