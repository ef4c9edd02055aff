"""RTCP reception reports (RFC 3550 §6.4), read for the console: loss and jitter as the
phones themselves measure them; sans-I/O.

A compound RTCP packet is a run of packets, each `V=2 | P | RC(5) | PT(8) | length(16)`,
length in 32-bit words minus one. A sender report (PT 200) carries 20 bytes of sender info
after the SSRC, a receiver report (PT 201) none; then RC report blocks of 24 bytes:

    SSRC | fraction lost (8) | cumulative lost (24) | highest seq (32) | jitter (32) | LSR | DLSR

Only the first block is read: a phone in a two-party call reports on one source. On a port
with rtcp-mux, RTCP is told from RTP by its second byte, 192-223 (RFC 5761 §4: RTP payload
types 64-95 are not used there); the relay checks that before calling in here. Wire input:
`reception_report` returns None for anything it cannot read and never raises. SRTCP
(RFC 3711) encrypts the blocks, so the relay does not call this for SAVP streams.
"""

from __future__ import annotations

_SR = 200
_RR = 201
_BLOCK_OFFSET = {_SR: 28, _RR: 8}
_MAX_PACKETS = 8  # packets walked in one compound packet


def reception_report(datagram: bytes) -> tuple[int, int] | None:
    """(fraction lost out of 256, interarrival jitter in timestamp units) of the first report
    block in a compound SR/RR packet, or None."""
    offset = 0
    size = len(datagram)
    for _ in range(_MAX_PACKETS):
        if offset + 4 > size:
            return None
        first = datagram[offset]
        if first >> 6 != 2:
            return None
        packet_type = datagram[offset + 1]
        length = (int.from_bytes(datagram[offset + 2 : offset + 4], "big") + 1) * 4
        if offset + length > size:
            return None
        count = first & 0x1F
        block = _BLOCK_OFFSET.get(packet_type)
        if block is not None and count and block + 24 <= length:
            start = offset + block
            fraction = datagram[start + 4]
            jitter = int.from_bytes(datagram[start + 12 : start + 16], "big")
            return fraction, jitter
        offset += length
    return None
