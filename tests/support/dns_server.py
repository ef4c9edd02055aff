"""A small authoritative DNS server on loopback for the resolver tests: UDP and TCP on one
port, answers built with dnspython from a dict of records. Nothing leaves 127.0.0.1.

It records every question (name, type, transport, EDNS payload) so tests can check what
the client sent, and can be told to truncate UDP answers past a size, answer SERVFAIL, or
send garbage before the real answer.
"""

from __future__ import annotations

import asyncio
import struct
from dataclasses import dataclass, field

import dns.flags
import dns.message
import dns.rcode
import dns.rdatatype
import dns.rrset

from support.ports import free_port

MAX_UDP_WITHOUT_EDNS = 512


@dataclass
class Question:
    name: str
    rdtype: str
    transport: str
    edns_payload: int | None  # None: the query carried no OPT record


@dataclass
class DnsServer:
    """`records[(name, "SRV")] = ["10 60 5060 sip1.example.", ...]` in zone-file syntax."""

    records: dict[tuple[str, str], list[str]] = field(default_factory=dict)
    questions: list[Question] = field(default_factory=list)
    servfail: bool = False
    garbage_first: bool = False
    port: int = 0
    _udp: asyncio.DatagramTransport | None = None
    _tcp: asyncio.Server | None = None

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        self.port = free_port()
        self._udp, _ = await loop.create_datagram_endpoint(
            lambda: _UdpProtocol(self), local_addr=("127.0.0.1", self.port)
        )
        self._tcp = await asyncio.start_server(self._serve_tcp, "127.0.0.1", self.port)

    async def stop(self) -> None:
        if self._udp is not None:
            self._udp.close()
        if self._tcp is not None:
            self._tcp.close()
            await self._tcp.wait_closed()

    def answer(self, wire: bytes, transport: str) -> bytes:
        query = dns.message.from_wire(wire)
        question = query.question[0]
        name = question.name.to_text(omit_final_dot=True).lower()
        rdtype = dns.rdatatype.to_text(question.rdtype)
        payload = int(query.payload) if query.edns >= 0 else None
        self.questions.append(Question(name, rdtype, transport, payload))
        response = dns.message.make_response(query)
        response.flags |= dns.flags.AA
        if self.servfail:
            response.set_rcode(dns.rcode.SERVFAIL)
            return response.to_wire()
        values = self.records.get((name, rdtype))
        if values is None:
            if not any(key[0] == name for key in self.records):
                response.set_rcode(dns.rcode.NXDOMAIN)
            return response.to_wire()
        response.answer.append(dns.rrset.from_text_list(name + ".", 300, "IN", rdtype, values))
        wire_answer = response.to_wire(max_size=65_535)
        limit = (payload or MAX_UDP_WITHOUT_EDNS) if transport == "udp" else 65_535
        if len(wire_answer) > limit:  # RFC 1035 §4.2.1: TC set, the answer left out
            response.answer.clear()
            response.flags |= dns.flags.TC
            return response.to_wire()
        return wire_answer

    async def _serve_tcp(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            (length,) = struct.unpack("!H", await reader.readexactly(2))
            reply = self.answer(await reader.readexactly(length), "tcp")
            writer.write(struct.pack("!H", len(reply)) + reply)
            await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()


class _UdpProtocol(asyncio.DatagramProtocol):
    def __init__(self, server: DnsServer) -> None:
        self.server = server
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple) -> None:
        assert self.transport is not None
        if self.server.garbage_first:
            self.transport.sendto(b"\x00\x01garbage", addr)
        self.transport.sendto(self.server.answer(data, "udp"), addr)
