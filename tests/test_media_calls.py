"""Calls with audio through NAT, end to end over loopback.

Alice (127.0.0.21) and Bob (127.0.0.22) are phones behind "NAT": their Contact and SDP name
127.0.0.99, where nothing listens, while they really send SIP and RTP from their own
addresses. Through the relay their audio flows both ways; with `[media] relay = "never"` the
very same call is silent, which is what proves the counting can fail.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import subprocess
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import pytest
from conftest import USERS, start_pbx
from support.ports import free_port
from support.rtpengine import rtpengine_daemon
from support.sipp import run_sipp
from support.softphone import RtpEndpoint, SoftPhone

from core.cluster.main import MainDuties
from core.control.client import RemoteCore
from core.control.peers import AccessPolicy
from core.control.server import ControlServer
from core.media.relay import MediaStats
from core.media.sdp import parse
from core.pbx import Pbx
from core.proxy.calls import CallInfo
from core.settings import ListenAddress, MediaSettings

PACKETS = 100  # two seconds of 20 ms audio each way


async def start(tmp_path: Path, workers: int = 0, **media: object) -> Pbx:
    settings = replace(MediaSettings(port_min=42000, port_max=42400), **media)
    return await start_pbx(tmp_path, media=settings, workers=workers)


async def ended_by_media_timeout(
    pbx: Pbx, alice: SoftPhone, bob: SoftPhone, *, each: float, within: float
) -> None:
    """Both phones get the server's BYE (each waiting up to `each` seconds, both within
    `within`), the engine holds no call any more, and the CDR says the media timed out."""
    answers = asyncio.gather(alice.answer_bye(each), bob.answer_bye(each))
    assert await asyncio.wait_for(answers, within) == [None, None]
    assert pbx.core.media is not None and pbx.core.media.calls == {}
    await pbx.store.flush()
    [cdr] = await pbx.store.list_cdrs()
    assert cdr.reason == "media timeout"


async def call_between(
    pbx: Pbx, *, natted: bool = True, late_offer: bool = False
) -> tuple[SoftPhone, SoftPhone]:
    server = (pbx.listening[0].host, pbx.listening[0].port)
    alice_ip, bob_ip = "127.0.0.21", "127.0.0.22"
    alice = SoftPhone(
        "alice", USERS["alice"], alice_ip, server, "127.0.0.99" if natted else alice_ip
    )
    bob = SoftPhone("bob", USERS["bob"], bob_ip, server, "127.0.0.99" if natted else bob_ip)
    await alice.start()
    await bob.start()
    if pbx.settings.workers:
        await asyncio.sleep(0.3)  # Bob's binding reaches the other worker through main
    answering = asyncio.create_task(bob.answer_call())
    if late_offer:
        final = await alice.call("bob", b"", ack_body=alice.sdp())
    else:
        final = await alice.call("bob")
    await answering
    assert final.status == 200
    return alice, bob


async def hang_up(alice: SoftPhone, bob: SoftPhone) -> None:
    answering = asyncio.create_task(bob.answer_bye())
    assert (await alice.hang_up()).status == 200
    await answering


async def talk(alice: SoftPhone, bob: SoftPhone, count: int = PACKETS) -> tuple[int, int]:
    """Both talk at once; how many of the other's packets each heard."""
    assert alice.dialog is not None and bob.dialog is not None
    before_alice = alice.rtp.from_marker(b"bob")
    before_bob = bob.rtp.from_marker(b"alice")
    await asyncio.gather(
        alice.rtp.stream(alice.dialog.media_address(), b"alice", count),
        bob.rtp.stream(bob.dialog.media_address(), b"bob", count),
    )
    await asyncio.sleep(0.2)
    return alice.rtp.from_marker(b"bob") - before_alice, bob.rtp.from_marker(b"alice") - before_bob


