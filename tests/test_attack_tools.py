"""Real attack tools against an in-process Pbx: SIPVicious (svmap, svwar, svcrack from
Debian's `sipvicious` package) and a SIPp flood, each from its own loopback address.

The tools run as subprocesses, awaited asynchronously so the server in this event loop keeps
answering. Every run is bounded (the tools' own `--maximumtime` and a hard timeout).

svwar and svcrack 0.3.3 accept `-b` but never pass it on to their scanner object, so they
would send from 127.0.0.1, which is the server's own address and exempt from bans. They are
run through `_PIN_SOURCE`, which binds their socket to the attacker's address instead; the
tool itself is unchanged. svmap honours `-b` and gets it too.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, replace
from pathlib import Path

import pytest
from conftest import USERS, start_pbx
from support.client import UdpClient
from support.phone import Phone
from support.ports import free_port
from support.sipp import run_sipp

from core.events import Event, SecurityEvent, SourceBanned
from core.pbx import Pbx
from core.settings import SecuritySettings
from core.sip.digest import build_authorization, pick_challenge
from core.sip.fields import parse_auth
from core.sip.message import Response

ATTACKER = "127.0.0.3"
LEGITIMATE = "127.0.0.4"
EXTENSIONS = {str(number): f"ext-{number}-Secret!" for number in range(100, 111)}

# Runs a SIPVicious tool with every socket it binds to the wildcard address bound to the
# address given first instead: argv = [source ip, tool path, tool arguments...].
_PIN_SOURCE = """
import os, runpy, socket, sys
source, tool = sys.argv[1], sys.argv[2]
sys.path.insert(0, os.path.dirname(tool))  # as if run directly: the package sits beside it
_bind = socket.socket.bind
def bind(self, address):
    host, *rest = address
    return _bind(self, (host or source, *rest))
socket.socket.bind = bind
sys.argv = [tool, *sys.argv[3:]]
runpy.run_path(tool, run_name="__main__")
"""


def sipvicious_tool(name: str) -> Path:
    """The tool's script. In CI a missing tool fails the test; elsewhere it skips it."""
    path = shutil.which(name)
    if path is None:
        message = f"{name} is not installed (apt-get install sipvicious)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return Path(path).resolve()


def _interpreter(script: Path) -> str:
    """The Python the tool is installed for (its #! line): the test's own may be a venv."""
    first = script.read_text(errors="replace").splitlines()[0]
    return first[2:].strip().split()[0] if first.startswith("#!") else "python3"


@dataclass
class ToolRun:
    returncode: int
    output: str  # stdout and stderr together: SIPVicious logs its verdicts to stderr
    seconds: float

    @property
    def found_nothing(self) -> bool:
        return "found nothing" in self.output


