"""The Calls pane shows each call's media: relayed with its counters, or direct, and a
relayed call whose audio stopped as silent. Pilot against a real Pbx and two softphones."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from conftest import USERS
from support.rtpengine import rtpengine_daemon
from support.softphone import SoftPhone
from test_ui_panes import rows
from test_ui_support import console, refreshed, server_of

import screens.calls
from core.settings import MediaSettings


async def test_the_calls_pane_shows_relayed_media_and_silence(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(screens.calls, "SILENT_AFTER_SECONDS", 1.0)
    media = MediaSettings(port_min=42600, port_max=42800)
    async with console(tmp_path, users=USERS, core={"media": media}) as (app, pilot):
        server = server_of(app)
        alice = await SoftPhone("alice", USERS["alice"], "127.0.0.41", server).start()
        bob = await SoftPhone("bob", USERS["bob"], "127.0.0.42", server).start()
        try:
            answering = asyncio.create_task(bob.answer_call())
            assert (await alice.call("bob")).status == 200
            await answering
            assert alice.dialog is not None and bob.dialog is not None
            await asyncio.gather(
                alice.rtp.stream(alice.dialog.media_address(), b"alice", 20),
                bob.rtp.stream(bob.dialog.media_address(), b"bob", 20),
            )
            # Alice's phone reports over RTCP what it hears: 25 % lost, 20 ms of jitter.
            report = bytes([0x81, 201, 0, 7]) + bytes(8) + bytes([64, 0, 0, 9]) + bytes(4)
            relay_ip, relay_port = alice.dialog.media_address()
            alice.rtp.sock.sendto(
                report + (160).to_bytes(4, "big") + bytes(8), (relay_ip, relay_port + 1)
            )
            await asyncio.sleep(0.05)
            await pilot.press("6")
            await refreshed(pilot, app)
            [row] = rows(app, "calls")
            assert row[1:3] == ["alice", "bob"]
            assert row[-1].startswith("relayed →") and "pkt" in row[-1], row[-1]
            assert "loss 25/- %" in row[-1] and "jitter 20/- ms" in row[-1], row[-1]
            caller_packets = int(row[-1].split("→")[1].split()[0])
            assert caller_packets >= 18
            await asyncio.sleep(1.2)  # nobody talks any more
            await refreshed(pilot, app)
            [row] = rows(app, "calls")
            assert row[-1].startswith("no audio"), row[-1]
        finally:
            alice.close()
            bob.close()


async def test_the_calls_pane_shows_rtpengine_counters_like_the_relays(tmp_path: Path) -> None:
    """With rtpengine relaying, the same cell: packets each way from its `query` answers."""
    with rtpengine_daemon(tmp_path, 44810, 45000) as ng_port:
        media = MediaSettings(engine="rtpengine", rtpengine=f"127.0.0.1:{ng_port}")
        async with console(tmp_path, users=USERS, core={"media": media}) as (app, pilot):
            server = server_of(app)
            alice = await SoftPhone("alice", USERS["alice"], "127.0.0.41", server).start()
            bob = await SoftPhone("bob", USERS["bob"], "127.0.0.42", server).start()
            try:
                app.pbx.core.media.poll_seconds = 0.2  # type: ignore[union-attr]
                answering = asyncio.create_task(bob.answer_call())
                assert (await alice.call("bob")).status == 200
                await answering
                assert alice.dialog is not None and bob.dialog is not None
                await asyncio.gather(
                    alice.rtp.stream(alice.dialog.media_address(), b"alice", 40),
                    bob.rtp.stream(bob.dialog.media_address(), b"bob", 30),
                )
                await pilot.press("6")
                for _ in range(20):  # housekeeping asks once a second
                    await asyncio.sleep(0.2)
                    await refreshed(pilot, app)
                    [row] = rows(app, "calls")
                    if "→40 " in row[-1]:
                        break
                assert row[-1].startswith("relayed →40 ←30 pkt"), row[-1]
            finally:
                alice.close()
                bob.close()