async def test_natted_phones_hear_each_other_through_the_relay(tmp_path: Path) -> None:
    pbx = await start(tmp_path)
    alice, bob = await call_between(pbx)
    try:
        assert alice.dialog is not None and bob.dialog is not None
        # Each side was told the relay's address, not the other's private one.
        assert alice.dialog.media_address()[0] == "127.0.0.1"
        assert bob.dialog.media_address()[0] == "127.0.0.1"
        heard_by_alice, heard_by_bob = await talk(alice, bob)
        assert heard_by_alice >= 0.9 * PACKETS and heard_by_bob >= 0.9 * PACKETS
        assert pbx.core.media is not None
        stats = pbx.core.media.stats(alice.dialog.call_id, pbx.clock())
        assert stats is not None
        assert stats.caller_packets >= 0.9 * PACKETS and stats.callee_packets >= 0.9 * PACKETS
        await hang_up(alice, bob)
        assert pbx.core.media.calls == {} and pbx.core.media.engine.sessions == {}  # type: ignore[attr-defined]
    finally:
        alice.close()
        bob.close()
        await pbx.stop()


async def test_the_same_call_without_the_relay_is_silent(tmp_path: Path) -> None:
    pbx = await start(tmp_path, relay="never")
    alice, bob = await call_between(pbx)
    try:
        assert alice.dialog is not None
        assert alice.dialog.media_address()[0] == "127.0.0.99"  # the SDP went through as it was
        assert await talk(alice, bob, 25) == (0, 0)
    finally:
        alice.close()
        bob.close()
        await pbx.stop()


async def test_a_stranger_spraying_the_relay_ports_gets_nothing_through(tmp_path: Path) -> None:
    pbx = await start(tmp_path)
    alice, bob = await call_between(pbx)
    mallory = RtpEndpoint("127.0.0.23")
    try:
        assert alice.dialog is not None and bob.dialog is not None
        # Mallory knows both relay ports (a scan would find them) and sprays them at once,
        # while the phones talk and for the rest of the call.
        spraying = [
            asyncio.create_task(mallory.stream(alice.dialog.media_address(), b"mallory", PACKETS)),
            asyncio.create_task(mallory.stream(bob.dialog.media_address(), b"mallory", PACKETS)),
        ]
        heard_by_alice, heard_by_bob = await talk(alice, bob)
        await asyncio.gather(*spraying)
        assert heard_by_alice >= 0.9 * PACKETS and heard_by_bob >= 0.9 * PACKETS
        assert alice.rtp.from_marker(b"mallory") == 0 and bob.rtp.from_marker(b"mallory") == 0
        assert mallory.received == []  # nobody's audio was turned towards her either
        assert pbx.core.media is not None
        stats = pbx.core.media.stats(alice.dialog.call_id, pbx.clock())
        assert stats is not None and stats.streams[0].dropped >= PACKETS
    finally:
        mallory.close()
        alice.close()
        bob.close()
        await pbx.stop()


async def test_hold_and_resume_keep_the_audio(tmp_path: Path) -> None:
    pbx = await start(tmp_path)
    alice, bob = await call_between(pbx)
    try:
        assert alice.dialog is not None and bob.dialog is not None
        relay_port = alice.dialog.media_address()
        await talk(alice, bob, 20)
        # Alice holds: her re-INVITE says sendonly, Bob answers recvonly; Bob's side now
        # offers hold music's way only, and the relay keeps its ports.
        answering = asyncio.create_task(bob.answer_reinvite("recvonly", 2))
        assert (await alice.reinvite("sendonly", 2)).status == 200
        await answering
        assert b"a=sendonly" in bob.dialog.remote_sdp and b"a=recvonly" in alice.dialog.remote_sdp
        assert alice.dialog.media_address() == relay_port
        assert pbx.core.media is not None
        stats = pbx.core.media.stats(alice.dialog.call_id, pbx.clock())
        assert stats is not None and stats.streams[0].on_hold
        before = bob.rtp.from_marker(b"alice")
        await alice.rtp.stream(alice.dialog.media_address(), b"alice", 25)
        await asyncio.sleep(0.2)
        assert bob.rtp.from_marker(b"alice") - before >= 0.9 * 25  # the music on hold
        # Resume: both ways again, through the same ports.
        answering = asyncio.create_task(bob.answer_reinvite("sendrecv", 3))
        assert (await alice.reinvite("sendrecv", 3)).status == 200
        await answering
        assert alice.dialog.media_address() == relay_port
        heard_by_alice, heard_by_bob = await talk(alice, bob)
        assert heard_by_alice >= 0.9 * PACKETS and heard_by_bob >= 0.9 * PACKETS
    finally:
        alice.close()
        bob.close()
        await pbx.stop()


