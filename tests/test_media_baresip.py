"""Two real softphones (baresip) talk through the relay: each plays a tone from a WAV file
(`aufile`), records what it hears (`sndfile`), and hears the other's tone, not its own.

baresip writes its real address in its SDP, so `[media] relay = "always"` anchors the call;
the recordings prove the audio crossed the relay both ways and arrived as G.711 it could
decode. The tones differ (440 Hz and 1 kHz), so a recording of one's own voice or of silence
fails the test.
"""

from __future__ import annotations

import asyncio
import math
import shutil
import struct
import wave
from pathlib import Path

from conftest import USERS, start_pbx
from support.ports import free_port

from core.pbx import Pbx
from core.settings import MediaSettings

TONES = {"alice": 440.0, "bob": 1000.0}
IPS = {"alice": "127.0.0.51", "bob": "127.0.0.52"}


def write_tone(path: Path, frequency: float, seconds: float = 20.0) -> None:
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(8000)
        samples = (
            int(12_000 * math.sin(2 * math.pi * frequency * n / 8000))
            for n in range(int(8000 * seconds))
        )
        out.writeframes(b"".join(struct.pack("<h", sample) for sample in samples))


def tone_power(path: Path, frequency: float) -> float:
    """Goertzel: the power at `frequency` in the recording's last second."""
    with wave.open(str(path), "rb") as recording:
        rate = recording.getframerate()
        frames = recording.readframes(recording.getnframes())
    samples = struct.unpack(f"<{len(frames) // 2}h", frames)[-rate:]
    coefficient = 2 * math.cos(2 * math.pi * frequency / rate)
    previous = before = 0.0
    for sample in samples:
        previous, before = sample + coefficient * previous - before, previous
    return previous**2 + before**2 - coefficient * previous * before


def configure(home: Path, user: str, server: tuple[str, int]) -> Path:
    home.mkdir()
    (home / "rec").mkdir()
    write_tone(home / "tone.wav", TONES[user])
    (home / "config").write_text(
        "module_path /usr/lib/baresip/modules\n"
        f"sip_listen {IPS[user]}:{free_port()}\nnet_interface {IPS[user]}\n"
        f"audio_source aufile,{home / 'tone.wav'}\n"
        f"audio_player aufile,{home / 'rec' / 'played.wav'}\n"
        "audio_alert aufile,/dev/null\n"
        f"snd_path {home / 'rec'}\n"
        "module g711.so\nmodule aufile.so\nmodule sndfile.so\nmodule account.so\n"
        "module menu.so\n"
    )
    (home / "accounts").write_text(
        f"<sip:{user}@pbx.test>;auth_pass={USERS[user]};"
        f'outbound="sip:{server[0]}:{server[1]}";regint=600;answermode=auto;audio_codecs=PCMU\n'
    )
    return home


async def registered(pbx: Pbx, user: str) -> None:
    for _ in range(100):
        if pbx.location.lookup(user, pbx.clock()):
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"baresip {user} did not register")


def heard(home: Path) -> Path:
    [recording] = (home / "rec").glob("dump-*-dec.wav")
    return recording


async def test_baresip_phones_hear_each_others_tone_through_the_relay(tmp_path: Path) -> None:
    binary = shutil.which("baresip")
    assert binary is not None, "baresip is not installed (apt-get install baresip)"
    media = MediaSettings(relay="always", port_min=42800, port_max=42900)
    pbx = await start_pbx(tmp_path, media=media)
    server = (pbx.listening[0].host, pbx.listening[0].port)
    homes = {user: configure(tmp_path / user, user, server) for user in TONES}
    bob = await asyncio.create_subprocess_exec(
        binary, "-f", str(homes["bob"]), "-t", "12",
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
    )  # fmt: skip
    alice = None
    try:
        await registered(pbx, "bob")
        alice = await asyncio.create_subprocess_exec(
            binary, "-f", str(homes["alice"]), "-e", "/dial sip:bob@pbx.test", "-t", "7",
            stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
        )  # fmt: skip
        await asyncio.wait_for(alice.wait(), 15)
        await asyncio.sleep(1.0)  # Alice's BYE reaches Bob, who closes his recording
        for user, other in (("alice", "bob"), ("bob", "alice")):
            recording = heard(homes[user])
            theirs = tone_power(recording, TONES[other])
            own = tone_power(recording, TONES[user])
            assert theirs > 100 * max(own, 1.0), (user, theirs, own)
        stats = pbx.core.media
        assert stats is not None and stats.calls == {}  # the BYE freed the relay
    finally:
        for process in (alice, bob):
            if process is not None and process.returncode is None:
                process.terminate()
                await process.wait()
        await pbx.stop()
