"""UDP port pairs for the relay: an even port for RTP and the odd one above it for RTCP
(RFC 3550 §11), from a configured range, bound non-blocking and read by the event loop.

The range is the bound on everything the relay holds: a pair per side per media stream, so
`(port_max - port_min) / 4` two-party audio streams at most. Ports are handed out in rotation
(a freed pair goes to the back of the queue), so a late packet of a finished call does not
land in the next call on the same port. A port another program holds is skipped and tried
again later.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections import deque
from collections.abc import Callable
from typing import Any

RECEIVE_BUFFER_BYTES = 1 << 20  # absorbs event-loop stalls (a UI redraw) at a few hundred calls


def family_of(address: str) -> int:
    """The socket family of an IP address literal (IPv6 ones hold a colon)."""
    return socket.AF_INET6 if ":" in address else socket.AF_INET


class PortsExhausted(Exception):
    """No free pair in the range: the call goes without a relay, or is refused."""


class PortPairs:
    """Binds and releases (RTP, RTCP) socket pairs on `host` within [port_min, port_max]."""

    def __init__(self, host: str, port_min: int, port_max: int) -> None:
        if not 0 < port_min < port_max <= 65_535:
            raise ValueError("media port range must be 1-65535, min below max")
        self.host = host
        self.family = family_of(host)
        first = port_min + (port_min % 2)
        self._free: deque[int] = deque(range(first, port_max, 2))
        self.capacity = len(self._free)

    @property
    def free(self) -> int:
        return len(self._free)

    def acquire(self) -> tuple[socket.socket, socket.socket]:
        """A bound pair; raises `PortsExhausted` when every port in the range is taken."""
        for _ in range(len(self._free)):
            port = self._free.popleft()
            pair = self._bind(port)
            if pair is not None:
                return pair
            self._free.append(port)  # someone else holds it now; maybe not later
        raise PortsExhausted("no free media ports")

    def release(self, rtp: socket.socket, rtcp: socket.socket) -> None:
        port = rtp.getsockname()[1]
        rtp.close()
        rtcp.close()
        self._free.append(port)

    def _bind(self, port: int) -> tuple[socket.socket, socket.socket] | None:
        bound: list[socket.socket] = []
        for number in (port, port + 1):
            sock = socket.socket(self.family, socket.SOCK_DGRAM)
            try:
                sock.setblocking(False)
                with contextlib.suppress(OSError):
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RECEIVE_BUFFER_BYTES)
                if self.family == socket.AF_INET6:  # "::" must not take the IPv4 port too
                    sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
                sock.bind((self.host, number))
            except OSError:
                sock.close()
                for other in bound:
                    other.close()
                return None
            bound.append(sock)
        return bound[0], bound[1]


class Readers:
    """Registers sockets with the running loop's selector: `add_reader` calls back with the
    socket readable, with no transport or protocol object per datagram in between."""

    def __init__(self, loop: asyncio.AbstractEventLoop | None = None) -> None:
        self._loop = loop

    def watch(self, sock: socket.socket, callback: Callable[[], None]) -> None:
        loop = self._loop or asyncio.get_running_loop()
        self._loop = loop
        loop.add_reader(sock.fileno(), callback)

    def unwatch(self, sock: socket.socket) -> None:
        # Held as Any: typeshed says remove_reader returns a bool, uvloop's (the workers')
        # returns None, and compiled code checks the declared type even of a result it drops.
        loop: Any = self._loop
        if loop is not None and sock.fileno() >= 0:
            loop.remove_reader(sock.fileno())
