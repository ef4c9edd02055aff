"""The SDP rewrite: what changes, what stays byte for byte, and hostile input."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from core.media.sdp import MAX_MEDIA, SdpError, parse, rewrite

PHONE = (
    b"v=0\r\n"
    b"o=alice 2890844526 2890844526 IN IP4 192.168.1.20\r\n"
    b"s=-\r\n"
    b"c=IN IP4 192.168.1.20\r\n"
    b"t=0 0\r\n"
    b"m=audio 49170 RTP/AVP 0 8 101\r\n"
    b"a=rtpmap:101 telephone-event/8000\r\n"
    b"a=fmtp:101 0-15\r\n"
    b"a=rtcp:49171 IN IP4 192.168.1.20\r\n"
    b"a=candidate:1 1 UDP 2130706431 192.168.1.20 49170 typ host\r\n"
    b"a=ice-ufrag:F7gI\r\n"
    b"a=ice-pwd:x9cml/YzichV2+XlhiMu8g\r\n"
    b"a=end-of-candidates\r\n"
    b"a=x-vendor-thing:\xff keep me\r\n"
    b"a=sendrecv\r\n"
    b"m=video 0 RTP/AVP 96\r\n"
    b"a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:PS1uQCVeeCFCanVmcjkpPywjNWhcYD0mXXtxaVBR\r\n"
)


def test_parse_reads_what_the_relay_needs() -> None:
    description = parse(PHONE)
    assert description.origin_address == "192.168.1.20"
    audio, video = description.media
    assert (audio.kind, audio.port, audio.proto) == ("audio", 49170, "RTP/AVP")
    assert (audio.address, audio.rtcp_port, audio.rtcp_mux) == ("192.168.1.20", 49171, False)
    assert audio.direction == "sendrecv" and not audio.on_hold
    assert video.port == 0


def test_rewrite_changes_addresses_and_ports_and_nothing_else() -> None:
    out = rewrite(PHONE, "203.0.113.5", [30000, 30004])
    assert out == (
        b"v=0\r\n"
        b"o=alice 2890844526 2890844526 IN IP4 203.0.113.5\r\n"
        b"s=-\r\n"
        b"c=IN IP4 203.0.113.5\r\n"
        b"t=0 0\r\n"
        b"m=audio 30000 RTP/AVP 0 8 101\r\n"
        b"a=rtpmap:101 telephone-event/8000\r\n"
        b"a=fmtp:101 0-15\r\n"
        b"a=rtcp:30001 IN IP4 203.0.113.5\r\n"
        b"a=x-vendor-thing:\xff keep me\r\n"
        b"a=sendrecv\r\n"
        b"m=video 0 RTP/AVP 96\r\n"
        b"a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:PS1uQCVeeCFCanVmcjkpPywjNWhcYD0mXXtxaVBR\r\n"
    )


def test_bare_newlines_and_missing_final_newline_are_kept() -> None:
    body = b"v=0\no=- 1 1 IN IP4 10.0.0.1\ns=-\nc=IN IP4 10.0.0.1\nt=0 0\nm=audio 4000 RTP/AVP 0"
    out = rewrite(body, "::1", [5000])
    assert out == (b"v=0\no=- 1 1 IN IP6 ::1\ns=-\nc=IN IP6 ::1\nt=0 0\nm=audio 5000 RTP/AVP 0")


def test_hold_is_passed_through() -> None:
    body = (
        b"v=0\r\no=- 1 2 IN IP4 10.0.0.1\r\ns=-\r\nc=IN IP4 0.0.0.0\r\nt=0 0\r\n"
        b"m=audio 4000 RTP/AVP 0\r\na=sendonly\r\n"
    )
    (media,) = parse(body).media
    assert media.on_hold and media.direction == "sendonly" and media.address == "0.0.0.0"
    out = rewrite(body, "192.0.2.1", [6000])
    assert b"c=IN IP4 0.0.0.0\r\n" in out and b"m=audio 6000 " in out and b"a=sendonly" in out


def test_session_level_direction_and_media_level_connection() -> None:
    body = (
        b"v=0\r\no=- 1 2 IN IP4 10.0.0.1\r\ns=-\r\nt=0 0\r\na=inactive\r\n"
        b"m=audio 4000 RTP/AVP 0\r\nc=IN IP4 10.0.0.9/127\r\na=rtcp-mux\r\na=rtcp:4000\r\n"
    )
    (media,) = parse(body).media
    assert media.direction == "inactive" and media.address == "10.0.0.9"
    assert media.rtcp_mux and media.rtcp_port == 4000
    out = rewrite(body, "192.0.2.1", [6000])
    tail = b"m=audio 6000 RTP/AVP 0\r\nc=IN IP4 192.0.2.1\r\na=rtcp-mux\r\na=rtcp:6000\r\n"
    assert out.endswith(tail)


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"o=- 1 1 IN IP4 1.2.3.4\r\n",
        b"v=0\r\nc=IN IP4\r\n",
        b"v=0\r\nc=XX IP4 1.2.3.4\r\n",
        b"v=0\r\no=- 1 IN IP4 1.2.3.4\r\n",
        b"v=0\r\nm=audio 70000 RTP/AVP 0\r\n",
        b"v=0\r\nm=audio 4000/2 RTP/AVP 0\r\n",
        b"v=0\r\nm=audio\r\n",
        b"v=0\r\nm=audio 4000 RTP/AVP 0\r\na=rtcp:x\r\n",
        b"v=0\r\n" + b"m=audio 4000 RTP/AVP 0\r\n" * (MAX_MEDIA + 1),
        b"v=0\r\n" + b"a=x\r\n" * 10_000,
    ],
)
def test_unreadable_sdp_raises_sdp_error(body: bytes) -> None:
    with pytest.raises(SdpError):
        rewrite(body, "192.0.2.1", [6000])


def test_port_count_must_match() -> None:
    with pytest.raises(SdpError):
        rewrite(PHONE, "192.0.2.1", [6000])


_FUZZ = settings(max_examples=400, deadline=None, suppress_health_check=list(HealthCheck))


@_FUZZ
@given(st.binary(max_size=600))
def test_arbitrary_bytes_raise_nothing_but_sdp_error(body: bytes) -> None:
    for candidate in (body, b"v=0\r\n" + body):
        try:
            description = parse(candidate)
            rewrite(candidate, "192.0.2.1", [6000] * len(description.media))
        except SdpError:
            pass


@_FUZZ
@given(st.data())
def test_mutated_phone_sdp_round_trips(data: st.DataObject) -> None:
    """Any mutation of a real offer either raises SdpError or rewrites to SDP that parses to
    the same streams with our address and ports; rewriting again with the original values
    gives back a body whose non-ICE lines are the original's where nothing was rewritten."""
    lines = PHONE.split(b"\r\n")[:-1]
    index = data.draw(st.integers(0, len(lines) - 1))
    junk = data.draw(st.binary(max_size=20))
    action = data.draw(st.sampled_from(["replace", "insert", "delete", "append"]))
    if action == "replace":
        lines[index] = lines[index][:2] + junk
    elif action == "insert":
        lines.insert(index, junk)
    elif action == "delete":
        del lines[index]
    else:
        lines[index] = lines[index] + junk
    body = b"\r\n".join(lines) + b"\r\n"
    try:
        before = parse(body)
        ports = [30000 + 2 * i for i in range(len(before.media))]
        out = rewrite(body, "192.0.2.1", ports)
    except SdpError:
        return
    after = parse(out)
    assert len(after.media) == len(before.media)
    for old, new, port in zip(before.media, after.media, ports, strict=True):
        assert new.port == (port if old.port else 0)
        assert (new.kind, new.proto, new.direction, new.rtcp_mux) == (
            old.kind, old.proto, old.direction, old.rtcp_mux,
        )  # fmt: skip
    assert not any(line.startswith((b"a=candidate", b"a=ice-")) for line in out.splitlines())
    assert rewrite(out, "192.0.2.1", ports) == out  # idempotent
