"""The asyncio protocols under the transport: one UDP socket, one TCP or TLS connection.

They count, bound and frame what arrives and hand it to their `Layer` (core/net/transport.py),
which decides everything else: queueing, caps, bans, where a message goes.
"""

from __future__ import annotations

import asyncio
from typing import Protocol, cast

from core.net.flow import Flow
from core.net.intake import DatagramReceiver, peer_address
from core.net.tls import certificate_names
from core.settings import TransportSettings
from core.sip.errors import SipParseError
from core.sip.framing import KeepAlive, StreamFramer

_MAX_PENDING_CONNECT_BYTES = 262_144


class Layer(Protocol):
    """What the protocols ask of the transport layer that owns them."""

    settings: TransportSettings
    stream_messages: int
    send_errors: int
    stream_errors: int

    def loop_time(self) -> float: ...
    def on_message(self, data: bytes, flow: Flow) -> None: ...
    def on_stream_error(self, error: SipParseError, flow: Flow, data: bytes) -> None: ...
    def register_connection(self, connection: StreamConnection) -> None: ...
    def forget_connection(self, connection: StreamConnection) -> None: ...


class UdpEndpoint(asyncio.DatagramProtocol):
    """One UDP socket. What it reads goes to `receiver` (core/net/intake.py, compiled: it
    counts, bounds and queues each datagram on the layer's backlog); uvloop and asyncio call
    the protocol's `datagram_received`, which is that receiver's own bound method."""

    def __init__(
        self, transport_layer: Layer, local: tuple[str, int], receiver: DatagramReceiver
    ) -> None:
        self.layer = transport_layer
        self.local = local
        self.udp: asyncio.DatagramTransport | None = None
        # An instance attribute, looked up once when the loop wires the protocol: no
        # interpreted frame between the loop and the compiled receiver.
        self.datagram_received = receiver.datagram_received  # type: ignore[method-assign]

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.udp = transport  # type: ignore[assignment]

    def error_received(self, exc: Exception) -> None:
        # ICMP port unreachable for an earlier send; nothing to do but count it.
        self.layer.send_errors += 1


class StreamConnection(asyncio.Protocol):
    """One TCP or TLS connection: a stream framed into messages (RFC 3261 §18.3), CRLF
    keep-alives answered (RFC 5626 §4.4.1), outgoing data held while it is being opened."""

    def __init__(
        self, transport_layer: Layer, connection_id: int, transport_name: str = "tcp"
    ) -> None:
        self.layer = transport_layer
        self.connection_id = connection_id
        self.transport_name = transport_name  # "tcp", or "tls" once its handshake is done
        self.stream: asyncio.Transport | None = None
        self.flow: Flow | None = None
        self.framer = StreamFramer(
            transport_layer.settings.max_message_bytes,
            transport_layer.settings.max_stream_buffer_bytes,
        )
        self.last_activity = 0.0
        self.pending: list[bytes] = []  # outgoing data while an outbound connect is under way
        self.peer_names: tuple[str, ...] = ()  # TLS: what the peer's certificate names
        self.connected = asyncio.Event()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        stream = cast(asyncio.Transport, transport)
        self.stream = stream
        peer = transport.get_extra_info("peername")
        local = transport.get_extra_info("sockname")
        self.flow = Flow(
            self.transport_name, peer_address(peer), peer_address(local), self.connection_id
        )
        if self.transport_name == "tls":
            self.peer_names = certificate_names(transport.get_extra_info("peercert"))
        self.last_activity = self.layer.loop_time()
        self.layer.register_connection(self)
        for data in self.pending:
            stream.write(data)
        self.pending.clear()
        self.connected.set()

    def data_received(self, data: bytes) -> None:
        assert self.flow is not None and self.stream is not None
        self.last_activity = self.layer.loop_time()
        try:
            items = self.framer.feed(data)
        except SipParseError as error:
            # Framing is lost for good: answer if we can, then close (§18.3).
            self.layer.stream_errors += 1
            self.layer.on_stream_error(error, self.flow, data[:2048])
            self.stream.close()
            return
        for item in items:
            if isinstance(item, KeepAlive):
                self.stream.write(b"\r\n")  # RFC 5626 §4.4.1 pong
                continue
            self.layer.stream_messages += 1
            self.layer.on_message(item, self.flow)

    def connection_lost(self, exc: Exception | None) -> None:
        self.layer.forget_connection(self)
        self.connected.set()

    def send(self, data: bytes) -> None:
        self.last_activity = self.layer.loop_time()
        if self.stream is None:
            if sum(map(len, self.pending)) + len(data) <= _MAX_PENDING_CONNECT_BYTES:
                self.pending.append(data)
            return
        if self.stream.is_closing():
            return
        self.stream.write(data)