async def run_tool(name: str, source: str, *args: str, timeout: float = 30) -> ToolRun:
    script = sipvicious_tool(name)
    started = time.monotonic()
    process = await asyncio.create_subprocess_exec(
        _interpreter(script),
        "-c",
        _PIN_SOURCE,
        source,
        str(script),
        *args,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    try:
        output, _ = await asyncio.wait_for(process.communicate(), timeout)
    except TimeoutError:
        process.kill()
        output, _ = await process.communicate()
        pytest.fail(f"{name} still running after {timeout}s:\n{output.decode()[-2000:]}")
    assert process.returncode is not None
    return ToolRun(process.returncode, output.decode(errors="replace"), time.monotonic() - started)


def _port(pbx: Pbx) -> str:
    return str(pbx.listening[0].port)


def _feed(pbx: Pbx) -> list[Event]:
    return pbx.bus.feed.read_since(0)[0]


def _bans_of(pbx: Pbx, ip: str) -> list[SourceBanned]:
    return [e for e in _feed(pbx) if isinstance(e, SourceBanned) and e.source == ip]


def _actions(pbx: Pbx, action: str) -> list[SecurityEvent]:
    return [e for e in _feed(pbx) if isinstance(e, SecurityEvent) and e.action == action]


async def _pbx(tmp_path: Path, **security: object) -> Pbx:
    users = {**USERS, **EXTENSIONS}
    return await start_pbx(tmp_path, users=users, security=replace(SecuritySettings(), **security))


# -- SIPVicious ----------------------------------------------------------------------------


async def test_sipvicious_finds_nothing_and_is_banned_after_a_few_runs(tmp_path: Path) -> None:
    """Each tool's first request carries `User-Agent: friendly-scanner` and is dropped, so
    each gives up finding nothing (svwar and svcrack wait for an answer to their first probe,
    --force or not). After `scanner_ban_after` such requests the source is banned."""
    pbx = await _pbx(tmp_path)
    try:
        port, after = _port(pbx), pbx.settings.security.scanner_ban_after
        svmap = ("svmap", ATTACKER, "-b", ATTACKER, "-p", port, "127.0.0.1")
        runs = [
            await run_tool(*svmap, "-P", str(free_port(ATTACKER))),
            await run_tool(
                "svwar",
                ATTACKER,
                "-P",
                str(free_port(ATTACKER)),
                "-p",
                port,
                "-e",
                "90-120",
                "--force",
                "--maximumtime",
                "2",
                "127.0.0.1",
            ),
            await run_tool(
                "svcrack",
                ATTACKER,
                "-P",
                str(free_port(ATTACKER)),
                "-p",
                port,
                "-u",
                "100",
                "-r",
                "1000-1100",
                "--maximumtime",
                "2",
                "127.0.0.1",
            ),
        ]
        for run in runs:
            assert run.found_nothing, run.output
            assert "exists" not in run.output
        dropped = _actions(pbx, "scanner-dropped")
        assert {(e.source, e.user_agent) for e in dropped} == {(ATTACKER, "friendly-scanner")}
        (ban,) = _bans_of(pbx, ATTACKER)
        assert (ban.reason, ban.count) == ("scanner", after)
        assert pbx.security.stats.scanner_drops == after == len(runs)

        again = await run_tool(*svmap, "-P", str(free_port(ATTACKER)))
        assert again.found_nothing, again.output
        assert pbx.route.dropped == 1, "banned: dropped before it was even parsed"
    finally:
        await pbx.stop()


async def test_svwar_cannot_tell_real_extensions_without_the_scanner_filter(
    tmp_path: Path,
) -> None:
    """With User-Agent matching off, only the identical answers stand between svwar and the
    user list (100-110 exist, 90-99 and 111-120 do not). Its first probe, a random
    extension, is challenged like a real one: svwar gives up, and forced on it finds every
    answer the same as that first one and stops, having found nothing."""
    pbx = await _pbx(tmp_path, scanner_user_agents=())
    try:
        plain, forced = [
            await run_tool(
                "svwar",
                ATTACKER,
                "-P",
                str(free_port(ATTACKER)),
                "-p",
                _port(pbx),
                "-e",
                "90-120",
                *force,
                "--maximumtime",
                "2",
                "127.0.0.1",
            )
            for force in ([], ["--force"])
        ]
        for run in (plain, forced):
            assert run.found_nothing, run.output
            assert "exists" not in run.output
        assert "authentication request for an unknown extension" in plain.output
        assert not _bans_of(pbx, ATTACKER)
        assert _actions(pbx, "scanner-dropped") == []
    finally:
        await pbx.stop()


async def test_svcrack_is_banned_long_before_its_dictionary_ends(tmp_path: Path) -> None:
    """50 wrong passwords, then the right one: svcrack never gets there. The scanner filter
    is off, so its guesses are answered and counted like a disguised attacker's, and the
    source is banned at the per-address limit of failed authentications."""
    pbx = await _pbx(tmp_path, scanner_user_agents=())
    try:
        dictionary = tmp_path / "passwords.txt"
        guesses = [f"guess-{n:02d}" for n in range(50)] + [EXTENSIONS["100"]]
        dictionary.write_text("\n".join(guesses) + "\n")
        run = await run_tool(
            "svcrack",
            ATTACKER,
            "-P",
            str(free_port(ATTACKER)),
            "-p",
            _port(pbx),
            "-u",
            "100",
            "-d",
            str(dictionary),
            "--maximumtime",
            "2",
            "127.0.0.1",
        )
        assert run.found_nothing, run.output
        assert EXTENSIONS["100"] not in run.output
        (ban,) = _bans_of(pbx, ATTACKER)
        limit = pbx.settings.security.auth_fail_limit_per_ip
        assert (ban.reason, ban.count) == ("brute-force", limit)
        failures = _actions(pbx, "auth-failed")
        assert len(failures) == limit, "no guess after the limit reached the check"
        assert {(f.source, f.user) for f in failures} == {(ATTACKER, "100")}
        assert pbx.location.lookup("100", pbx.clock()) == []
    finally:
        await pbx.stop()


# -- a flood while real phones keep registering -------------------------------------------


@asynccontextmanager
async def _client(pbx: Pbx, ip: str) -> AsyncIterator[UdpClient]:
    client = await UdpClient((pbx.listening[0].host, pbx.listening[0].port)).open(ip)
    try:
        yield client
    finally:
        client.close()


async def _transaction(client: UdpClient, text: str, cseq: int) -> Response | None:
    """Send a request as a phone does over UDP: retransmit on Timer E (500 ms, doubling to
    4 s, RFC 3261 §17.1.2.2) until the final answer with our CSeq arrives or ~8 s pass."""
    interval, deadline = 0.5, time.monotonic() + 8.0
    while time.monotonic() < deadline:
        client.send(text)
        resend_at = time.monotonic() + interval
        while (remaining := resend_at - time.monotonic()) > 0:
            response = await client.response(remaining)
            if response is not None and response.cseq is not None and response.cseq.number == cseq:
                return response
        interval = min(interval * 2, 4.0)
    return None


async def _register(phone: Phone) -> float | None:
    """One digest REGISTER (401 round included); seconds it took, or None if it failed."""
    started = time.monotonic()
    first = await _transaction(phone.client, phone.register_text(), phone.cseq)
    if first is None or first.status != 401:
        return None
    challenge = pick_challenge(parse_auth(v) for v in first.headers.get_all("WWW-Authenticate"))
    assert challenge is not None
    authorization = build_authorization(
        challenge, phone.user, phone.password, "REGISTER", f"sip:{phone.domain}"
    )
    final = await _transaction(
        phone.client, phone.register_text(authorization=authorization), phone.cseq
    )
    if final is None or final.status != 200:
        return None
    return time.monotonic() - started


async def test_flood_is_banned_within_a_second_while_phones_keep_registering(
    pbx: Pbx,
) -> None:
    flood_size = 20_000
    host, port = pbx.listening[0].host, pbx.listening[0].port
    async with _client(pbx, LEGITIMATE) as client:
        phone = Phone(client, "alice", USERS["alice"])
        assert await _register(phone) is not None  # before the flood

        started = time.time()
        flood = asyncio.create_task(
            run_sipp(
                "flood_options.xml",
                host,
                port,
                calls=flood_size,
                rate=flood_size,
                local_ip=ATTACKER,
                timeout=30,
                extra=["-rp", "1000"],
            )
        )
        took: list[float | None] = []
        while not flood.done() or len(took) < 10:
            took.append(await _register(phone))
            await asyncio.sleep(0.05)
        result = await flood
    assert result.returncode == 0, str(result)

    (ban,) = _bans_of(pbx, ATTACKER)
    assert ban.reason == "flood"
    assert ban.at - started < 1.0, f"banned {ban.at - started:.2f}s after the flood began"
    assert not _bans_of(pbx, LEGITIMATE)
    assert None not in took, f"{took.count(None)} of {len(took)} registrations failed"
    at_the_door = pbx.security.stats.banned_drops
    assert at_the_door >= flood_size // 2, "the flood reached the server and was dropped there"
    print(
        f"flood of {flood_size}: banned after {ban.at - started:.3f}s, {ban.count} messages; "
        f"{at_the_door} dropped at the door (the kernel dropped "
        f"{flood_size - at_the_door - ban.count} before the server read them); {len(took)} "
        f"REGISTERs meanwhile, slowest {max(t for t in took if t is not None) * 1000:.0f} ms"
    )
    assert pbx.location.lookup("alice", pbx.clock())