async def test_a_call_whose_audio_stopped_is_hung_up_with_media_timeout_in_its_cdr(
    tmp_path: Path,
) -> None:
    pbx = await start(tmp_path, timeout_seconds=1.5)
    alice, bob = await call_between(pbx)
    try:
        await talk(alice, bob, 10)
        # Then silence: both phones get a BYE from the server within a few seconds.
        await ended_by_media_timeout(pbx, alice, bob, each=3.0, within=6)
    finally:
        alice.close()
        bob.close()
        await pbx.stop()


async def test_a_late_offer_in_the_2xx_answered_in_the_ack_is_anchored(tmp_path: Path) -> None:
    pbx = await start(tmp_path)
    alice, bob = await call_between(pbx, late_offer=True)
    try:
        assert alice.dialog is not None and bob.dialog is not None
        assert alice.dialog.media_address()[0] == "127.0.0.1"  # Bob's offer, anchored
        await asyncio.sleep(0.1)  # the ACK (Alice's answer) reaches Bob
        assert bob.dialog.media_address()[0] == "127.0.0.1"  # Alice's answer, anchored
        heard_by_alice, heard_by_bob = await talk(alice, bob)
        assert heard_by_alice >= 0.9 * PACKETS and heard_by_bob >= 0.9 * PACKETS
    finally:
        alice.close()
        bob.close()
        await pbx.stop()


@pytest.mark.parametrize(("relay", "anchored"), [("auto", False), ("always", True)])
async def test_phones_not_behind_nat_are_anchored_only_when_always(
    tmp_path: Path, relay: str, anchored: bool
) -> None:
    pbx = await start(tmp_path, relay=relay)
    alice, bob = await call_between(pbx, natted=False)
    try:
        assert alice.dialog is not None and pbx.core.media is not None
        expected = "127.0.0.1" if anchored else "127.0.0.22"
        assert alice.dialog.media_address()[0] == expected
        assert (alice.dialog.call_id in pbx.core.media.calls) is anchored
        heard_by_alice, heard_by_bob = await talk(alice, bob, 25)
        assert heard_by_alice >= 22 and heard_by_bob >= 22  # direct or relayed, audio flows
    finally:
        alice.close()
        bob.close()
        await pbx.stop()


@pytest.mark.parametrize("late_offer", [False, True])
async def test_natted_phones_hear_each_other_through_rtpengine(
    tmp_path: Path, late_offer: bool
) -> None:
    with rtpengine_daemon(tmp_path, 44200, 44400) as ng_port:
        pbx = await start(tmp_path, engine="rtpengine", rtpengine=f"127.0.0.1:{ng_port}")
        try:
            alice, bob = await call_between(pbx, late_offer=late_offer)
            await asyncio.sleep(0.1)  # a late answer in the ACK reaches Bob
            try:
                assert alice.dialog is not None and bob.dialog is not None
                for dialog in (alice.dialog, bob.dialog):  # rtpengine's address and ports
                    address, port = dialog.media_address()
                    assert address == "127.0.0.1" and 44200 <= port <= 44400
                heard_by_alice, heard_by_bob = await talk(alice, bob)
                assert heard_by_alice >= 0.9 * PACKETS and heard_by_bob >= 0.9 * PACKETS
                await hang_up(alice, bob)
                assert pbx.core.media is not None and pbx.core.media.calls == {}
            finally:
                alice.close()
                bob.close()
        finally:
            await pbx.stop()


