"""rtpengine driven over its ng control protocol: the relay for bigger boxes.

The ng protocol is one UDP datagram each way: `COOKIE SPACE BENCODED-DICT`. The cookie pairs
a reply with its request; rtpengine keeps recent replies by cookie, so a request sent again
with the same cookie (our retry when a datagram is lost) is answered again, not executed
twice. Commands used here: `offer` (call-id, from-tag, sdp) and `answer` (plus to-tag) return
the SDP rewritten to rtpengine's own ports; `delete` ends the call; `query` returns its
counters; `ping` answers `pong`. Flags ask for what the embedded relay does itself: ICE
removed, the origin and session connection replaced, and `strict-source`: once rtpengine has
learnt where a stream's media comes from, packets from anywhere else are dropped.

The same calls as `EmbeddedRelay` (core/media/relay.py), awaited: the exchange is a network
round trip. Every wait is bounded (`timeout` times `retries`); a reply that does not parse, or an
`error` result, raises `RtpEngineError`, and nothing else is raised.

rtpengine's replies are wire input like any SIP message: a reply to another request (a wrong
cookie) is ignored, bencode that does not parse or nests too deep is refused by the decoder
(core/media/bencode.py, bounded by the datagram's own size), and the SDP of an `offer` or
`answer` reply must itself be SDP we can read, of a sane size (`MAX_SDP`), before it replaces
what a phone sent: a broken or hostile rtpengine cannot put garbage in front of a phone.
"""

from __future__ import annotations

import asyncio
import os

from core.media.bencode import BencodeError, Encodable, Value, decode, encode
from core.media.sdp import SdpError, parse

MAX_PENDING = 4_096  # requests awaiting a reply; more are refused at once
MAX_SDP = 16_384  # an SDP from rtpengine above this is refused (a phone's is ~1 KiB)


class RtpEngineError(Exception):
    """rtpengine did not answer, or answered with an error."""


class RtpEngineRefused(RtpEngineError):
    """rtpengine answered `result: error`; `reason` is its `error-reason`."""

    def __init__(self, command: str, reason: str) -> None:
        super().__init__(f"rtpengine refused {command}: {reason}")
        self.reason = reason

    @property
    def unknown_call(self) -> bool:
        """The call is not (or no longer) there: deleted, or timed out by rtpengine."""
        return "unknown call" in self.reason.lower()


class _Control(asyncio.DatagramProtocol):
    def __init__(self, client: RtpEngine) -> None:
        self.client = client

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.client._reply(data)


class RtpEngine:
    """A client of one rtpengine at `address` (its `listen-ng`)."""

    def __init__(self, address: tuple[str, int], timeout: float = 0.5, retries: int = 3) -> None:
        self.address = address
        self.timeout = timeout
        self.retries = retries
        self._transport: asyncio.DatagramTransport | None = None
        self._pending: dict[bytes, asyncio.Future[dict[bytes, Value]]] = {}

    async def open(self) -> RtpEngine:
        loop = asyncio.get_running_loop()
        transport, _protocol = await loop.create_datagram_endpoint(
            lambda: _Control(self), remote_addr=self.address
        )
        self._transport = transport
        return self

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()
            self._transport = None
        for future in self._pending.values():
            if not future.done():
                future.set_exception(RtpEngineError("closed"))
        self._pending.clear()

    # -- the engine interface ------------------------------------------------------------
    async def offer(
        self, call_id: str, from_tag: str, sdp: bytes, source_ip: str, address: str, now: float
    ) -> bytes:
        reply = await self.command(
            "offer",
            {"call-id": call_id, "from-tag": from_tag, "sdp": sdp, **self._flags(source_ip)},
        )
        return _sdp_of(reply)

    async def answer(
        self,
        call_id: str,
        from_tag: str,
        to_tag: str,
        sdp: bytes,
        source_ip: str,
        address: str,
        now: float,
    ) -> bytes:
        fields: dict[str, Encodable] = {"call-id": call_id, "from-tag": from_tag, "to-tag": to_tag}
        reply = await self.command("answer", {**fields, "sdp": sdp, **self._flags(source_ip)})
        return _sdp_of(reply)

    async def delete(self, call_id: str) -> None:
        await self.command("delete", {"call-id": call_id, "flags": ["fatal"]})

    async def query(self, call_id: str) -> dict[bytes, Value]:
        return await self.command("query", {"call-id": call_id})

    async def ping(self) -> bool:
        reply = await self.command("ping", {})
        return reply.get(b"result") == b"pong"

    # -- the protocol ----------------------------------------------------------------------
    @staticmethod
    def _flags(source_ip: str) -> dict[str, Encodable]:
        family = "IP6" if ":" in source_ip else "IP4"
        return {
            "ICE": "remove",
            "replace": ["origin", "session-connection"],
            "received-from": [family, source_ip],
            # After learning a source, drop packets from any other (the RTP-bleed answer).
            "flags": ["strict-source"],
        }

    async def command(self, name: str, fields: dict[str, Encodable]) -> dict[bytes, Value]:
        """Send `name` with `fields`, retrying on silence; the reply's dictionary."""
        if self._transport is None:
            try:
                await self.open()
            except OSError as error:
                raise RtpEngineError(f"cannot reach rtpengine: {error}") from None
            assert self._transport is not None
        if len(self._pending) >= MAX_PENDING:
            raise RtpEngineError("too many requests waiting for rtpengine")
        cookie = os.urandom(8).hex().encode("ascii")
        datagram = cookie + b" " + encode({"command": name, **fields})
        future: asyncio.Future[dict[bytes, Value]] = asyncio.get_running_loop().create_future()
        self._pending[cookie] = future
        try:
            for _attempt in range(self.retries):
                self._transport.sendto(datagram)
                try:
                    reply = await asyncio.wait_for(asyncio.shield(future), self.timeout)
                except TimeoutError:
                    continue
                if reply.get(b"result") == b"error":
                    reason = reply.get(b"error-reason", b"")
                    reason = reason if isinstance(reason, bytes) else b""
                    text = reason[:200].decode("utf-8", "replace")
                    raise RtpEngineRefused(name, text)
                return reply
            raise RtpEngineError(f"rtpengine did not answer {name}")
        finally:
            self._pending.pop(cookie, None)
            if not future.done():
                future.cancel()

    def _reply(self, data: bytes) -> None:
        cookie, space, payload = data.partition(b" ")
        future = self._pending.get(cookie)
        if not space or future is None or future.done():
            return  # a late reply to a request given up, or not ours
        try:
            reply = decode(payload)
        except BencodeError:
            future.set_exception(RtpEngineError("unreadable reply from rtpengine"))
            return
        if not isinstance(reply, dict):
            future.set_exception(RtpEngineError("rtpengine reply is not a dictionary"))
            return
        future.set_result(reply)


def _sdp_of(reply: dict[bytes, Value]) -> bytes:
    sdp = reply.get(b"sdp")
    if not isinstance(sdp, bytes):
        raise RtpEngineError("rtpengine's reply carries no SDP")
    if len(sdp) > MAX_SDP:
        raise RtpEngineError(f"rtpengine's SDP is {len(sdp)} bytes long")
    try:
        parse(sdp)
    except SdpError as error:
        raise RtpEngineError(f"rtpengine's SDP does not read: {error}") from None
    return sdp
