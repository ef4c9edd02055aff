"""Bans kept in SQLite: they survive a restart, and `pbxtui ban list|add|del` sees and changes
them while the server runs (it polls `PRAGMA data_version` about once a second).

The CLI runs as a real subprocess on the server's database file, like an admin's shell next
to a running `pbxtui --headless`; it is awaited asynchronously so the in-process server keeps
answering meanwhile.
"""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, replace
from pathlib import Path

import pytest
from conftest import start_pbx
from support.client import UdpClient, request_text

from core.events import EventBus, SecurityEvent, ServerEvent, SourceBanned, SourceUnbanned
from core.pbx import Pbx
from core.security.bans import BanList
from core.settings import SecuritySettings

ROOT = Path(__file__).resolve().parent.parent


async def _cli(db: Path, *args: str) -> tuple[int, str, str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "pbxtui",
        "--db",
        str(db),
        *args,
        cwd=ROOT,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    stdout, stderr = await asyncio.wait_for(process.communicate(), 30)
    assert process.returncode is not None
    return process.returncode, stdout.decode(), stderr.decode()


def _listed(output: str) -> dict[str, str]:
    """`ban list` rows as {ip: reason} (the table is aligned under its header)."""
    header, *rows = output.splitlines()
    reason_at = header.index("REASON")
    return {row.split()[0]: row[reason_at:].strip() for row in rows if row.strip()}


@asynccontextmanager
async def _client(pbx: Pbx, ip: str) -> AsyncIterator[UdpClient]:
    client = await UdpClient((pbx.listening[0].host, pbx.listening[0].port)).open(ip)
    try:
        yield client
    finally:
        client.close()


async def _answered(pbx: Pbx, ip: str) -> bool:
    async with _client(pbx, ip) as client:
        text = request_text("OPTIONS", "sip:pbx.test", local=client.local)
        return await client.ask(text, timeout=0.5) is not None


async def _until(condition: Callable[[], object], timeout: float) -> float:
    """Wait for `condition`; returns how long it took."""
    started = time.monotonic()
    while not condition():
        if time.monotonic() - started > timeout:
            pytest.fail(f"not within {timeout}s: {condition}")
        await asyncio.sleep(0.02)
    return time.monotonic() - started


def _banned(pbx: Pbx, ip: str) -> bool:
    return any(ban.ip == ip for ban in pbx.security.bans(pbx.clock()))


async def test_bans_survive_a_restart_and_the_cli_lists_them(tmp_path: Path) -> None:
    security = replace(SecuritySettings(), flood_limit=10)
    pbx = await start_pbx(tmp_path, security=security)
    try:
        async with _client(pbx, "127.0.0.9") as flooder:
            for _ in range(30):
                flooder.send(request_text("OPTIONS", "sip:pbx.test", local=flooder.local))
            await _until(lambda: _banned(pbx, "127.0.0.9"), timeout=3)
        await pbx.admin.ban("127.0.0.12", None, "kept out by hand")
        flood_ban_until = pbx.security.bans(pbx.clock())[0].until
    finally:
        await pbx.stop()
    db = pbx.settings.db_path

    code, listing, _ = await _cli(db, "ban", "list")
    assert code == 0
    assert _listed(listing) == {"127.0.0.9": "flood", "127.0.0.12": "kept out by hand"}

    again = await start_pbx(tmp_path, users={}, security=security)
    try:
        bans = {ban.ip: ban for ban in again.security.bans(again.clock())}
        assert set(bans) == {"127.0.0.9", "127.0.0.12"}
        assert bans["127.0.0.9"].until == pytest.approx(flood_ban_until, abs=0.01)
        assert bans["127.0.0.12"].permanent
        assert not await _answered(again, "127.0.0.9")
        assert not await _answered(again, "127.0.0.12")
        assert await _answered(again, "127.0.0.13")
        assert again.route.dropped == 2
    finally:
        await again.stop()


async def test_cli_ban_add_and_del_take_effect_while_the_server_runs(pbx: Pbx) -> None:
    db = pbx.settings.db_path
    assert await _answered(pbx, "127.0.0.14")

    code, out, err = await _cli(db, "ban", "add", "127.0.0.14", "--for", "600")
    assert (code, out.strip()) == (0, "banned 127.0.0.14 for 10:00"), err
    finished = time.monotonic()
    took = await _until(lambda: _banned(pbx, "127.0.0.14"), timeout=2.5)
    assert not await _answered(pbx, "127.0.0.14")
    print(f"CLI ban in force {took:.2f}s after the CLI exited")
    banned = [e for e in pbx.bus.feed.read_since(0)[0] if isinstance(e, SourceBanned)]
    assert [(e.source, e.reason) for e in banned] == [("127.0.0.14", "banned by hand")]
    assert time.monotonic() - finished < 3.0

    # The server's own bans show in the CLI, and the CLI can lift them.
    await pbx.admin.ban("127.0.0.15", 600, "console ban")
    await pbx.store.flush()
    code, listing, _ = await _cli(db, "ban", "list")
    assert set(_listed(listing)) == {"127.0.0.14", "127.0.0.15"}

    for ip in ("127.0.0.14", "127.0.0.15"):
        code, _out, err = await _cli(db, "ban", "del", ip)
        assert code == 0, err
    await _until(lambda: not pbx.security.bans(pbx.clock()), timeout=2.5)
    assert await _answered(pbx, "127.0.0.14")
    assert await _answered(pbx, "127.0.0.15")
    unbanned = [e for e in pbx.bus.feed.read_since(0)[0] if isinstance(e, SourceUnbanned)]
    assert sorted((e.source, e.detail) for e in unbanned) == [
        ("127.0.0.14", "admin"),
        ("127.0.0.15", "admin"),
    ]
    code, listing, _ = await _cli(db, "ban", "list")
    assert listing.strip() == "no bans"


async def test_cli_ban_of_an_exempt_address_is_ignored_and_removed(tmp_path: Path) -> None:
    security = replace(SecuritySettings(), allow_list=("127.0.0.16/30",))
    pbx = await start_pbx(tmp_path, security=security)
    try:
        db = pbx.settings.db_path
        for ip in ("127.0.0.1", "127.0.0.17"):
            code, _out, err = await _cli(db, "ban", "add", ip)
            assert code == 0, err

        def warned() -> list[str]:
            events = pbx.bus.feed.read_since(0)[0]
            return [
                e.message for e in events if isinstance(e, ServerEvent) and "ignored" in e.message
            ]

        await _until(lambda: len(warned()) == 2, timeout=4)
        assert pbx.security.bans(pbx.clock()) == []
        assert await _answered(pbx, "127.0.0.1")
        assert await _answered(pbx, "127.0.0.17")
        await pbx.store.flush()
        code, listing, _ = await _cli(db, "ban", "list")
        assert listing.strip() == "no bans"
    finally:
        await pbx.stop()


@dataclass(frozen=True)
class _Row:
    ip: str
    until: float | None
    reason: str = "by hand"
    count: int = 1


class _RecordingSink:
    def __init__(self) -> None:
        self.saved: list[str] = []
        self.removed: list[str] = []

    def ban_saved(self, ban: object) -> None:
        self.saved.append(ban.ip)  # type: ignore[attr-defined]

    def ban_removed(self, ip: str) -> None:
        self.removed.append(ip)


def test_sync_keeps_our_written_ban_and_lifts_it_once_deleted_elsewhere() -> None:
    """`sync` reads the store after a flush: our own ban's row is there (kept, not announced
    again), or it is missing because the CLI deleted it before any look saw it (lifted)."""
    bus = EventBus()
    sink = _RecordingSink()
    bans = BanList(bus, max_bans=10, sink=sink, wall_clock=lambda: 1_000.0)
    never_exempt: Callable[[str], bool] = lambda ip: False  # noqa: E731
    bans.sync([], 1_000.0, never_exempt)
    ours = bans.add("192.0.2.7", 600, "flood", 1_000.0)
    assert sink.saved == ["192.0.2.7"]
    written_back = [_Row("198.51.100.1", 1_100.0), _Row("192.0.2.7", ours.until_wall, "flood")]
    assert bans.sync(written_back, 1_001.0, never_exempt) == (
        [bans.get("198.51.100.1")],
        [],
        [],
    )
    assert "192.0.2.7" in bans
    # The CLI deleted both rows: both are lifted.
    added, lifted, refused = bans.sync([], 1_002.0, never_exempt)
    assert (added, sorted(lifted), refused) == ([], ["192.0.2.7", "198.51.100.1"], [])
    # A ban of ours deleted before any read saw its row is lifted too.
    bans.add("192.0.2.8", 600, "flood", 1_003.0)
    assert bans.sync([], 1_004.0, never_exempt) == ([], ["192.0.2.8"], [])
    actions = [e.action for e in bus.feed.read_since(0)[0] if isinstance(e, SecurityEvent)]
    assert actions == ["banned", "banned", "unbanned", "unbanned", "banned", "unbanned"]