PCAP = Path("/usr/share/sip-tester/g711a.pcap")  # SIPp's own G.711 recording: 236 packets


async def test_a_carrier_leg_reaches_a_natted_phone_with_audio(tmp_path: Path) -> None:
    """SIPp plays a carrier (its address trusted, a DID for Bob) sending a real G.711
    recording with play_pcap_audio; Bob's phone behind NAT hears it through the relay."""
    assert PCAP.exists(), "SIPp's g711a.pcap is missing (apt-get install sip-tester)"
    pbx = await start(tmp_path)
    await pbx.admin.add_carrier("acme", ["127.0.0.2/32"])
    await pbx.admin.add_did("1632960002", "bob")
    server = (pbx.listening[0].host, pbx.listening[0].port)
    bob = await SoftPhone("bob", USERS["bob"], "127.0.0.22", server).start()
    try:
        answering = asyncio.create_task(bob.answer_call())
        carrier = asyncio.create_task(
            run_sipp(
                "carrier_audio.xml", *server, local_ip="127.0.0.2",
                keys={"did": "1632960002", "from_user": "442079460000",
                      "from_host": "carrier.example", "pcap": str(PCAP)},
                extra=["-mi", "127.0.0.2", "-mp", str(free_port()), "-d", "8000"],
                timeout=30,
            )
        )  # fmt: skip
        invite = await answering
        assert parse(invite.body).media[0].address == "127.0.0.1"  # the carrier's, anchored
        assert bob.dialog is not None
        # Bob talks too, as phones do: that is how the relay finds him behind his NAT.
        talking = asyncio.create_task(bob.rtp.stream(bob.dialog.media_address(), b"bob", 350))
        await bob.answer_bye(timeout=15)
        talking.cancel()
        result = await carrier
        assert result.returncode == 0, str(result)
        assert len(bob.rtp.received) >= 0.9 * 236, len(bob.rtp.received)
    finally:
        bob.close()
        await pbx.stop()


async def test_with_worker_processes_the_call_is_relayed_where_it_is_handled(
    tmp_path: Path,
) -> None:
    """Two workers read the SIP socket; the call's relay lives in the worker that owns the
    call (main holds no session), and the NATed phones hear each other."""
    pbx = await start(tmp_path, workers=2)
    try:
        alice, bob = await call_between(pbx)
        try:
            heard_by_alice, heard_by_bob = await talk(alice, bob)
            assert heard_by_alice >= 0.9 * PACKETS and heard_by_bob >= 0.9 * PACKETS
            assert pbx.core.media is not None and pbx.core.media.calls == {}
        finally:
            alice.close()
            bob.close()
    finally:
        await pbx.stop()


def cluster_of(pbx: Pbx) -> MainDuties:
    assert isinstance(pbx.duties, MainDuties)
    return pbx.duties


async def relayed_row(calls: Callable[[], list[CallInfo]], at_least: int) -> MediaStats:
    """The one call's media once its counters reached `at_least` packets each way (the
    workers report about once a second)."""
    deadline = asyncio.get_running_loop().time() + 5.0
    while True:
        rows = calls()
        media = rows[0].media if len(rows) == 1 else None
        if media is not None and min(media.caller_packets, media.callee_packets) >= at_least:
            return media
        assert asyncio.get_running_loop().time() < deadline, rows
        await asyncio.sleep(0.1)


