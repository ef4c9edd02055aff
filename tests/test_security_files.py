"""Secrets at rest and at the console: file modes, symlinks, and the console password.

The database (HA1s, carrier passwords), captures (Authorization headers) and CDR exports
are created 0600 without following a symlink planted at their name; pbxtui warns at start
when the database is readable by others; wrong console passwords are each a security event
and make the next attempt wait longer.
"""

from __future__ import annotations

import asyncio
import os
import stat
import time
from collections import deque
from pathlib import Path
from types import SimpleNamespace

import pytest
from conftest import make_settings, start_pbx
from support.ports import free_port

import core.admin
import core.security.console_lock as console_lock
from core.events import SecurityEvent, ServerEvent, SipTraffic
from core.pbx import Pbx, StartError
from core.private_files import open_private
from pbxtui.cli import main
from screens.dialogs import Dialog, summarise
from screens.save_form import SaveRequest
from screens.traffic import write_capture


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


async def test_the_database_is_created_0600_in_a_0700_directory(tmp_path: Path) -> None:
    os.umask(0o022)
    pbx = Pbx(make_settings(tmp_path / "state" / "pbx.db", free_port()))
    await pbx.start()
    try:
        assert _mode(tmp_path / "state") == 0o700
        assert _mode(tmp_path / "state" / "pbx.db") == 0o600
        events, _cursor, _missed = pbx.bus.feed.read_since(0)
        assert not [e for e in events if isinstance(e, ServerEvent) and "exposed" in e.message]
    finally:
        await pbx.stop()


async def test_a_database_others_can_read_is_warned_about_at_start(tmp_path: Path) -> None:
    pbx = await start_pbx(tmp_path)
    await pbx.stop()
    (tmp_path / "pbx.db").chmod(0o644)
    again = Pbx(make_settings(tmp_path / "pbx.db", free_port()))
    await again.start()
    try:
        events, _cursor, _missed = again.bus.feed.read_since(0)
        warnings = [e for e in events if isinstance(e, ServerEvent) and "exposed" in e.message]
        assert warnings and warnings[0].level == "warning" and "0644" in warnings[0].message
    finally:
        await again.stop()


async def test_a_symlink_planted_at_the_database_name_is_not_followed(tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere.db"
    (tmp_path / "pbx.db").symlink_to(elsewhere)  # dangling: SQLite would create the target
    pbx = Pbx(make_settings(tmp_path / "pbx.db", free_port()))
    with pytest.raises(StartError):
        await pbx.start()
    assert not elsewhere.exists()


def _dialog() -> Dialog:
    traffic = SipTraffic(
        "in",
        "udp",
        ("127.0.0.5", 5060),
        ("127.0.0.1", 5060),
        b"REGISTER sip:pbx.test SIP/2.0\r\nAuthorization: Digest response=secret\r\n\r\n",
    )
    message = summarise(traffic)
    dialog = Dialog("call-1", deque(), message.traffic.at, message.traffic.at)
    dialog.add(message)
    return dialog


@pytest.mark.parametrize("kind", ["pcap", "txt"])
def test_captures_are_written_0600_and_never_through_a_symlink(tmp_path: Path, kind: str) -> None:
    os.umask(0o022)
    target = tmp_path / f"capture.{kind}"
    assert write_capture(SaveRequest(target, kind, "filtered"), [_dialog()]) == 1
    assert _mode(target) == 0o600
    victim = tmp_path / "victim"
    victim.write_text("keep me")
    link = tmp_path / f"link.{kind}"
    link.symlink_to(victim)
    with pytest.raises(OSError):
        write_capture(SaveRequest(link, kind, "filtered"), [_dialog()])
    assert victim.read_text() == "keep me"


def test_cdr_export_is_0600_and_refuses_a_symlink(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    os.umask(0o022)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.chdir(tmp_path)
    db = str(tmp_path / "pbx.db")
    assert main(["--db", db, "--domain", "pbx.test", "init"]) == 0
    target = tmp_path / "cdrs.csv"
    assert main(["--db", db, "--domain", "pbx.test", "cdr", "export", "--csv", str(target)]) == 0
    assert _mode(target) == 0o600
    victim = tmp_path / "victim"
    victim.write_text("keep me")
    link = tmp_path / "link.csv"
    link.symlink_to(victim)
    code = main(["--db", db, "--domain", "pbx.test", "cdr", "export", "--csv", str(link)])
    assert code != 0
    assert victim.read_text() == "keep me"
    capsys.readouterr()


def test_an_existing_export_keeps_no_wider_mode(tmp_path: Path) -> None:
    existing = tmp_path / "old.csv"
    existing.write_text("x")
    existing.chmod(0o644)
    with open_private(existing, "w") as stream:
        stream.write("y")
    assert _mode(existing) == 0o600


async def test_wrong_console_passwords_wait_longer_each_and_are_security_events(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(console_lock, "BASE_DELAY", 0.05)
    waits: list[float] = []
    real_sleep = asyncio.sleep

    async def recording_sleep(delay: float, *args: object) -> object:
        waits.append(delay)
        return await real_sleep(delay, *args)

    pbx = await start_pbx(tmp_path, users={})
    try:
        admin = pbx.admin
        await admin.set_console_password("console-pass-1")
        # The admin API's own sleeps only (the housekeeping timers sleep too).
        admin_asyncio = SimpleNamespace(**{**vars(asyncio), "sleep": recording_sleep})
        monkeypatch.setattr(core.admin, "asyncio", admin_asyncio)
        for _ in range(4):
            assert await admin.check_console_password("guess") is False
        assert waits == [0.05, 0.1, 0.2]  # before the 2nd, 3rd and 4th guesses
        events, _cursor, _missed = pbx.bus.feed.read_since(0)
        failed = [
            e for e in events if isinstance(e, SecurityEvent) and e.action == "console-login-failed"
        ]
        assert [e.count for e in failed] == [1, 2, 3, 4]
        # Parallel consoles share one queue: each of two guesses at once waits its turn.
        started = time.monotonic()
        results = await asyncio.gather(
            admin.check_console_password("a"), admin.check_console_password("b")
        )
        assert results == [False, False]
        assert waits[3:] == [0.4, 0.8]
        assert time.monotonic() - started >= 1.2
        assert await admin.check_console_password("console-pass-1") is True
        waits.clear()
        assert await admin.check_console_password("wrong") is False  # reset: no wait first
        assert waits == []
    finally:
        await pbx.stop()
