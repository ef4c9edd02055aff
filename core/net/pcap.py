"""SIP traffic as a libpcap capture file, so Wireshark, tshark and sngrep can open it.

The bus keeps SIP messages, not packets: there are no link, IP or transport headers to save.
We make them up (synthetic Ethernet, IPv4 or IPv6, and UDP or TCP) from what each
`SipTraffic` event does know: who sent it to whom, over which transport, and when. Checksums
are real, so no tool flags the packets as corrupt, and TCP sequence numbers run on per
connection, so Wireshark's reassembly joins a message split over several segments.

Pure: events in, bytes out. Opening the file is the caller's business.
"""

from __future__ import annotations

import ipaddress
import struct
from collections.abc import Iterable
from typing import BinaryIO

from core.events import SipTraffic

# https://www.tcpdump.org/manpages/pcap-savefile.5.html: microsecond timestamps, version 2.4.
PCAP_MAGIC = 0xA1B2C3D4
LINKTYPE_ETHERNET = 1
SNAPLEN = 262_144

_ETHERTYPE_IPV4 = 0x0800
_ETHERTYPE_IPV6 = 0x86DD
_PROTO_TCP = 6
_PROTO_UDP = 17
# Locally administered unicast MACs: plainly synthetic, never a real vendor's.
_MAC_SENDER = bytes.fromhex("020000000001")
_MAC_RECEIVER = bytes.fromhex("020000000002")
_TCP_PSH_ACK = 0x18
_MAX_IPV4_PAYLOAD = 65_535 - 20
_MAX_TCP_SEGMENT = 65_000  # keeps every synthetic IP packet under the 16-bit length fields

IpAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


def file_header() -> bytes:
    """The 24-byte global header that starts every pcap file."""
    return struct.pack("<IHHiIII", PCAP_MAGIC, 2, 4, 0, 0, SNAPLEN, LINKTYPE_ETHERNET)


def _checksum(data: bytes) -> int:
    """The Internet checksum (RFC 1071): one's-complement sum of 16-bit words."""
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total > 0xFFFF:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def _addresses(source: str, destination: str) -> tuple[IpAddress, IpAddress]:
    """Both ends in one IP version: IPv4 where both are (or map to) IPv4, else IPv6."""
    src = ipaddress.ip_address(source.split("%", 1)[0])
    dst = ipaddress.ip_address(destination.split("%", 1)[0])
    src = _unmapped(src)
    dst = _unmapped(dst)
    if src.version == dst.version:
        return src, dst
    return _as_ipv6(src), _as_ipv6(dst)


def _unmapped(address: IpAddress) -> IpAddress:
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def _as_ipv6(address: IpAddress) -> ipaddress.IPv6Address:
    if isinstance(address, ipaddress.IPv6Address):
        return address
    return ipaddress.IPv6Address(f"::ffff:{address}")


def _pseudo_header(src: IpAddress, dst: IpAddress, protocol: int, length: int) -> bytes:
    """What the UDP and TCP checksums cover besides the segment (RFC 768, RFC 8200 §8.1)."""
    if src.version == 4:
        return src.packed + dst.packed + struct.pack("!BBH", 0, protocol, length)
    return src.packed + dst.packed + struct.pack("!I3xB", length, protocol)


def _udp(src: IpAddress, dst: IpAddress, sport: int, dport: int, payload: bytes) -> bytes:
    length = 8 + len(payload)
    header = struct.pack("!HHHH", sport, dport, length, 0)
    checksum = _checksum(_pseudo_header(src, dst, _PROTO_UDP, length) + header + payload)
    # A computed 0 is sent as all ones; 0 means "no checksum" (RFC 768).
    return struct.pack("!HHHH", sport, dport, length, checksum or 0xFFFF) + payload