async def test_main_and_an_attached_console_show_a_workers_relayed_media(
    tmp_path: Path,
) -> None:
    """The relay lives in a worker, but main's Calls pane (and a console attached over the
    control socket) shows the call relayed, its counters growing as the phones talk, and the
    audio stopped once they stop; the row goes with the call."""
    pbx = await start(tmp_path, workers=2)
    control = ControlServer(pbx, tmp_path / "pbx.db.ctl", AccessPolicy(os.geteuid()))
    await control.start()
    attached = RemoteCore(pbx.settings, control.path)
    try:
        await attached.start()
        alice, bob = await call_between(pbx)
        try:
            [row] = pbx.calls()
            assert row.media is None or row.media.caller_packets == 0  # nothing relayed yet
            await talk(alice, bob, 50)
            first = await relayed_row(pbx.calls, 45)
            assert len(first.streams) == 1 and first.streams[0].caller_bytes >= 45 * 172
            await talk(alice, bob, 50)
            second = await relayed_row(pbx.calls, 95)
            assert second.caller_packets > first.caller_packets
            assert second.callee_packets > first.callee_packets

            async def remote_calls() -> list[CallInfo]:
                await attached.refresh_snapshots(("calls",))
                return attached.calls()

            [remote] = await remote_calls()
            assert remote.media is not None and remote.media.caller_packets >= 95
            await asyncio.sleep(1.5)  # nobody talks: no report comes, the silence grows
            [row] = pbx.calls()
            assert row.media is not None and row.media.idle_seconds >= 1.5
            await hang_up(alice, bob)
            await asyncio.sleep(0.2)
            assert pbx.calls() == [] and len(cluster_of(pbx).remote_calls.media) == 0
        finally:
            alice.close()
            bob.close()
    finally:
        await attached.stop()
        await control.stop()
        await pbx.stop()


