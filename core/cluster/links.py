"""The sockets between pbxtui's processes: one SOCK_SEQPACKET socketpair per pair of them.

The asyncio layer of the cluster (`core/cluster/changes.py` decides what travels). A message is a
tuple of plain values: a SIP message to handle, a binding that changed, an event for the
console; messages travel pickled, in batches. Pickle is safe here because the sockets are
unnamed socketpairs, inherited or passed over one another (SCM_RIGHTS); nothing outside our
own processes can reach them. SEQPACKET keeps message boundaries and, unlike a datagram
socketpair, reports a peer that died as end of file.

Sending never blocks: when a peer's buffer is full the batch is dropped and counted, as UDP
would lose it (a forwarded SIP request is retransmitted by its sender). The buffers are
enlarged so that bursts fit.
"""

from __future__ import annotations

import array
import asyncio
import contextlib
import logging
import pickle
import socket
from collections.abc import Callable
from typing import Any

from core.net.transport import enlarge_buffer

log = logging.getLogger("pbxtui.links")

LINK_BUFFER_BYTES = 4 * 1024 * 1024
MAX_LINK_MESSAGE = 512 * 1024  # one batch: a flush is forced past FLUSH_BYTES of SIP data
FLUSH_BYTES = 64 * 1024
MAX_FDS_PER_MESSAGE = 16
_ANCILLARY_SPACE = socket.CMSG_SPACE(MAX_FDS_PER_MESSAGE * array.array("i").itemsize)
READS_PER_TURN = 64  # batches read per wake-up before other callbacks run

Message = tuple[Any, ...]
MessageHandler = Callable[[int, Message, list[int]], None]  # (peer, message, passed fds)
LostHandler = Callable[[int], None]


def link_pair() -> tuple[socket.socket, socket.socket]:
    """A new pair of connected link sockets, buffers enlarged."""
    first, second = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    for sock in (first, second):
        enlarge_buffer(sock, LINK_BUFFER_BYTES)
        enlarge_buffer(sock, LINK_BUFFER_BYTES, send=True)
    return first, second


def receive_blocking(sock: socket.socket, timeout: float) -> tuple[Message, list[int]]:
    """One message, waiting at most `timeout` seconds (a worker's first message, before its
    event loop runs). Raises TimeoutError, or EOFError when the peer is gone."""
    sock.settimeout(timeout)
    try:
        data, ancillary, _flags, _address = sock.recvmsg(MAX_LINK_MESSAGE, _ANCILLARY_SPACE)
    finally:
        sock.setblocking(False)
    if not data:
        raise EOFError("the other process closed the link")
    [message] = pickle.loads(data)
    return message, _passed_fds(ancillary)


def _unheard(peer: int, message: Message, fds: list[int]) -> None:
    log.warning("message %r from process %d before anyone listened", message[:1], peer)
    for fd in fds:
        socket.close(fd)


def _no_loss_heard(peer: int) -> None:
    log.warning("link to process %d lost before anyone listened", peer)


def _passed_fds(ancillary: list[tuple[int, int, bytes]]) -> list[int]:
    fds = array.array("i")
    for level, kind, data in ancillary:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            fds.frombytes(data[: len(data) - (len(data) % fds.itemsize)])
    return list(fds)


