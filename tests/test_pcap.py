"""core/net/pcap.py: SIP traffic events → a libpcap file that packet tools decode as SIP.

The file is read back with a small independent reader (struct), checking every length and
checksum; where tshark is installed, Wireshark's own dissector must also see SIP in it.
"""

from __future__ import annotations

import ipaddress
import shutil
import struct
import subprocess
from pathlib import Path

import pytest

from core.events import SipTraffic
from core.net.pcap import LINKTYPE_ETHERNET, PCAP_MAGIC, pcap_bytes, write_pcap

INVITE = (
    b"INVITE sip:bob@pbx.test SIP/2.0\r\n"
    b"Via: SIP/2.0/UDP 192.0.2.10:5062;branch=z9hG4bK1\r\n"
    b"From: <sip:alice@pbx.test>;tag=1\r\nTo: <sip:bob@pbx.test>\r\n"
    b"Call-ID: call-1\r\nCSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n"
)
OK = (
    b"SIP/2.0 100 Trying\r\nVia: SIP/2.0/UDP 192.0.2.10:5062;branch=z9hG4bK1\r\n"
    b"From: <sip:alice@pbx.test>;tag=1\r\nTo: <sip:bob@pbx.test>\r\n"
    b"Call-ID: call-1\r\nCSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n"
)


def traffic(
    direction: str,
    data: bytes,
    *,
    transport: str = "udp",
    remote=("192.0.2.10", 5062),
    local=("198.51.100.1", 5060),
    at: float = 1_700_000_000.25,
) -> SipTraffic:
    return SipTraffic(direction, transport, remote, local, data, at=at)


def checksum_ok(data: bytes) -> bool:
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total > 0xFFFF:
        total = (total & 0xFFFF) + (total >> 16)
    return total == 0xFFFF


def read_packets(blob: bytes) -> list[dict[str, object]]:
    """Decode our own output independently: pcap records → Ethernet → IP → UDP/TCP."""
    magic, major, minor, _zone, _sigfigs, snaplen, linktype = struct.unpack("<IHHiIII", blob[:24])
    assert (magic, major, minor, linktype) == (PCAP_MAGIC, 2, 4, LINKTYPE_ETHERNET)
    packets = []
    offset = 24
    while offset < len(blob):
        seconds, micros, captured, original = struct.unpack("<IIII", blob[offset : offset + 16])
        assert captured == original <= snaplen
        frame = blob[offset + 16 : offset + 16 + captured]
        offset += 16 + captured
        ethertype = struct.unpack("!H", frame[12:14])[0]
        packet = frame[14:]
        if ethertype == 0x0800:
            header_length = (packet[0] & 0x0F) * 4
            assert checksum_ok(packet[:header_length]), "bad IPv4 header checksum"
            total, protocol = struct.unpack("!H", packet[2:4])[0], packet[9]
            assert total == len(packet)
            src, dst = ipaddress.ip_address(packet[12:16]), ipaddress.ip_address(packet[16:20])
            segment = packet[header_length:]
            pseudo = packet[12:20] + struct.pack("!BBH", 0, protocol, len(segment))
        else:
            assert ethertype == 0x86DD
            length, protocol = struct.unpack("!HB", packet[4:7])
            assert length == len(packet) - 40
            src, dst = ipaddress.ip_address(packet[8:24]), ipaddress.ip_address(packet[24:40])
            segment = packet[40:]
            pseudo = packet[8:40] + struct.pack("!I3xB", len(segment), protocol)
        assert checksum_ok(pseudo + segment), "bad transport checksum"
        sport, dport = struct.unpack("!HH", segment[:4])
        if protocol == 17:
            assert struct.unpack("!H", segment[4:6])[0] == len(segment)
            payload, seq = segment[8:], None
        else:
            assert protocol == 6
            seq = struct.unpack("!I", segment[4:8])[0]
            payload = segment[(segment[12] >> 4) * 4 :]
        packets.append(
            {
                "at": seconds + micros / 1e6,
                "src": (str(src), sport),
                "dst": (str(dst), dport),
                "protocol": protocol,
                "seq": seq,
                "payload": payload,
            }
        )
    return packets


