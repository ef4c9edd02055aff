"""DNS SRV look-ups over UDP with the standard library (RFC 1035 §4, RFC 2782).

The system resolver (getaddrinfo) answers A/AAAA only; RFC 3263 §4.2 wants SRV first for a
carrier gateway given as a bare host name (`_sip._udp.carrier.example`). This is the smallest
client that does it: one question, recursion desired, to the nameservers in
/etc/resolv.conf, each tried once within the timeout; answers with name compression parsed,
anything malformed rejected with `DnsError`. No caching (the trunks re-resolve every few
minutes) and no TCP retry (an SRV answer for a SIP trunk fits a datagram; a truncated answer
is used for what it holds).
"""

from __future__ import annotations

import asyncio
import secrets
import struct
from pathlib import Path

from core.trunks.gateways import SrvRecord

TYPE_SRV = 33
CLASS_IN = 1
DNS_PORT = 53
RCODE_NXDOMAIN = 3
MAX_POINTER_JUMPS = 32  # compression pointers followed per name: a loop ends here
MAX_RESPONSE_BYTES = 4_096


class DnsError(ValueError):
    """A DNS answer we cannot use: malformed, for another question, or a server failure."""


def encode_name(name: str) -> bytes:
    """A domain name as length-prefixed labels (RFC 1035 §3.1)."""
    encoded = b""
    for label in name.rstrip(".").split("."):
        raw = label.encode("idna") if not label.isascii() else label.encode("ascii")
        if not 0 < len(raw) < 64:
            raise DnsError(f"bad label in {name!r}")
        encoded += bytes([len(raw)]) + raw
    if len(encoded) > 254:
        raise DnsError(f"name too long: {name!r}")
    return encoded + b"\x00"


def build_query(name: str, query_id: int, qtype: int = TYPE_SRV) -> bytes:
    """A standard query with recursion desired (RFC 1035 §4.1.1)."""
    header = struct.pack("!HHHHHH", query_id, 0x0100, 1, 0, 0, 0)
    return header + encode_name(name) + struct.pack("!HH", qtype, CLASS_IN)


def read_name(data: bytes, offset: int) -> tuple[str, int]:
    """The name at `offset` and the offset just after it where it is written (§4.1.4)."""
    labels: list[str] = []
    end: int | None = None
    jumps = 0
    while True:
        if offset >= len(data):
            raise DnsError("name runs past the message")
        length = data[offset]
        if length & 0xC0 == 0xC0:
            if offset + 1 >= len(data):
                raise DnsError("cut compression pointer")
            jumps += 1
            if jumps > MAX_POINTER_JUMPS:
                raise DnsError("compression loop")
            if end is None:
                end = offset + 2
            offset = ((length & 0x3F) << 8) | data[offset + 1]
            continue
        if length & 0xC0:
            raise DnsError("unknown label type")
        offset += 1
        if length == 0:
            break
        if offset + length > len(data):
            raise DnsError("label runs past the message")
        labels.append(data[offset : offset + length].decode("ascii", "replace"))
        offset += length
    return ".".join(labels), end if end is not None else offset


def parse_srv_response(data: bytes, query_id: int, name: str) -> list[SrvRecord]:
    """The SRV records answering our question; [] for NXDOMAIN or no such records."""
    if len(data) < 12:
        raise DnsError("short DNS header")
    ident, flags, questions, answers, _authority, _additional = struct.unpack_from("!HHHHHH", data)
    if ident != query_id or not flags & 0x8000:
        raise DnsError("not the answer to our query")
    rcode = flags & 0x000F
    if rcode == RCODE_NXDOMAIN:
        return []
    if rcode:
        raise DnsError(f"DNS server answered rcode {rcode}")
    offset = 12
    wanted = name.rstrip(".").lower()
    for _ in range(questions):
        asked, offset = read_name(data, offset)
        if asked.lower() != wanted:
            raise DnsError("answer for another name")
        offset += 4
    records: list[SrvRecord] = []
    for _ in range(answers):
        _owner, offset = read_name(data, offset)
        if offset + 10 > len(data):
            raise DnsError("cut resource record")
        rtype, rclass, _ttl, length = struct.unpack_from("!HHIH", data, offset)
        offset += 10
        if offset + length > len(data):
            raise DnsError("cut record data")
        if rtype == TYPE_SRV and rclass == CLASS_IN:
            if length < 7:
                raise DnsError("short SRV record")
            priority, weight, port = struct.unpack_from("!HHH", data, offset)
            target, _end = read_name(data, offset + 6)
            records.append(SrvRecord(priority, weight, port, target or "."))
        offset += length  # CNAMEs and others before the SRV records are stepped over
    return records


def system_nameservers(resolv_conf: Path = Path("/etc/resolv.conf")) -> list[str]:
    """The `nameserver` lines of resolv.conf (scope ids dropped), in order."""
    try:
        text = resolv_conf.read_text()
    except OSError:
        return []
    servers = []
    for line in text.splitlines():
        parts = line.split()
        if len(parts) >= 2 and parts[0] == "nameserver":
            servers.append(parts[1].split("%")[0])
    return servers


class _Answer(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.future: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()

    def datagram_received(self, data: bytes, addr: tuple) -> None:
        if not self.future.done():
            self.future.set_result(data[:MAX_RESPONSE_BYTES])

    def error_received(self, exc: Exception) -> None:
        if not self.future.done():
            self.future.set_exception(exc)


class SrvResolver:
    """`await resolver(name)` → SRV records, asking each nameserver in turn within `timeout`."""

    def __init__(
        self, nameservers: list[str] | None = None, *, port: int = DNS_PORT, timeout: float = 2.0
    ) -> None:
        self.nameservers = system_nameservers() if nameservers is None else nameservers
        self.port = port
        self.timeout = timeout

    async def __call__(self, name: str) -> list[SrvRecord]:
        if not self.nameservers:
            return []
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.timeout
        error: Exception | None = None
        for server in self.nameservers:
            remaining = deadline - loop.time()
            if remaining <= 0:
                break
            try:
                return await asyncio.wait_for(self._ask(server, name), remaining)
            except (TimeoutError, OSError, DnsError) as failure:
                error = failure
        if error is not None and not isinstance(error, TimeoutError):
            raise DnsError(f"SRV {name}: {error}")
        return []

    async def _ask(self, server: str, name: str) -> list[SrvRecord]:
        loop = asyncio.get_running_loop()
        query_id = secrets.randbelow(65_536)  # random ids: a spoofed answer must guess it
        transport, protocol = await loop.create_datagram_endpoint(
            _Answer, remote_addr=(server, self.port)
        )
        try:
            transport.sendto(build_query(name, query_id))
            while True:
                data = await protocol.future
                try:
                    return parse_srv_response(data, query_id, name)
                except DnsError:
                    if data[:2] == query_id.to_bytes(2, "big"):
                        raise
                    protocol.future = loop.create_future()  # a stray datagram: keep waiting
        finally:
            transport.close()
