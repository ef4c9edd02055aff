"""Small real-socket SIP clients for what SIPp can't express (garbage, stalls, floods).

They run on the test's event loop next to an in-process server, so waiting for an answer
never blocks the server.
"""

from __future__ import annotations

import asyncio
import secrets
import ssl

from core.sip.message import Response
from core.sip.parser import parse_message


def request_text(
    method: str,
    uri: str,
    *,
    local: tuple[str, int],
    from_user: str = "alice",
    to: str | None = None,
    domain: str = "pbx.test",
    call_id: str | None = None,
    cseq: int = 1,
    extra: str = "",
    body: str = "",
    user_agent: str = "pbxtui-tests",
    transport: str = "UDP",
    branch: str | None = None,
) -> str:
    """A well-formed request; tests break it on purpose where they need to."""
    branch = branch or "z9hG4bK" + secrets.token_hex(6)
    call_id = call_id or secrets.token_hex(8)
    to = to or f"<{uri}>"
    return (
        f"{method} {uri} SIP/2.0\r\n"
        f"Via: SIP/2.0/{transport} {local[0]}:{local[1]};branch={branch};rport\r\n"
        f"Max-Forwards: 70\r\n"
        f"From: <sip:{from_user}@{domain}>;tag={secrets.token_hex(4)}\r\n"
        f"To: {to}\r\n"
        f"Call-ID: {call_id}\r\n"
        f"CSeq: {cseq} {method}\r\n"
        f"Contact: <sip:{from_user}@{local[0]}:{local[1]}>\r\n"
        f"User-Agent: {user_agent}\r\n"
        f"{extra}"
        f"Content-Length: {len(body.encode())}\r\n\r\n{body}"
    )


class _Receiver(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.queue: asyncio.Queue[bytes] = asyncio.Queue()

    def datagram_received(self, data: bytes, addr: tuple) -> None:
        self.queue.put_nowait(data)


class UdpClient:
    def __init__(self, server: tuple[str, int]) -> None:
        self.server = server
        self.transport: asyncio.DatagramTransport | None = None
        self.receiver = _Receiver()
        self.local: tuple[str, int] = ("127.0.0.1", 0)

    async def open(self, local_ip: str = "127.0.0.1") -> UdpClient:
        loop = asyncio.get_running_loop()
        self.transport, _ = await loop.create_datagram_endpoint(
            lambda: self.receiver, local_addr=(local_ip, 0)
        )
        self.local = self.transport.get_extra_info("sockname")[:2]
        return self

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()

    async def __aenter__(self) -> UdpClient:
        return await self.open()

    async def __aexit__(self, *exc: object) -> None:
        self.close()

    def send(self, data: bytes | str) -> None:
        assert self.transport is not None
        self.transport.sendto(data.encode() if isinstance(data, str) else data, self.server)

    async def recv(self, timeout: float = 2.0) -> bytes | None:
        try:
            return await asyncio.wait_for(self.receiver.queue.get(), timeout)
        except TimeoutError:
            return None

    async def response(
        self, timeout: float = 2.0, skip_provisional: bool = True
    ) -> Response | None:
        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            remaining = deadline - asyncio.get_running_loop().time()
            if remaining <= 0:
                return None
            data = await self.recv(remaining)
            if data is None:
                return None
            message = parse_message(data)
            if isinstance(message, Response):
                if skip_provisional and message.status < 200:
                    continue
                return message

    async def ask(self, text: str, timeout: float = 2.0) -> Response | None:
        self.send(text)
        return await self.response(timeout)


class TcpClient:
    def __init__(self, server: tuple[str, int]) -> None:
        self.server = server
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None
        self.local: tuple[str, int] = ("127.0.0.1", 0)

    async def open(self) -> TcpClient:
        self.reader, self.writer = await asyncio.open_connection(*self.server)
        self.local = self.writer.get_extra_info("sockname")[:2]
        return self

    async def __aenter__(self) -> TcpClient:
        return await self.open()

    async def __aexit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()

    async def send(self, data: bytes | str) -> None:
        assert self.writer is not None
        self.writer.write(data.encode() if isinstance(data, str) else data)
        await self.writer.drain()

    async def read_message(self, timeout: float = 2.0) -> bytes | None:
        """One framed message (headers + Content-Length body), or None on timeout/EOF."""
        assert self.reader is not None
        try:
            head = await asyncio.wait_for(self.reader.readuntil(b"\r\n\r\n"), timeout)
        except (TimeoutError, asyncio.IncompleteReadError):
            return None
        length = 0
        for line in head.split(b"\r\n"):
            name, _, value = line.partition(b":")
            if name.strip().lower() in (b"content-length", b"l"):
                length = int(value.strip())
        body = await self.reader.readexactly(length) if length else b""
        return head + body

    async def ask(self, text: bytes | str, timeout: float = 2.0) -> Response | None:
        """Send a request, return the first final response (provisional ones skipped)."""
        await self.send(text)
        while True:
            data = await self.read_message(timeout)
            if data is None:
                return None
            message = parse_message(data)
            if isinstance(message, Response) and message.status >= 200:
                return message

    async def closed_by_peer(self, timeout: float = 2.0) -> bool:
        assert self.reader is not None
        try:
            data = await asyncio.wait_for(self.reader.read(65536), timeout)
        except TimeoutError:
            return False
        except ConnectionError:
            return True
        return data == b""


class TlsClient(TcpClient):
    """A phone's TLS connection: the same framing as TCP, over Python's ssl module."""

    def __init__(
        self,
        server: tuple[str, int],
        context: ssl.SSLContext,
        server_hostname: str = "pbx.test",
        local_ip: str | None = None,
    ) -> None:
        super().__init__(server)
        self.context = context
        self.server_hostname = server_hostname
        self.local_ip = local_ip

    async def open(self) -> TlsClient:
        self.reader, self.writer = await asyncio.open_connection(
            *self.server,
            ssl=self.context,
            server_hostname=self.server_hostname,
            local_addr=(self.local_ip, 0) if self.local_ip else None,
        )
        self.local = self.writer.get_extra_info("sockname")[:2]
        return self

    async def __aenter__(self) -> TlsClient:
        return await self.open()
