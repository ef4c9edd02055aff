"""RTCP reception reports read for the console, from well-formed and hostile packets."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from core.media.rtcp import reception_report


def block(fraction: int, jitter: int) -> bytes:
    return struct.pack("!IB3sIIII", 0x1234, fraction, b"\x00\x00\x05", 99, jitter, 0, 0)


def receiver_report(fraction: int, jitter: int) -> bytes:
    body = struct.pack("!I", 0xABCD) + block(fraction, jitter)
    return struct.pack("!BBH", 0x81, 201, (4 + len(body)) // 4 - 1) + body


def sender_report(fraction: int, jitter: int) -> bytes:
    body = struct.pack("!I", 0xABCD) + bytes(20) + block(fraction, jitter)
    return struct.pack("!BBH", 0x81, 200, (4 + len(body)) // 4 - 1) + body


def sdes() -> bytes:
    body = struct.pack("!I", 0xABCD) + b"\x01\x04name\x00\x00"
    return struct.pack("!BBH", 0x81, 202, (4 + len(body)) // 4 - 1) + body


def test_reports_in_rr_and_sr_and_after_other_packets() -> None:
    assert reception_report(receiver_report(64, 160)) == (64, 160)
    assert reception_report(sender_report(3, 80) + sdes()) == (3, 80)
    empty_rr = struct.pack("!BBHI", 0x80, 201, 1, 0xABCD)  # RC = 0: no block
    assert reception_report(empty_rr + receiver_report(10, 20)) == (10, 20)


@pytest.mark.parametrize(
    "packet",
    [
        b"",
        b"\x81\xc9",
        receiver_report(1, 2)[:20],  # cut short
        b"\x01" + receiver_report(1, 2)[1:],  # version 0
        sdes(),  # no report at all
        struct.pack("!BBH", 0x81, 201, 0xFFFF) + bytes(40),  # length beyond the datagram
    ],
)
def test_unreadable_packets_give_no_report(packet: bytes) -> None:
    assert reception_report(packet) is None


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=120))
def test_arbitrary_bytes_never_raise(packet: bytes) -> None:
    report = reception_report(packet)
    assert report is None or (0 <= report[0] < 256 and report[1] >= 0)
