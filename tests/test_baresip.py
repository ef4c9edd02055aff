"""Real softphones with the server's default settings: two Debian baresip phones register and
call each other through pbxtui (auto-answer, CANCEL while ringing, BYE from either side), and
sipsak registers.

Only the listen address, database and domain differ from `Settings()`: these tests are the
proof that the defaults (the digest algorithms above all) work with the clients people have.
Missing baresip or sipsak fails in CI and skips elsewhere, like SIPp.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from support.baresip import BaresipPhone
from support.ports import free_port

from core.pbx import Pbx
from core.settings import ListenAddress, Settings
from core.store.rows import CdrRow

DOMAIN = "pbx.test"
PASSWORDS = {"alice": "alice-secret-1", "bob": "bob-secret-22", "carol": "carol-secret-333"}


async def _default_pbx(tmp_path: Path, listen: tuple[ListenAddress, ...] = ()) -> Pbx:
    port = free_port()
    settings = Settings(
        domain=DOMAIN,
        db_path=tmp_path / "pbx.db",
        listen=listen
        or (ListenAddress("udp", "127.0.0.1", port), ListenAddress("tcp", "127.0.0.1", port)),
    )
    assert settings.auth == Settings().auth  # the defaults under test
    pbx = Pbx(settings)
    await pbx.start()
    for user, password in PASSWORDS.items():
        await pbx.admin.add_user(user, password)
    return pbx


async def _registered(pbx: Pbx, user: str, timeout: float = 10.0) -> None:
    async with asyncio.timeout(timeout):
        while not pbx.location.lookup(user, pbx.clock()):
            await asyncio.sleep(0.05)


async def _cdr(pbx: Pbx, call_id: str, timeout: float = 5.0) -> CdrRow:
    async with asyncio.timeout(timeout):
        while True:
            await pbx.store.flush()
            for row in await pbx.store.list_cdrs():
                if row.call_id == call_id and row.ended_at is not None:
                    return row
            await asyncio.sleep(0.05)


@pytest.fixture
async def phones(tmp_path: Path) -> AsyncIterator[tuple[Pbx, BaresipPhone, BaresipPhone]]:
    pbx = await _default_pbx(tmp_path)
    port = pbx.listening[0].port
    alice = BaresipPhone(
        tmp_path / "alice", "alice", PASSWORDS["alice"], DOMAIN, ("127.0.0.1", port)
    )
    bob = BaresipPhone(tmp_path / "bob", "bob", PASSWORDS["bob"], DOMAIN, ("127.0.0.1", port))
    try:
        await alice.start()
        await bob.start()
        await _registered(pbx, "alice")
        await _registered(pbx, "bob")
        yield pbx, alice, bob
    finally:
        await alice.stop()
        await bob.stop()
        await pbx.stop()


async def test_two_baresip_phones_call_with_auto_answer_and_the_caller_hangs_up(
    phones: tuple[Pbx, BaresipPhone, BaresipPhone],
) -> None:
    pbx, alice, bob = phones
    await alice.command("dial", f"sip:bob@{DOMAIN}")
    answered = await bob.wait_for("CALL_ESTABLISHED")
    await alice.wait_for("CALL_ESTABLISHED")
    assert answered["peeruri"] == f"sip:alice@{DOMAIN}"
    await asyncio.sleep(0.5)
    await alice.command("hangup")  # BYE from the caller
    await bob.wait_for("CALL_CLOSED")
    cdr = await _cdr(pbx, answered["id"])
    assert (cdr.caller, cdr.callee, cdr.status) == ("alice", "bob", 200)
    assert cdr.duration > 0


async def test_the_callee_hangs_up_and_the_other_direction_works(
    phones: tuple[Pbx, BaresipPhone, BaresipPhone],
) -> None:
    pbx, alice, bob = phones
    await bob.command("dial", f"sip:alice@{DOMAIN}")
    answered = await alice.wait_for("CALL_ESTABLISHED")
    await bob.wait_for("CALL_ESTABLISHED")
    await alice.command("hangup")  # BYE from the callee, travelling the record-routed path
    closed = await bob.wait_for("CALL_CLOSED")
    assert closed["id"] == answered["id"]
    cdr = await _cdr(pbx, answered["id"])
    assert (cdr.caller, cdr.callee, cdr.status) == ("bob", "alice", 200)


async def test_a_cancel_while_ringing_stops_the_callee_ringing(
    phones: tuple[Pbx, BaresipPhone, BaresipPhone],
) -> None:
    pbx, alice, bob = phones
    await bob.command("answermode", "manual")
    await alice.command("dial", f"sip:bob@{DOMAIN}")
    incoming = await bob.wait_for("CALL_INCOMING")
    await alice.wait_for("CALL_RINGING")
    await alice.command("hangup")  # before an answer: a CANCEL (RFC 3261 §9)
    closed = await bob.wait_for("CALL_CLOSED")
    assert closed["id"] == incoming["id"]
    cdr = await _cdr(pbx, incoming["id"])
    assert (cdr.status, cdr.answered_at) == (487, None)
    # A manual answer after all that still works.
    await alice.command("dial", f"sip:bob@{DOMAIN}")
    await bob.wait_for("CALL_INCOMING")
    await bob.command("accept")
    await alice.wait_for("CALL_ESTABLISHED")
    await bob.command("hangup")
    await alice.wait_for("CALL_CLOSED")


def _sipsak() -> str:
    path = shutil.which("sipsak")
    if path is None:
        if os.environ.get("CI"):
            pytest.fail("sipsak is not installed (apt-get install sipsak)")
        pytest.skip("sipsak is not installed (apt-get install sipsak)")
    return path


async def test_sipsak_registers_with_the_defaults(tmp_path: Path) -> None:
    pbx = await _default_pbx(tmp_path)
    port = pbx.listening[0].port
    try:
        # The Request-URI carries no port (-r gives it): sipsak 0.9.8 cuts a five-digit port
        # in the URI it writes to four digits. -x: sipsak asks for 15 s, under min_expires.
        command = [_sipsak(), "-U", "-s", "sip:carol@127.0.0.1", "-r", str(port)]
        command += ["-a", PASSWORDS["carol"], "-u", "carol", "-H", "127.0.0.1", "-E", "udp"]
        command += ["-x", "120", "-i", "-vv"]  # usrloc mode (-U): REGISTER, answer the challenge
        result = await asyncio.to_thread(
            subprocess.run, command, capture_output=True, text=True, timeout=20, check=False
        )
        text = result.stdout + result.stderr
        assert result.returncode == 0, text
        assert "All usrloc tests completed successful" in text, text
        assert pbx.location.lookup("carol", pbx.clock())
    finally:
        await pbx.stop()


async def test_behind_1_to_1_nat_every_header_carries_the_advertised_address(
    tmp_path: Path,
) -> None:
    """A cloud instance: the server listens on its private address (127.0.0.1 here) and is
    reached on its public one (127.0.0.77). The second listener on 127.0.0.77 stands in for
    the provider's NAT, which delivers what is sent to the public address. Phones reach the
    server on the private address; every Via and Record-Route must name the public one, so
    the BYEs, which follow the Record-Route, arrive over the "NAT"."""
    port = free_port()
    public = "127.0.0.77"
    listen = (
        ListenAddress("udp", "127.0.0.1", port, advertise_host=public),
        ListenAddress("udp", public, port),
    )
    pbx = await _default_pbx(tmp_path, listen)
    alice = BaresipPhone(
        tmp_path / "alice", "alice", PASSWORDS["alice"], DOMAIN, ("127.0.0.1", port)
    )
    bob = BaresipPhone(tmp_path / "bob", "bob", PASSWORDS["bob"], DOMAIN, ("127.0.0.1", port))
    try:
        await alice.start(trace=True)
        await bob.start(trace=True)
        await _registered(pbx, "alice")
        await _registered(pbx, "bob")
        await alice.command("dial", f"sip:bob@{DOMAIN}")
        answered = await bob.wait_for("CALL_ESTABLISHED")
        await alice.wait_for("CALL_ESTABLISHED")
        await bob.command("hangup")
        await alice.wait_for("CALL_CLOSED")
        cdr = await _cdr(pbx, answered["id"])
        assert (cdr.status, cdr.reason) == (200, "callee hung up")
        trace = bob.log(limit=200_000)
        assert f"Record-Route: <sip:{public}:{port};" in trace
        assert f"Via: SIP/2.0/UDP {public}:{port};branch=" in trace
        assert f"Record-Route: <sip:127.0.0.1:{port}" not in trace
        assert f"Via: SIP/2.0/UDP 127.0.0.1:{port}" not in trace
    finally:
        await alice.stop()
        await bob.stop()
        await pbx.stop()


async def test_phones_set_up_from_what_user_add_printed_register_and_call(tmp_path: Path) -> None:
    """The README's "Connecting phones" path on a first run: the default domain, users added
    with `pbxtui user add --generate` while the server runs, and baresip accounts written
    from the printed fields alone (server, port, username, password; no outbound proxy)."""
    port = free_port()
    db = tmp_path / "pbx.db"
    listen = (ListenAddress("udp", "127.0.0.1", port), ListenAddress("tcp", "127.0.0.1", port))
    pbx = Pbx(Settings(db_path=db, listen=listen))  # domain: the default, pbx.local
    await pbx.start()
    phones: list[BaresipPhone] = []
    try:
        for user in ("alice", "bob"):
            fields = await asyncio.to_thread(_user_add, db, port, user)
            server, port_text = fields["SIP server / Domain"], fields["Port"].split()[0]
            assert (server, port_text) == ("127.0.0.1", str(port))
            assert fields["Outbound proxy"] == "none"
            phone = BaresipPhone(
                tmp_path / user, user, fields["Password"], f"{server}:{port_text}", None
            )
            phones.append(phone)
        async with asyncio.timeout(5):  # the server picks up the CLI's users (data_version)
            while pbx.users.get("bob") is None:
                await asyncio.sleep(0.05)
        for phone in phones:
            await phone.start()
        await _registered(pbx, "alice")
        await _registered(pbx, "bob")
        alice, bob = phones
        await alice.command("dial", f"sip:bob@127.0.0.1:{port}")
        answered = await bob.wait_for("CALL_ESTABLISHED")
        await alice.wait_for("CALL_ESTABLISHED")
        await bob.command("hangup")
        await alice.wait_for("CALL_CLOSED")
        assert (await _cdr(pbx, answered["id"])).status == 200
    finally:
        for phone in phones:
            await phone.stop()
        await pbx.stop()


def _user_add(db: Path, port: int, user: str) -> dict[str, str]:
    """`pbxtui user add USER --generate`, as an operator runs it; the phone fields printed."""
    command = [sys.executable, "-m", "pbxtui", "--db", str(db), "--listen"]
    command += [f"udp:127.0.0.1:{port}", "--listen", f"tcp:127.0.0.1:{port}"]
    result = subprocess.run(
        [*command, "user", "add", user, "--generate"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
        env={**os.environ, "PBXTUI_CONFIG": "", "HOME": str(db.parent)},
    )
    assert result.returncode == 0, result.stderr
    block = result.stdout.split("In the phone's SIP account:\n")[1]
    return {line[:20].strip(): line[21:] for line in block.splitlines() if line.strip()}