async def test_tshark_on_lo_counts_the_audio_the_relay_sent_each_phone(tmp_path: Path) -> None:
    """The count by an independent capture: Wireshark's own reading of lo, RTP decoded."""
    tshark = shutil.which("tshark")
    assert tshark is not None, "tshark is not installed (apt-get install tshark)"
    pbx = await start(tmp_path)
    alice, bob = await call_between(pbx)
    capture_file = tmp_path / "rtp.pcap"
    capture = await asyncio.create_subprocess_exec(
        tshark, "-i", "lo", "-f", "udp and src host 127.0.0.1 and src portrange 42000-42399",
        "-w", str(capture_file), stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    try:
        assert capture.stderr is not None
        while b"Capturing on" not in await asyncio.wait_for(capture.stderr.readline(), 10):
            pass
        await talk(alice, bob)
    finally:
        capture.terminate()
        await capture.wait()
        alice.close()
        bob.close()
        await pbx.stop()
    decoded = subprocess.run(
        [tshark, "-r", str(capture_file), "-d", "udp.port==42000-42399,rtp",
         "-Y", "rtp", "-T", "fields", "-e", "ip.dst", "-e", "rtp.seq"],
        capture_output=True, text=True, timeout=60, check=True,
    ).stdout.split("\n")  # fmt: skip
    to_alice = {line for line in decoded if line.startswith("127.0.0.21\t")}
    to_bob = {line for line in decoded if line.startswith("127.0.0.22\t")}
    assert len(to_alice) >= 0.9 * PACKETS and len(to_bob) >= 0.9 * PACKETS


def decoy_sdp(phone: SoftPhone, address: str, port: int) -> bytes:
    """An offer from `phone` naming somebody else's media address (and on hold)."""
    return (
        f"v=0\r\no={phone.user} 1 9 IN IP4 {address}\r\ns=-\r\nc=IN IP4 {address}\r\nt=0 0\r\n"
        f"m=audio {port} RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\na=sendonly\r\n"
    ).encode()


async def refuse_a_reinvite(alice: SoftPhone, bob: SoftPhone, mallory: RtpEndpoint) -> None:
    """Alice re-offers Mallory's address, on hold; Bob refuses it with a 488."""
    refusing = asyncio.create_task(bob.answer_reinvite("sendrecv", 2, status=488))
    final = await alice.reinvite("sendonly", 2, decoy_sdp(alice, mallory.sock.getsockname()[0],
                                                          mallory.port))  # fmt: skip
    await refusing
    assert final.status == 488


async def test_a_refused_reinvite_leaves_the_relay_as_the_last_good_exchange_set_it(
    tmp_path: Path,
) -> None:
    """RFC 3261 §14.1: after a failed re-INVITE the session is as if it had never been sent.
    The refused offer named Mallory's address: had the relay kept it, her packets (now the
    best-ranked source, its window open again) would take Alice's place; rolled back, she
    gets nothing through, the stream is not on hold, and the audio flows as before."""
    pbx = await start(tmp_path)
    alice, bob = await call_between(pbx)
    mallory = RtpEndpoint("127.0.0.23")
    try:
        assert alice.dialog is not None and bob.dialog is not None and pbx.core.media is not None
        await talk(alice, bob, 10)
        await refuse_a_reinvite(alice, bob, mallory)
        session = pbx.core.media.engine.sessions[alice.dialog.call_id]  # type: ignore[attr-defined]
        alice_rtp = session.streams[0].ports[0][0]
        assert alice_rtp.latch.expected == ("127.0.0.99", alice.rtp.port)  # her SDP's, again
        spraying = asyncio.create_task(
            mallory.stream(alice.dialog.media_address(), b"mallory", PACKETS)
        )
        heard_by_alice, heard_by_bob = await talk(alice, bob)
        await spraying
        assert heard_by_alice >= 0.9 * PACKETS and heard_by_bob >= 0.9 * PACKETS
        assert bob.rtp.from_marker(b"mallory") == 0 and mallory.received == []
        stats = pbx.core.media.stats(alice.dialog.call_id, pbx.clock())
        assert stats is not None and not stats.streams[0].on_hold
        await hang_up(alice, bob)
    finally:
        mallory.close()


def has_ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as probe:
            probe.bind(("::1", 0))
    except OSError:
        return False
    return True


ipv6 = pytest.mark.skipif(not has_ipv6_loopback(), reason="no IPv6 loopback (::1)")


async def start_dual_stack(tmp_path: Path, **media: object) -> Pbx:
    """SIP on 127.0.0.1 and [::1], the same port: phones of either family reach it."""
    port = free_port()
    listen = tuple(
        ListenAddress(transport, host, port)
        for host in ("127.0.0.1", "::1")
        for transport in ("udp", "tcp")
    )
    settings = replace(MediaSettings(port_min=42400, port_max=42600), **media)
    return await start_pbx(tmp_path, media=settings, listen=listen)


async def dual_stack_call(pbx: Pbx, alice_ip: str, alice_nat: str) -> tuple[SoftPhone, SoftPhone]:
    """Alice on `alice_ip` (announcing `alice_nat`) calls Bob, a NATed IPv6 phone on ::1 whose
    SDP names 2001:db8::99 (documentation space: nothing answers there)."""
    port = pbx.listening[0].port
    alice_server = ("::1" if ":" in alice_ip else "127.0.0.1", port)
    alice = SoftPhone("alice", USERS["alice"], alice_ip, alice_server, alice_nat)
    bob = SoftPhone("bob", USERS["bob"], "::1", ("::1", port), "2001:db8::99")
    await alice.start()
    await bob.start()
    answering = asyncio.create_task(bob.answer_call())
    final = await alice.call("bob")
    await answering
    assert final.status == 200
    return alice, bob


@ipv6
@pytest.mark.parametrize(
    ("alice_ip", "alice_nat", "relay_to_alice"),
    [("::1", "2001:db8::98", "::1"), ("127.0.0.21", "127.0.0.99", "127.0.0.1")],
    ids=["both-ipv6", "ipv4-to-ipv6"],
)
async def test_ipv6_legs_get_ipv6_relay_ports(
    tmp_path: Path, alice_ip: str, alice_nat: str, relay_to_alice: str
) -> None:
    """Each leg's SDP names the relay in that leg's family (`c=IN IP6 ::1` to the IPv6 phone,
    `c=IN IP4` to an IPv4 one), the ports facing it are of that family, and the NATed
    phones hear each other both ways."""
    pbx = await start_dual_stack(tmp_path)
    alice, bob = await dual_stack_call(pbx, alice_ip, alice_nat)
    try:
        assert alice.dialog is not None and bob.dialog is not None
        assert b"c=IN IP6 ::1\r\n" in bob.dialog.remote_sdp
        assert alice.dialog.media_address()[0] == relay_to_alice
        heard_by_alice, heard_by_bob = await talk(alice, bob)
        assert heard_by_alice >= 0.9 * PACKETS and heard_by_bob >= 0.9 * PACKETS
        assert pbx.core.media is not None
        relay = pbx.core.media.engine  # type: ignore[union-attr]
        [session] = relay.sessions.values()
        [stream] = session.streams
        families = [pair[0].sock.family for pair in stream.ports]
        expected = socket.AF_INET6 if ":" in alice_ip else socket.AF_INET
        assert families == [expected, socket.AF_INET6]
        await hang_up(alice, bob)
        assert relay.sessions == {}
    finally:
        alice.close()
        bob.close()
        await pbx.stop()


async def test_a_stranger_spraying_rtp_and_rtcp_ports_gets_nothing_through(
    tmp_path: Path,
) -> None:
    """Mallory sprays all four relay ports of the call (each side's RTP and RTCP) from the
    start, before the phones' own first packets: none of hers is relayed, none of the
    phones' RTP or RTCP is turned towards her, and their RTCP still goes through."""
    pbx = await start(tmp_path)
    alice, bob = await call_between(pbx)
    mallory = RtpEndpoint("127.0.0.23")
    try:
        assert alice.dialog is not None and bob.dialog is not None and pbx.core.media is not None
        targets = []
        for dialog in (alice.dialog, bob.dialog):
            address, port = dialog.media_address()
            targets += [(address, port), (address, port + 1)]
        spraying = [asyncio.create_task(mallory.stream(target, b"mallory", PACKETS))
                    for target in targets]  # fmt: skip
        await asyncio.sleep(0.05)  # hers arrive first

        async def rtcp(phone: SoftPhone, marker: bytes) -> None:
            assert phone.dialog is not None
            address, port = phone.dialog.media_address()
            for _ in range(10):
                report = bytes([0x81, 201, 0, 7]) + bytes(8) + marker
                phone.rtp.sock.sendto(report, (address, port + 1))
                await asyncio.sleep(0.05)

        heard = await asyncio.gather(
            talk(alice, bob), rtcp(alice, b"alice-rtcp"), rtcp(bob, b"bob-rtcp"), *spraying
        )
        heard_by_alice, heard_by_bob = heard[0]
        assert heard_by_alice >= 0.9 * PACKETS and heard_by_bob >= 0.9 * PACKETS
        assert alice.rtp.from_marker(b"bob-rtcp") >= 9 and bob.rtp.from_marker(b"alice-rtcp") >= 9
        assert alice.rtp.from_marker(b"mallory") == 0 and bob.rtp.from_marker(b"mallory") == 0
        assert mallory.received == []
        stats = pbx.core.media.stats(alice.dialog.call_id, pbx.clock())
        assert stats is not None and stats.streams[0].dropped >= 4 * PACKETS * 0.9
    finally:
        mallory.close()
        alice.close()
        bob.close()
        await pbx.stop()


async def test_rtpengine_counters_fill_the_calls_figures_and_a_refused_reinvite_is_undone(
    tmp_path: Path,
) -> None:
    """The call's `query` answer gives the same figures as the embedded relay's; a re-INVITE
    refused with a 488 leaves rtpengine where the last good exchange put it (rtpengine has
    no way to withdraw an offer: it is given that exchange again)."""
    with rtpengine_daemon(tmp_path, 44400, 44600) as ng_port:
        pbx = await start(tmp_path, engine="rtpengine", rtpengine=f"127.0.0.1:{ng_port}")
        alice, bob = await call_between(pbx)
        mallory = RtpEndpoint("127.0.0.23")
        try:
            assert alice.dialog is not None and pbx.core.media is not None
            sessions = pbx.core.media
            sessions.poll_seconds = 0.2  # type: ignore[union-attr]
            heard_by_alice, heard_by_bob = await talk(alice, bob)
            assert heard_by_alice >= 0.9 * PACKETS and heard_by_bob >= 0.9 * PACKETS
            call_id = alice.dialog.call_id
            for _ in range(30):  # housekeeping asks every second, the answer comes after
                stats = sessions.stats(call_id, pbx.clock())
                if stats is not None and stats.streams and stats.caller_packets >= PACKETS:
                    break
                await asyncio.sleep(0.2)
            assert stats is not None and len(stats.streams) == 1
            [stream] = stats.streams
            assert stream.caller_packets >= 0.9 * PACKETS and stream.callee_packets >= 0.9 * PACKETS
            assert stream.caller_bytes >= 0.9 * PACKETS * 172 and not stream.on_hold
            assert stats.idle_seconds < 5
            await refuse_a_reinvite(alice, bob, mallory)
            await asyncio.sleep(0.3)  # the last good offer and answer, given again
            engine = sessions.engine  # type: ignore[union-attr]
            reply = await engine.query(call_id)
            [media] = reply[b"tags"][alice.dialog.local_tag.encode()][b"medias"]
            advertised = media[b"streams"][0][b"advertised endpoint"]
            assert advertised[b"address"] == b"127.0.0.99"  # not Mallory's
            assert advertised[b"port"] == alice.rtp.port
            assert b"recv" in media[b"flags"]  # not the refused sendonly
            # Alice's address changed twice in rtpengine's eyes (to Mallory's, and back): it
            # learns her anew, which takes it 3 s (`endpoint-learning = heuristic`).
            await talk(alice, bob, 200)
            heard_by_alice, heard_by_bob = await talk(alice, bob)
            assert heard_by_alice >= 0.9 * PACKETS and heard_by_bob >= 0.9 * PACKETS
            await hang_up(alice, bob)
        finally:
            mallory.close()
            alice.close()
            bob.close()
            await pbx.stop()


async def test_rtpengine_timing_a_call_out_hangs_it_up_with_media_timeout_in_its_cdr(
    tmp_path: Path,
) -> None:
    """rtpengine ends the session of a call without media itself (here after 2 s); the next
    `query` finds it gone, and the call is hung up as the embedded relay's timeout does."""
    with rtpengine_daemon(tmp_path, 44600, 44800, timeout=2) as ng_port:
        pbx = await start(tmp_path, engine="rtpengine", rtpengine=f"127.0.0.1:{ng_port}")
        alice, bob = await call_between(pbx)
        try:
            assert pbx.core.media is not None
            pbx.core.media.poll_seconds = 0.5  # type: ignore[union-attr]
            await talk(alice, bob, 10)
            await ended_by_media_timeout(pbx, alice, bob, each=8, within=10)
        finally:
            alice.close()
            bob.close()
            await pbx.stop()


@ipv6
async def test_the_same_ipv6_call_without_the_relay_is_silent(tmp_path: Path) -> None:
    pbx = await start_dual_stack(tmp_path, relay="never")
    alice, bob = await dual_stack_call(pbx, "::1", "2001:db8::98")
    try:
        assert bob.dialog is not None
        assert bob.dialog.media_address()[0] == "2001:db8::98"  # untouched
        assert await talk(alice, bob, 25) == (0, 0)
    finally:
        alice.close()
        bob.close()
        await pbx.stop()
