"""The thin asyncio layer: UDP, TCP and TLS sockets in, bytes and Flows out (RFC 3261 §18).

Nothing here understands SIP beyond framing a TCP stream. Every received message is handed
to one callback, `on_message(data, flow)`, synchronously; every send is `send(data, flow)`,
non-blocking. All buffers are bounded: datagram size, per-connection stream buffer, the
number of TCP connections, and outgoing data queued on a connection still being opened. TLS
(`core/net/tls.py`) runs its handshake first, then is a stream connection like TCP.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import itertools
import logging
import socket
from collections.abc import Callable

from core.net.endpoints import StreamConnection, UdpEndpoint
from core.net.flow import Flow
from core.net.identity import is_ip_literal
from core.net.intake import (
    UDP_BATCH,
    DatagramIntake,
    DatagramSender,
    FaultHandler,
    peer_address,
    starts_new_work,
)
from core.net.tls import TlsLayer
from core.settings import ListenAddress, TransportSettings
from core.sip.bounded import make_room
from core.sip.errors import SipParseError

log = logging.getLogger("pbxtui.transport")

# UDP_BATCH and starts_new_work live with the intake (core/net/intake.py), named here too.
__all__ = ["UDP_BATCH", "ListenError", "Transport", "enlarge_buffer", "starts_new_work"]

MessageHandler = Callable[[bytes, Flow], None]
StreamErrorHandler = Callable[[SipParseError, Flow, bytes], None]
_MAX_PENDING_LOOKUPS = 256  # UDP sends waiting for a host name's DNS answer


def _literal(host: str, known: dict[str, bool]) -> bool:
    """Is `host` an IP address (sendto needs no DNS)? Memoised, bounded: called per send."""
    answer = known.get(host)
    if answer is None:
        make_room(known, 4_096)  # one per destination host, the oldest eighth dropped when full
        answer = known[host] = is_ip_literal(host)
    return answer


class ListenError(OSError):
    """A listen address could not be bound (taken, not local, no permission)."""


def _family(host: str) -> socket.AddressFamily:
    return socket.AF_INET6 if ":" in host else socket.AF_INET


def _bound_socket(address: ListenAddress, kind: socket.SocketKind) -> socket.socket:
    """A non-blocking socket bound to `address` (IPv6 sockets take IPv6 only, so a v4 and a
    v6 listener on one port coexist; a stream socket may rebind a port in TIME_WAIT)."""
    family = _family(address.host)
    sock = socket.socket(family, kind)
    try:
        if kind == socket.SOCK_STREAM:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.bind((address.host, address.port))
    except OSError:
        sock.close()
        raise
    sock.setblocking(False)
    return sock


def enlarge_buffer(sock: socket.socket, size: int, *, send: bool = False) -> int:
    """Raise SO_RCVBUF (or SO_SNDBUF) towards `size`: the kernel buffer absorbs short
    event-loop stalls. Also used for the links between worker processes (core/cluster/links.py).

    The *FORCE option passes net.core.rmem_max / wmem_max when we have CAP_NET_ADMIN (root on a
    VPS); otherwise the plain option is capped silently by the kernel. Returns what the kernel
    granted.
    """
    option = socket.SO_SNDBUF if send else socket.SO_RCVBUF
    force = getattr(socket, "SO_SNDBUFFORCE" if send else "SO_RCVBUFFORCE", None)
    if force is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, force, size)
            return sock.getsockopt(socket.SOL_SOCKET, option)
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, option, size)
    return sock.getsockopt(socket.SOL_SOCKET, option)


class Transport:
    """Owns every socket. `on_message` is called for each datagram / framed TCP message."""

    def __init__(
        self,
        settings: TransportSettings,
        on_message: MessageHandler,
        on_stream_error: StreamErrorHandler | None = None,
        on_forwarded: MessageHandler | None = None,
        tls: TlsLayer | None = None,
    ) -> None:
        self.settings = settings
        self.tls = tls
        self.on_message = on_message
        # Messages another worker process read and checked (core/cluster/changes.py): queued
        # and shed
        # like datagrams, then handed here instead of to `on_message`.
        self.on_forwarded = on_forwarded or on_message
        self.on_stream_error = on_stream_error or (lambda error, flow, data: None)
        self._udp: dict[tuple[str, int], UdpEndpoint] = {}
        self._udp_by_family: dict[socket.AddressFamily, UdpEndpoint] = {}
        # Bound but not read here (the main process when worker processes read them).
        self._raw_udp: dict[tuple[str, int], socket.socket] = {}
        self._raw_udp_by_family: dict[socket.AddressFamily, socket.socket] = {}
        self._servers: list[asyncio.base_events.Server] = []
        self._tls_listeners: list[socket.socket] = []
        self._tls_accepts: list[asyncio.Task[None]] = []
        self._connections: dict[int, StreamConnection] = {}
        self._connection_by_peer: dict[tuple[str, int], StreamConnection] = {}
        self._connections_by_ip: dict[str, int] = {}
        self._pending_connects_by_ip: dict[str, int] = {}
        # Asked at accept: is this source banned? (set by the Pbx to the security layer's view)
        self.refuse_source: Callable[[str], bool] = lambda ip: False
        # Asked of the address a host name resolved to, before sending there (set by the Pbx).
        self.refuse_destination: Callable[[str, int], bool] = lambda ip, port: False
        self.refused_sends = 0
        self._literal_hosts: dict[str, bool] = {}
        # UDP sends to an IP address from a socket read here (compiled); the rest is `send`'s.
        self.udp_out = DatagramSender(self.send, self._literal_hosts)
        self._lookups: set[asyncio.Future[None]] = set()
        self._ids = itertools.count(1)
        self._sweeper: asyncio.Task[None] | None = None
        self._connect_tasks: set[asyncio.Future[None]] = set()
        self._loop: asyncio.AbstractEventLoop | None = None
        self.bound: list[ListenAddress] = []
        self.udp_receive_buffer = 0
        # The UDP backlog and its counters (compiled: every datagram crosses it).
        self.intake = DatagramIntake(
            settings.max_message_bytes,
            settings.udp_backlog_messages,
            settings.udp_shed_after_seconds,
            on_message,
            self.on_forwarded,
        )
        # counters for the header strip and benchmarks (the UDP ones are the intake's)
        self.stream_messages = 0
        self._sent_messages = 0  # besides the fast lane's (udp_out)
        self.send_errors = 0
        self.stream_errors = 0
        self.refused_connections = 0

    def loop_time(self) -> float:
        assert self._loop is not None
        return self._loop.time()

    @property
    def connection_count(self) -> int:
        return len(self._connections)

    # -- UDP intake -----------------------------------------------------------------------
    @property
    def sent_messages(self) -> int:
        return self._sent_messages + self.udp_out.sent

    @property
    def received_messages(self) -> int:
        return self.intake.received + self.stream_messages

    @property
    def oversized(self) -> int:
        return self.intake.oversized

    @property
    def backlog_drops(self) -> int:
        return self.intake.backlog_drops

    @backlog_drops.setter
    def backlog_drops(self, value: int) -> None:
        self.intake.backlog_drops = value

    @property
    def shed_requests(self) -> int:
        """New requests dropped on arrival: the backlog had waited too long."""
        return self.intake.shed_requests

    @shed_requests.setter
    def shed_requests(self, value: int) -> None:
        self.intake.shed_requests = value

    def fast_lane(
        self,
        handler: MessageHandler | None,
        after_batch: Callable[[], None] | None = None,
        fault: FaultHandler | None = None,
    ) -> None:
        """While the server runs, datagrams go straight to `handler` instead of `on_message`
        (core/net/intake.py); None restores `on_message`."""
        self.intake.fast_lane(handler, after_batch, fault)

    def enqueue_datagram(self, data: bytes, flow: Flow, forwarded: bool = False) -> None:
        """Queue a datagram for `on_message`, handled a few at a time between other work.

        The loop reads up to 32 datagrams per turn. Handled as each is read, with the server
        saturated, a turn lasts ~10 ms, and everything else on the loop (the console's
        keypresses, which take several turns each, and the transaction timers) waits behind it.
        Handled in batches of UDP_BATCH, other callbacks get a turn every ~2 ms. Past
        `udp_backlog_messages` waiting, a datagram is dropped; once the oldest has waited
        `udp_shed_after_seconds`, so is a request that would start new work.
        """
        self.intake.enqueue(data, flow, forwarded)

    async def start(self, listen: tuple[ListenAddress, ...], *, read_udp: bool = True) -> None:
        """Bind every listen address; on any failure close what was bound and raise ListenError.

        `read_udp` False: the UDP sockets are bound and used for sending, but worker processes
        read them (`udp_sockets` hands them over; see core/cluster/pool.py)."""
        self._loop = asyncio.get_running_loop()
        self.intake.attach(self._loop)
        try:
            for address in listen:
                if address.transport == "udp":
                    await self._listen_udp(address, read_udp)
                elif address.transport in ("tcp", "tls"):
                    await self._listen_tcp(address)
                else:
                    raise ListenError(errno.EINVAL, f"unsupported transport {address.transport!r}")
        except OSError as error:
            await self.stop()
            if isinstance(error, ListenError):
                raise
            reason = (
                "address already in use"
                if error.errno == errno.EADDRINUSE
                else (error.strerror or str(error))
            )
            raise ListenError(error.errno or 0, f"cannot listen on {address}: {reason}") from None
        self._sweeper = asyncio.create_task(self._sweep_idle(), name="tcp-idle-sweeper")

    async def _listen_udp(self, address: ListenAddress, read: bool) -> None:
        assert self._loop is not None
        sock = _bound_socket(address, socket.SOCK_DGRAM)
        self.udp_receive_buffer = enlarge_buffer(sock, self.settings.udp_receive_buffer_bytes)
        await self._use_udp(sock, read, address)

    async def _use_udp(
        self, sock: socket.socket, read: bool, address: ListenAddress | None = None
    ) -> None:
        """A bound UDP socket: read here, or (main, beside worker processes) only sent from."""
        assert self._loop is not None
        local = peer_address(sock.getsockname())
        if read:
            endpoint = UdpEndpoint(self, local, self.intake.receiver(local))
            await self._loop.create_datagram_endpoint(lambda: endpoint, sock=sock)
            self._udp[local] = endpoint
            self.udp_out.sockets[local] = endpoint.udp
            self._udp_by_family.setdefault(sock.family, endpoint)
        else:
            self._raw_udp[local] = sock
            self._raw_udp_by_family.setdefault(sock.family, sock)
        advertise = (address.advertise_host, address.advertise_port) if address else ("", 0)
        self.bound.append(ListenAddress("udp", *local, *advertise))

    @property
    def udp_sockets(self) -> list[socket.socket]:
        """The UDP sockets bound but not read here, in listen order (for worker processes)."""
        return list(self._raw_udp.values())

    async def adopt_udp(self, socks: list[socket.socket]) -> None:
        """Read UDP sockets another process bound (a worker process; core/cluster/pool.py)."""
        self._loop = asyncio.get_running_loop()
        self.intake.attach(self._loop)
        for sock in socks:
            sock.setblocking(False)
            await self._use_udp(sock, True)

    async def _listen_tcp(self, address: ListenAddress) -> None:
        assert self._loop is not None
        sock = _bound_socket(address, socket.SOCK_STREAM)
        local = peer_address(sock.getsockname())
        if address.transport == "tls":
            self._listen_tls(sock)
        else:
            server = await self._loop.create_server(self._accept, sock=sock, backlog=1024)
            self._servers.append(server)
        self.bound.append(
            ListenAddress(address.transport, *local, address.advertise_host, address.advertise_port)
        )

    def _accept(self) -> asyncio.Protocol:
        return StreamConnection(self, next(self._ids))

    def _listen_tls(self, sock: socket.socket) -> None:
        """TLS accepts in a loop of its own (core/net/tls.py: the handshake comes first)."""
        if self.tls is None:
            sock.close()
            raise ListenError(errno.EINVAL, "a tls listener needs [tls] certificate and key")
        sock.listen(1024)
        self._tls_listeners.append(sock)
        accept = self.tls.serve(
            sock,
            lambda: StreamConnection(self, next(self._ids), "tls"),
            self._refuse_tls,
            self._refused,
        )
        self._tls_accepts.append(accept)

    def _refuse_tls(self, ip: str) -> bool:
        """Asked as a TLS connection is accepted, before any TLS work: a banned source
        (`refuse_source`), or one at the connection caps, is reset at once. Handshakes under
        way count towards the caps like the connections that are up, so TLS and TCP share
        one limit per source."""
        tls = self.tls
        assert tls is not None
        settings = self.settings
        return (
            len(self._connections) + tls.gate.under_way >= settings.max_tcp_connections
            or self._connections_by_ip.get(ip, 0) + tls.gate.under_way_from(ip)
            >= settings.max_tcp_connections_per_source
            or self.refuse_source(ip)
        )

    def _refused(self) -> None:
        self.refused_connections += 1

    def register_connection(self, connection: StreamConnection) -> None:
        """A connection is up (accepted or ours): refused past the total cap, past the cap
        per source address, or from a banned source (`refuse_source`)."""
        assert connection.flow is not None and connection.stream is not None
        ip = connection.flow.remote[0]
        per_source = self._connections_by_ip.get(ip, 0)
        if (
            len(self._connections) >= self.settings.max_tcp_connections
            or per_source >= self.settings.max_tcp_connections_per_source
            or self.refuse_source(ip)
        ):
            self.refused_connections += 1
            connection.flow = None  # never registered: nothing to forget
            connection.stream.abort()
            return
        self._connections[connection.connection_id] = connection
        self._connections_by_ip[ip] = per_source + 1
        self._connection_by_peer[connection.flow.remote] = connection

    def forget_connection(self, connection: StreamConnection) -> None:
        if self._connections.pop(connection.connection_id, None) is None:
            return
        if connection.flow is not None:
            ip = connection.flow.remote[0]
            left = self._connections_by_ip.get(ip, 1) - 1
            if left > 0:
                self._connections_by_ip[ip] = left
            else:
                self._connections_by_ip.pop(ip, None)
            current = self._connection_by_peer.get(connection.flow.remote)
            if current is connection:
                del self._connection_by_peer[connection.flow.remote]

    def close_connections_from(self, source: Callable[[str], bool]) -> int:
        """Close every TCP and TLS connection whose peer address `source` accepts (a source
        that was just banned); how many were closed."""
        closing = [
            connection
            for connection in self._connections.values()
            if connection.flow is not None and source(connection.flow.remote[0])
        ]
        for connection in closing:
            if connection.stream is not None:
                connection.stream.abort()
        return len(closing)

    def peer_names(self, flow: Flow) -> tuple[str, ...]:
        """The names the verified certificate of a TLS flow's peer carries (none: no
        certificate, or not TLS)."""
        if flow.connection_id is None:
            return ()
        connection = self._connections.get(flow.connection_id)
        return connection.peer_names if connection is not None else ()

    def is_open(self, connection_id: int) -> bool:
        return connection_id in self._connections

    def send(self, data: bytes, flow: Flow) -> bool:
        """Send without blocking. Returns False when the data could not be handed to a socket."""
        if flow.transport == "udp":
            if not _literal(flow.remote[0], self._literal_hosts):
                return self._send_after_lookup(data, flow)
            endpoint = self._udp.get(flow.local) or self._udp_by_family.get(_family(flow.remote[0]))
            if endpoint is None or endpoint.udp is None:
                return self._send_raw(data, flow)
            endpoint.udp.sendto(data, flow.remote)
            self._sent_messages += 1
            return True
        if flow.transport in ("tcp", "tls"):
            connection = None
            if flow.connection_id is not None:
                connection = self._connections.get(flow.connection_id)
            if connection is None:
                connection = self._connection_by_peer.get(flow.remote)
                if connection is not None and connection.transport_name != flow.transport:
                    connection = None
            if connection is None:
                connection = self._connect(flow.remote, flow.transport)
                if connection is None:
                    self.send_errors += 1
                    return False
            connection.send(data)
            self._sent_messages += 1
            return True
        self.send_errors += 1
        return False

    def _send_after_lookup(self, data: bytes, flow: Flow) -> bool:
        """UDP to a host name: sendto() would resolve it on the event loop, blocking every
        call on a slow DNS server. The name is looked up in the loop's resolver thread and
        the datagram sent when the answer comes; at most _MAX_PENDING_LOOKUPS wait."""
        loop = self._loop
        if loop is None or len(self._lookups) >= _MAX_PENDING_LOOKUPS:
            self.send_errors += 1
            return False
        host, port = flow.remote

        async def lookup_and_send() -> None:
            try:
                infos = await asyncio.wait_for(
                    loop.getaddrinfo(host, port, type=socket.SOCK_DGRAM), timeout=5.0
                )
            except (OSError, TimeoutError, UnicodeError) as error:
                self.send_errors += 1
                log.debug("cannot resolve %s: %s", host, error)
                return
            address = infos[0][4]
            ip = peer_address(address)[0]
            if self.refuse_destination(ip, port):
                # A name must not launder a destination refused by address (a carrier's
                # gateway, our own socket): core/security/destinations.py.
                self.refused_sends += 1
                log.debug("not sending to %s: it resolves to a refused address %s", host, ip)
                return
            self.send(data, Flow("udp", (ip, port), flow.local, flow.connection_id))

        task = asyncio.ensure_future(lookup_and_send())
        self._lookups.add(task)
        task.add_done_callback(self._lookups.discard)
        return True

    def _send_raw(self, data: bytes, flow: Flow) -> bool:
        """UDP from a socket this process does not read (main, beside worker processes)."""
        sock = self._raw_udp.get(flow.local) or self._raw_udp_by_family.get(_family(flow.remote[0]))
        if sock is None:
            self.send_errors += 1
            return False
        try:
            sock.sendto(data, flow.remote)
        except OSError:
            self.send_errors += 1
            return False
        self._sent_messages += 1
        return True

    def _connect(self, remote: tuple[str, int], transport: str = "tcp") -> StreamConnection | None:
        """Open a TCP or TLS connection for a send (§18.2.2 when the original one is gone).
        TLS verifies the server's certificate and name (`core/net/tls.py`)."""
        # Connections we open count against the same caps as those we accept, pending ones
        # included: a flood of responses naming new TCP targets cannot open them without end.
        ip = remote[0]
        pending = self._pending_connects_by_ip.get(ip, 0)
        tls = self.tls
        if transport == "tls" and tls is None:
            return None
        if (
            self._loop is None
            or len(self._connections) + len(self._connect_tasks)
            >= self.settings.max_tcp_connections
            or self._connections_by_ip.get(ip, 0) + pending
            >= self.settings.max_tcp_connections_per_source
        ):
            self.refused_connections += 1
            return None
        connection = StreamConnection(self, next(self._ids), transport)
        self._pending_connects_by_ip[ip] = pending + 1

        async def connect() -> None:
            loop = self._loop
            assert loop is not None
            secure = tls if transport == "tls" else None
            try:
                host = remote[0]
                if not _literal(host, self._literal_hosts):
                    # Resolved here, not inside create_connection, so the address can be
                    # checked like any other destination before anything is sent.
                    infos = await asyncio.wait_for(
                        loop.getaddrinfo(host, remote[1], type=socket.SOCK_STREAM),
                        timeout=5.0,
                    )
                    host = peer_address(infos[0][4])[0]
                    if self.refuse_destination(host, remote[1]):
                        self.refused_sends += 1
                        return
                if secure is None:
                    opening = loop.create_connection(lambda: connection, host, remote[1])
                else:
                    # The name checked is the gateway's (RFC 5922 §7.2), not the address.
                    opening = loop.create_connection(
                        lambda: connection,
                        host,
                        remote[1],
                        ssl=secure.client,
                        server_hostname=secure.server_name(remote),
                        ssl_handshake_timeout=secure.settings.handshake_timeout,
                    )
                limit = 5.0 + (secure.settings.handshake_timeout if secure else 0.0)
                await asyncio.wait_for(opening, timeout=limit)
            except (OSError, TimeoutError, UnicodeError) as error:
                self.send_errors += 1
                if secure is not None:
                    secure.connect_failed(remote, error)
                log.debug("%s connect to %s failed: %s", transport, remote, error)
            finally:
                left = self._pending_connects_by_ip.get(ip, 1) - 1
                if left > 0:
                    self._pending_connects_by_ip[ip] = left
                else:
                    self._pending_connects_by_ip.pop(ip, None)

        task = asyncio.ensure_future(connect())
        self._connect_tasks.add(task)
        task.add_done_callback(self._connect_tasks.discard)
        return connection

    async def _sweep_idle(self) -> None:
        """Close TCP connections idle longer than tcp_idle_seconds (RFC 5626 peers ping)."""
        interval = min(10.0, max(0.5, self.settings.tcp_idle_seconds / 4))
        while True:
            await asyncio.sleep(interval)
            now = self.loop_time()
            limit = self.settings.tcp_idle_seconds
            for connection in list(self._connections.values()):
                if now - connection.last_activity > limit and connection.stream is not None:
                    connection.stream.close()

    async def stop(self) -> None:
        self.intake.backlog.clear()  # nothing is handled once the server stops
        self.udp_out.sockets.clear()
        if self._sweeper is not None:
            self._sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sweeper
            self._sweeper = None
        for server in self._servers:
            server.close()
        for accept in self._tls_accepts:
            accept.cancel()
        for accept in self._tls_accepts:
            with contextlib.suppress(asyncio.CancelledError):
                await accept
        self._tls_accepts.clear()
        for sock in self._tls_listeners:
            sock.close()
        self._tls_listeners.clear()
        if self.tls is not None:
            await self.tls.close()
        for connection in list(self._connections.values()):
            if connection.stream is not None:
                connection.stream.abort()
        for server in self._servers:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(server.wait_closed(), 1.0)
        self._servers.clear()
        for endpoint in self._udp.values():
            if endpoint.udp is not None:
                endpoint.udp.close()
        self._udp.clear()
        self._udp_by_family.clear()
        for sock in self._raw_udp.values():
            sock.close()
        self._raw_udp.clear()
        self._raw_udp_by_family.clear()
        for task in list(self._lookups):
            task.cancel()
        self._connections.clear()
        self._connection_by_peer.clear()
        self._connections_by_ip.clear()