class Links:
    """This process's links to the others, by process number (0 is the main process).

    Messages for a peer are batched until the end of the loop turn (`send` only queues):
    one pickle, one system call and one wake-up of the peer for all of them, instead of one
    each, which at a few messages per REGISTER was most of what the cluster cost.
    """

    def __init__(
        self, on_message: MessageHandler = _unheard, on_lost: LostHandler = _no_loss_heard
    ) -> None:
        self.on_message = on_message
        self.on_lost = on_lost
        self._socks: dict[int, socket.socket] = {}
        self._pending: dict[int, list[Message]] = {}
        self._pending_bytes: dict[int, int] = {}
        self._flush_scheduled = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self.received = 0
        self.dropped = 0  # a peer's buffer was full or the peer was gone

    def listen(self, on_message: MessageHandler, on_lost: LostHandler) -> None:
        """Who handles what arrives, and a peer that went away. Links send from the start;
        nothing is read from them before this (a worker's link to main waits in its socket
        until the worker's core is built)."""
        self.on_message = on_message
        self.on_lost = on_lost

    def __contains__(self, peer: object) -> bool:
        return peer in self._socks

    def attach(self, peer: int, sock: socket.socket, *, read: bool = True) -> None:
        """Use `sock` for `peer` from now on (a restarted peer gets a new link). `read`
        False: send at once, but leave what arrives in the socket until `read(peer)`."""
        self.detach(peer)
        sock.setblocking(False)
        self._socks[peer] = sock
        self._pending[peer] = []
        self._pending_bytes[peer] = 0
        if self._loop is None:
            self._loop = asyncio.get_running_loop()
        if read:
            self.read(peer)

    def read(self, peer: int) -> None:
        """Start handling what `peer` sends."""
        sock = self._socks[peer]
        assert self._loop is not None
        self._loop.add_reader(sock.fileno(), self._readable, peer, sock)

    def detach(self, peer: int) -> None:
        sock = self._socks.pop(peer, None)
        if sock is None:
            return
        self.dropped += len(self._pending.pop(peer, ()))
        self._pending_bytes.pop(peer, None)
        if self._loop is not None and not self._loop.is_closed():
            with contextlib.suppress(Exception):
                self._loop.remove_reader(sock.fileno())
        sock.close()

    def close(self) -> None:
        self.flush()
        for peer in list(self._socks):
            self.detach(peer)

    def send(self, peer: int, message: Message, fds: list[int] | None = None) -> bool:
        """Queue `message` for `peer` (sent at the end of this loop turn); False (and counted)
        when there is no link to it. Messages passing descriptors go at once, in order."""
        pending = self._pending.get(peer)
        if pending is None:
            self.dropped += 1
            return False
        pending.append(message)
        if fds:
            return self._send_now(peer, fds)
        if message[0] == "sip":
            size = self._pending_bytes[peer] + len(message[1])
            self._pending_bytes[peer] = size
            if size >= FLUSH_BYTES:
                return self._send_now(peer, None)
        self._schedule_flush()
        return True

    def broadcast(self, message: Message, *, skip: int | None = None) -> None:
        """Queue `message` for every peer but `skip`."""
        for peer, pending in self._pending.items():
            if peer != skip:
                pending.append(message)
        self._schedule_flush()

    def _schedule_flush(self) -> None:
        if not self._flush_scheduled and self._loop is not None:
            self._flush_scheduled = True
            self._loop.call_soon(self.flush)

    def flush(self) -> None:
        """Send what is queued, one batch per peer."""
        self._flush_scheduled = False
        for peer, pending in self._pending.items():
            if pending:
                self._send_now(peer, None)

    def _send_now(self, peer: int, fds: list[int] | None) -> bool:
        batch = self._pending[peer]
        self._pending[peer] = []
        self._pending_bytes[peer] = 0
        sock = self._socks[peer]
        data = pickle.dumps(batch, protocol=pickle.HIGHEST_PROTOCOL)
        try:
            if fds:
                socket.send_fds(sock, [data], fds)
            else:
                sock.send(data)
        except OSError as error:
            self.dropped += len(batch)
            if not isinstance(error, BlockingIOError):
                log.debug("link to process %d: %s", peer, error)
            return False
        return True

    def _readable(self, peer: int, sock: socket.socket) -> None:
        on_message = self.on_message
        for _ in range(READS_PER_TURN):
            try:
                data, ancillary, _flags, _address = sock.recvmsg(MAX_LINK_MESSAGE, _ANCILLARY_SPACE)
            except BlockingIOError:
                return
            except OSError as error:
                log.debug("link to process %d: %s", peer, error)
                data, ancillary = b"", []
            if not data:
                if self._socks.get(peer) is sock:
                    self.detach(peer)
                    self.on_lost(peer)
                return
            fds = _passed_fds(ancillary) if ancillary else []
            try:
                batch = pickle.loads(data)
            except Exception:
                log.exception("unreadable message from process %d", peer)
                continue
            self.received += len(batch)
            last = len(batch) - 1  # descriptors belong to a batch's last message
            for position, message in enumerate(batch):
                try:
                    on_message(peer, message, fds if position == last else [])
                except Exception:
                    # One bad message must not stop the link: the rest still arrive.
                    log.exception("handling %r from process %d failed", message[:1], peer)
