"""A SIP endpoint written byte by byte on its own UDP socket: phone, carrier, gateway.

The proxy and trunk tests stage what SIPp cannot do on cue (retransmissions on purpose,
forged requests, checking every header); both build their peers on this one base.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable

from core.pbx import Pbx
from core.sip.message import Message, Request, Response
from core.sip.parser import parse_message


class Inbox(asyncio.DatagramProtocol):
    """Every message the peer received, parsed, in order."""

    def __init__(self) -> None:
        self.messages: list[Message] = []
        self.arrived = asyncio.Event()

    def datagram_received(self, data: bytes, addr: tuple) -> None:
        self.messages.append(parse_message(data))
        self.arrived.set()


def is_message(message: Message, what: str | int) -> bool:
    """Is `message` the request with method `what`, or the response with status `what`?"""
    if isinstance(what, int):
        return isinstance(message, Response) and message.status == what
    return isinstance(message, Request) and message.method == what


def label(message: Message) -> str:
    return message.method if isinstance(message, Request) else str(message.status)  # type: ignore[attr-defined]


class UdpPeer:
    """Sends text or messages to the Pbx and hands out what it received, in order."""

    def __init__(self, pbx: Pbx, ip: str = "127.0.0.1", name: str = "peer") -> None:
        bound = pbx.listening[0]
        self.server = (bound.host, bound.port)
        self.ip = ip
        self.name = name
        self.inbox = Inbox()
        self.transport: asyncio.DatagramTransport | None = None
        self.port = 0
        self.seen = 0  # messages already handed out by `expect`

    async def open(self) -> None:
        loop = asyncio.get_running_loop()
        self.transport, _ = await loop.create_datagram_endpoint(
            lambda: self.inbox, local_addr=(self.ip, 0)
        )
        self.port = self.transport.get_extra_info("sockname")[1]

    def close(self) -> None:
        assert self.transport is not None
        self.transport.close()

    def send(self, message: Message | str) -> None:
        assert self.transport is not None
        data = message.encode() if isinstance(message, str) else message.to_bytes()
        self.transport.sendto(data, self.server)

    async def expect(
        self, what: str | int, timeout: float = 3.0, where: Callable[[Message], bool] | None = None
    ) -> Message:
        """The next message received that is request `what` or a response with status `what`."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            inbox = self.inbox.messages
            for index in range(self.seen, len(inbox)):
                message = inbox[index]
                if is_message(message, what) and (where is None or where(message)):
                    self.seen = index + 1
                    return message
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise AssertionError(f"{self.name}: no {what} in {[label(m) for m in inbox]}")
            self.inbox.arrived.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.inbox.arrived.wait(), remaining)

    def received(self, what: str | int) -> list[Message]:
        return [message for message in self.inbox.messages if is_message(message, what)]
