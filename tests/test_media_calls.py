"""Calls with audio through NAT, end to end over loopback.

Alice (127.0.0.21) and Bob (127.0.0.22) are phones behind "NAT": their Contact and SDP name
127.0.0.99, where nothing listens, while they really send SIP and RTP from their own
addresses. Through the relay their audio flows both ways; with `[media] relay = "never"` the
very same call is silent, which is what proves the counting can fail.
"""

from __future__ import annotations

import asyncio
from dataclasses import replace
from pathlib import Path

from conftest import USERS, start_pbx
from support.softphone import SoftPhone

from core.pbx import Pbx
from core.settings import MediaSettings

PACKETS = 100  # two seconds of 20 ms audio each way


async def start(tmp_path: Path, **media: object) -> Pbx:
    settings = replace(MediaSettings(port_min=42000, port_max=42400), **media)
    return await start_pbx(tmp_path, media=settings)


async def call_between(pbx: Pbx) -> tuple[SoftPhone, SoftPhone]:
    server = (pbx.listening[0].host, pbx.listening[0].port)
    alice = await SoftPhone("alice", USERS["alice"], "127.0.0.21", server).start()
    bob = await SoftPhone("bob", USERS["bob"], "127.0.0.22", server).start()
    answering = asyncio.create_task(bob.answer_call())
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
        assert pbx.media is not None
        stats = pbx.media.stats(alice.dialog.call_id, pbx.clock())
        assert stats is not None
        assert stats.caller_packets >= 0.9 * PACKETS and stats.callee_packets >= 0.9 * PACKETS
        await hang_up(alice, bob)
        assert pbx.media.calls == {} and pbx.media.engine.sessions == {}  # type: ignore[attr-defined]
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