def test_udp_ipv4_directions_and_payloads() -> None:
    blob = pcap_bytes([traffic("in", INVITE), traffic("out", OK, at=1_700_000_000.5)])
    first, second = read_packets(blob)
    assert first["src"] == ("192.0.2.10", 5062) and first["dst"] == ("198.51.100.1", 5060)
    assert second["src"] == ("198.51.100.1", 5060) and second["dst"] == ("192.0.2.10", 5062)
    assert first["payload"] == INVITE and second["payload"] == OK
    assert first["protocol"] == 17
    assert first["at"] == pytest.approx(1_700_000_000.25) and second["at"] == pytest.approx(
        1_700_000_000.5
    )


def test_udp_ipv6_has_a_valid_mandatory_checksum() -> None:
    event = traffic("in", INVITE, remote=("2001:db8::10", 5062), local=("2001:db8::1", 5060))
    (packet,) = read_packets(pcap_bytes([event]))
    assert packet["src"] == ("2001:db8::10", 5062)
    assert packet["payload"] == INVITE


def test_ipv4_mapped_and_mixed_families_share_one_version() -> None:
    mapped = traffic("in", INVITE, remote=("::ffff:192.0.2.10", 5062), local=("198.51.100.1", 5060))
    mixed = traffic("in", INVITE, remote=("192.0.2.10", 5062), local=("2001:db8::1", 5060))
    first, second = read_packets(pcap_bytes([mapped, mixed]))
    assert first["src"] == ("192.0.2.10", 5062)  # unmapped back to IPv4
    assert second["src"] == ("::ffff:c000:20a", 5062)  # the IPv4 end mapped into IPv6


def test_tcp_sequence_numbers_run_on_per_direction_and_big_messages_split() -> None:
    body = b"x" * 70_000
    big = INVITE.replace(b"Content-Length: 0", b"Content-Length: 70000") + body
    events = [
        traffic("in", INVITE, transport="tcp"),
        traffic("out", OK, transport="tcp"),
        traffic("in", big, transport="tcp"),
    ]
    packets = read_packets(pcap_bytes(events))
    assert [p["protocol"] for p in packets] == [6, 6, 6, 6]
    first, answer, part_one, part_two = packets
    assert first["seq"] == 1 and answer["seq"] == 1
    assert part_one["seq"] == 1 + len(INVITE)
    assert part_two["seq"] == part_one["seq"] + len(part_one["payload"])  # type: ignore[operator]
    assert part_one["payload"] + part_two["payload"] == big  # type: ignore[operator]


def test_write_pcap_streams_to_a_file(tmp_path: Path) -> None:
    path = tmp_path / "capture.pcap"
    with path.open("wb") as stream:
        assert write_pcap(stream, [traffic("in", INVITE), traffic("out", OK)]) == 2
    assert path.read_bytes() == pcap_bytes([traffic("in", INVITE), traffic("out", OK)])


@pytest.mark.skipif(shutil.which("tshark") is None, reason="tshark is not installed")
def test_wireshark_decodes_sip(tmp_path: Path) -> None:
    path = tmp_path / "capture.pcap"
    events = [
        traffic("in", INVITE),
        traffic("out", OK),
        traffic(
            "in",
            INVITE,
            transport="tcp",
            remote=("2001:db8::10", 40000),
            local=("2001:db8::1", 5060),
        ),
    ]
    path.write_bytes(pcap_bytes(events))
    result = subprocess.run(
        [
            "tshark",
            "-r",
            str(path),
            "-T",
            "fields",
            "-e",
            "sip.Method",
            "-e",
            "sip.Status-Code",
            "-e",
            "sip.Call-ID",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    rows = [line.split("\t") for line in result.stdout.strip().splitlines()]
    assert rows == [["INVITE", "", "call-1"], ["", "100", "call-1"], ["INVITE", "", "call-1"]]