def _tcp(
    src: IpAddress, dst: IpAddress, sport: int, dport: int, seq: int, ack: int, payload: bytes
) -> bytes:
    header = struct.pack("!HHIIBBHHH", sport, dport, seq, ack, 5 << 4, _TCP_PSH_ACK, 65535, 0, 0)
    checksum = _checksum(_pseudo_header(src, dst, _PROTO_TCP, 20 + len(payload)) + header + payload)
    return header[:16] + struct.pack("!H", checksum) + header[18:] + payload


def _ip(src: IpAddress, dst: IpAddress, protocol: int, segment: bytes, ident: int) -> bytes:
    if src.version == 4:
        header = struct.pack(
            "!BBHHHBBH4s4s",
            0x45,
            0,
            20 + len(segment),
            ident & 0xFFFF,
            0x4000,  # don't fragment
            64,
            protocol,
            0,
            src.packed,
            dst.packed,
        )
        checksum = _checksum(header)
        return header[:10] + struct.pack("!H", checksum) + header[12:] + segment
    return (
        struct.pack("!IHBB", 6 << 28, len(segment), protocol, 64)
        + src.packed
        + dst.packed
        + segment
    )


def _ethernet(ip_version: int, packet: bytes) -> bytes:
    ethertype = _ETHERTYPE_IPV4 if ip_version == 4 else _ETHERTYPE_IPV6
    return _MAC_RECEIVER + _MAC_SENDER + struct.pack("!H", ethertype) + packet


def _record(at: float, frame: bytes) -> bytes:
    seconds = int(at)
    micros = min(999_999, round((at - seconds) * 1_000_000))
    captured = frame[:SNAPLEN]
    return struct.pack("<IIII", seconds, micros, len(captured), len(frame)) + captured


class PcapEncoder:
    """Turns traffic events into pcap records, keeping TCP sequence numbers per connection."""

    def __init__(self) -> None:
        self._next_seq: dict[tuple[str, int, str, int], int] = {}
        self._ident = 0

    def records(self, event: SipTraffic) -> bytes:
        """The pcap record(s) for one message: several when a TCP message is very large."""
        if event.direction == "in":
            (src_host, sport), (dst_host, dport) = event.remote, event.local
        else:
            (src_host, sport), (dst_host, dport) = event.local, event.remote
        src, dst = _addresses(src_host, dst_host)
        out = bytearray()
        if event.transport == "udp":
            payload = event.data
            if src.version == 4:
                payload = payload[: _MAX_IPV4_PAYLOAD - 8]
            out += self._frame(
                event.at, src, dst, _PROTO_UDP, _udp(src, dst, sport, dport, payload)
            )
            return bytes(out)
        forward = (str(src), sport, str(dst), dport)
        backward = (str(dst), dport, str(src), sport)
        data = event.data
        for offset in range(0, max(len(data), 1), _MAX_TCP_SEGMENT):
            chunk = data[offset : offset + _MAX_TCP_SEGMENT]
            seq = self._next_seq.get(forward, 1)
            ack = self._next_seq.get(backward, 1)
            self._next_seq[forward] = (seq + len(chunk)) & 0xFFFFFFFF
            segment = _tcp(src, dst, sport, dport, seq, ack, chunk)
            out += self._frame(event.at, src, dst, _PROTO_TCP, segment)
        return bytes(out)

    def _frame(
        self, at: float, src: IpAddress, dst: IpAddress, protocol: int, segment: bytes
    ) -> bytes:
        self._ident += 1
        return _record(at, _ethernet(src.version, _ip(src, dst, protocol, segment, self._ident)))


def write_pcap(stream: BinaryIO, events: Iterable[SipTraffic]) -> int:
    """Write a whole capture of `events` to `stream`; returns how many messages it holds."""
    encoder = PcapEncoder()
    stream.write(file_header())
    count = 0
    for event in events:
        stream.write(encoder.records(event))
        count += 1
    return count


def pcap_bytes(events: Iterable[SipTraffic]) -> bytes:
    """The capture as bytes (for tests and small exports)."""
    encoder = PcapEncoder()
    return file_header() + b"".join(encoder.records(event) for event in events)
