"""contrib/fail2ban against the real log of a real server: Debian's fail2ban-regex reads what
`pbxtui --headless` wrote to stderr, the same under journald (as `journalctl` shows it), and
the console's security.log, and must name exactly the sources pbxtui banned.

The traffic: a scanner (banned after three requests), a scanner whose User-Agent carries a
forged log line naming another address, and a flood (banned past the limit). The filter runs
with Debian's common.conf beside it, as in /etc/fail2ban/filter.d.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import start_pbx
from support.ports import free_port

from pbxtui.eventlog import SecurityLogFile

CONTRIB = Path(__file__).resolve().parent.parent / "contrib" / "fail2ban"
DEBIAN_COMMON = Path("/etc/fail2ban/filter.d/common.conf")
SCANNER, FORGER, FLOODER = "127.0.0.9", "127.0.0.10", "127.0.0.12"
FORGED_IP = "192.0.2.66"
# A User-Agent that tries to close its quotes and write the fields of a ban of FORGED_IP
# (SIP allows no raw line break in a header: the parser answers that with 400).
FORGED_UA = (
    'friendly-scanner" src=192.0.2.66 WARNING pbxtui.security: '
    "2026-12-06T21:00:00Z pbxtui[security] action=banned src=192.0.2.66 \\"
)


def _tool() -> str:
    path = shutil.which("fail2ban-regex")
    if path is None or not DEBIAN_COMMON.is_file():
        message = "fail2ban is not installed (apt-get install fail2ban)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return path


def _filter_dir(tmp_path: Path) -> Path:
    """filter.d with our filter and Debian's common.conf, which it includes."""
    folder = tmp_path / "fail2ban" / "filter.d"
    folder.mkdir(parents=True)
    shutil.copy(DEBIAN_COMMON, folder / "common.conf")
    shutil.copy(CONTRIB / "filter.d" / "pbxtui.conf", folder / "pbxtui.conf")
    return folder / "pbxtui.conf"


def _banned_by_fail2ban(log: Path, filter_file: Path, mode: str = "normal") -> list[str]:
    """The source of every matching line, in order, as fail2ban-regex reports it."""
    result = subprocess.run(
        [_tool(), "-o", "ip", str(log), f"{filter_file}[mode={mode}]"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout.split()


def _request(source: str, port: int, user_agent: str, index: int) -> bytes:
    return (
        f"OPTIONS sip:100@127.0.0.1:{port} SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP {source}:5060;branch=z9hG4bKf2b{index}\r\n"
        f"From: <sip:100@{source}>;tag=f2b{index}\r\n"
        f"To: <sip:100@127.0.0.1>\r\n"
        f"Call-ID: f2b-{source}-{index}\r\n"
        f"CSeq: 1 OPTIONS\r\n"
        f"Max-Forwards: 70\r\n"
        f"User-Agent: {user_agent}\r\n"
        f"Content-Length: 0\r\n\r\n"
    ).encode()


def _attack(port: int) -> None:
    """Scanner, forger and flooder, each from its own loopback address."""
    for source, user_agent, count in (
        (SCANNER, "friendly-scanner", 4),
        (FORGER, FORGED_UA, 4),
        (FLOODER, "Linphone/5.2", 80),
    ):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.bind((source, 0))
            for index in range(count):
                sock.sendto(_request(source, port, user_agent, index), ("127.0.0.1", port))


def _run_headless(tmp_path: Path, env: dict[str, str], *, journal: bool = False) -> list[str]:
    """A real `pbxtui --headless`, attacked, stopped with SIGINT; its stderr lines. With
    `journal`, its stderr is announced as the journal's stream (`JOURNAL_STREAM` names the
    file's device and inode, as systemd does), and the lines come back as journald stores
    them: without the `<N>` priority prefix."""
    port = free_port()
    command = [sys.executable, "-m", "pbxtui", "--headless", "--db", str(tmp_path / "pbx.db")]
    command += ["--domain", "pbx.test", "--listen", f"udp:127.0.0.1:{port}"]
    stderr_path = tmp_path / "stderr.log"
    with stderr_path.open("w") as stderr:
        if journal:
            status = os.fstat(stderr.fileno())
            env = {**env, "JOURNAL_STREAM": f"{status.st_dev}:{status.st_ino}"}
        process = subprocess.Popen(command, stderr=stderr, env={**os.environ, **env})
        try:
            deadline = time.monotonic() + 15
            while "pbxtui ready" not in stderr_path.read_text():
                assert process.poll() is None and time.monotonic() < deadline, (
                    stderr_path.read_text()
                )
                time.sleep(0.05)
            _attack(port)
            while "action=flood-banned" not in stderr_path.read_text():
                assert time.monotonic() < deadline, stderr_path.read_text()
                time.sleep(0.05)
        finally:
            process.send_signal(signal.SIGINT)
            process.wait(timeout=10)
    lines = stderr_path.read_text().splitlines()
    if journal:
        assert all(re.match(r"<[0-7]>", line) for line in lines), lines
        lines = [line[3:] for line in lines]
    return lines


def _check(lines: list[str], log: Path, filter_file: Path) -> None:
    log.write_text("\n".join(lines) + "\n")
    banned = _banned_by_fail2ban(log, filter_file)
    assert set(banned) == {SCANNER, FORGER, FLOODER}, "\n".join(lines)
    counted = _banned_by_fail2ban(log, filter_file, mode="aggressive")
    assert counted.count(SCANNER) >= 2  # the scanner's drops count too, not only its ban
    assert FORGED_IP not in banned + counted


def test_the_filter_bans_what_the_headless_server_banned_on_stderr(tmp_path: Path) -> None:
    filter_file = _filter_dir(tmp_path)
    env = {key: value for key, value in os.environ.items() if key != "JOURNAL_STREAM"}
    lines = _run_headless(tmp_path, {**env, "JOURNAL_STREAM": ""})
    assert any(line.split()[2] == "WARNING" for line in lines)  # our own timestamp first
    _check(lines, tmp_path / "stderr-format.log", filter_file)


def test_the_filter_reads_the_journal_format(tmp_path: Path) -> None:
    """Under systemd pbxtui leaves the time to journald; `journalctl -u pbxtui` then shows
    `MMM DD HH:MM:SS host pbxtui[PID]: MESSAGE`."""
    filter_file = _filter_dir(tmp_path)
    lines = _run_headless(tmp_path, {}, journal=True)
    assert all(line.startswith(("INFO ", "WARNING ")) for line in lines), lines
    stamp = time.strftime("%b %d %H:%M:%S")
    journal = [f"{stamp} vps1 pbxtui[812]: {line}" for line in lines]
    _check(journal, tmp_path / "journal-format.log", filter_file)


async def test_the_console_writes_the_security_log_the_filter_reads(tmp_path: Path) -> None:
    filter_file = _filter_dir(tmp_path)
    pbx = await start_pbx(tmp_path, users={})
    log_path = tmp_path / "data" / "security.log"
    security_log = SecurityLogFile(log_path)
    pbx.bus.subscribe(security_log)
    try:
        port = pbx.listening[0].port
        await asyncio.to_thread(_attack, port)
        async with asyncio.timeout(10):
            while "action=flood-banned" not in (log_path.read_text() if log_path.exists() else ""):
                await asyncio.sleep(0.05)
    finally:
        await pbx.stop()
        security_log.close()
    assert logging.getLogger("pbxtui.security").handlers == []  # the terminal's logger untouched
    lines = log_path.read_text().splitlines()
    _check(lines, tmp_path / "console-format.log", filter_file)
