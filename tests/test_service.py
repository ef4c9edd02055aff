"""The service and its attached consoles, as real processes: `pbxtui --headless` in a
subprocess, the CLI through its control socket, the Textual console attached with Pilot and
in tmux (killed with SIGKILL), SIPp phones and calls, SIGHUP, systemd's notifications."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from support.client import UdpClient, request_text
from support.phone import Phone
from support.ports import free_port
from support.service import DOMAIN, ServiceProcess, cli, start_service
from support.sipp import run_sipp, write_users_csv
from test_ui_support import console
from textual.widgets import Input

from core.control.client import RemoteCore
from core.control.peers import socket_path
from pbxtui.app import PbxApp
from pbxtui.config import load_settings
from screens.confirm import ConfirmScreen
from screens.registrations import RegistrationsPane
from screens.user_form import UserForm
from screens.widgets.tables import KeyedTable

pytestmark = pytest.mark.sipp

SIZE = (120, 34)


@pytest.fixture
async def service(tmp_path: Path) -> AsyncIterator[ServiceProcess]:
    running = await start_service(tmp_path)
    try:
        yield running
    finally:
        running.close()


def attached_app(service: ServiceProcess) -> PbxApp:
    """The console as `pbxtui console` builds it, in this process, for Pilot."""
    settings = load_settings(service.config, db=service.db)
    return PbxApp(settings, core=RemoteCore(settings, socket_path(service.db)), require_login=False)


async def until(condition, timeout: float = 10.0, what: str = "") -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what or condition}")


async def options(service: ServiceProcess) -> int:
    async with UdpClient(service.address) as client:
        host, port = service.address
        answer = await client.ask(
            request_text("OPTIONS", f"sip:{host}:{port}", local=client.local), timeout=3
        )
    return answer.status if answer is not None else 0


# -- the CLI ----------------------------------------------------------------------------------


async def test_cli_changes_go_through_the_service_and_status_reads_it(
    service: ServiceProcess, tmp_path: Path
) -> None:
    code, out, err = await cli(service, "user", "add", "alice", "--password", "alice-secret-1")
    assert (code, out.splitlines()[0]) == (0, "added user alice"), err
    assert "Username / Auth ID   alice" in out  # what to type into the phone, as without one
    # In force at once: the service's route knows alice now (no database poll involved).
    async with UdpClient(service.address) as client:
        answer = await Phone(client, "alice", "alice-secret-1", DOMAIN).register()
        assert answer is not None and answer.status == 200
    code, out, err = await cli(service, "user", "add", "alice", "--password", "alice-secret-1")
    assert code == 2 and err.strip() == "pbxtui: error: user 'alice' already exists"
    code, _, err = await cli(service, "carrier", "add", "trunk", "--ip", "not-an-ip")
    assert code == 2 and err.count("\n") == 1
    code, out, _ = await cli(service, "ban", "add", "203.0.113.50", "--for", "60")
    assert code == 0
    code, out, _ = await cli(service, "reg", "list")
    assert code == 0 and "alice" in out and "127.0.0.1" in out
    code, out, _ = await cli(service, "status")
    assert code == 0
    fields = dict(line.split(None, 1) for line in out.splitlines() if line.strip())
    assert fields["service"].startswith(f"pid {service.process.pid}, up ")
    assert fields["users"].strip() == "1"
    assert fields["bans"].strip() == "1"
    assert (
        fields["listening"].strip() == f"udp:127.0.0.1:{service.port}, tcp:127.0.0.1:{service.port}"
    )
    assert "registrations" in out and "messages/s" in out and "workers" in out
    (tmp_path / "status.txt").write_text(out)  # for the screenshot of `pbxtui status`


async def test_without_a_service_status_says_so_and_changes_go_to_the_database(
    tmp_path: Path,
) -> None:
    service = await start_service(tmp_path)
    service.close()
    code, _, err = await cli(service, "status")
    assert code == 1 and "no pbxtui service runs on" in err
    code, _, err = await cli(service, "console")
    assert code == 1 and "no pbxtui service runs on" in err
    code, out, _ = await cli(service, "user", "add", "bob", "--password", "bob-secret-22")
    assert code == 0 and out.splitlines()[0] == "added user bob"
    code, out, _ = await cli(service, "user", "list")
    assert "bob" in out


# -- the attached console ---------------------------------------------------------------------


async def test_a_sipp_registration_shows_live_in_the_attached_console(
    service: ServiceProcess, tmp_path: Path
) -> None:
    await cli(service, "user", "add", "alice", "--password", "alice-secret-1")
    app = attached_app(service)
    async with app.run_test(size=SIZE) as pilot:
        await until(lambda: app.ready, what="the console to attach")
        assert app.core.attached and "attached" in app.console_screen.status_strip.mode
        await pilot.press("2")
        csv = write_users_csv(tmp_path / "users.csv", {"alice": "alice-secret-1"})
        host, port = service.address
        result = await run_sipp(
            "reg_auth.xml",
            host,
            port,
            inf=csv,
            keys={"domain": DOMAIN},
            extra=["-auth_uri", DOMAIN],
        )
        assert result.returncode == 0, str(result)
        pane = app.console_screen.pane
        assert isinstance(pane, RegistrationsPane)
        table = pane.query_one("#bindings", KeyedTable)
        await until(lambda: any(key.startswith("alice\x1f") for key in table.keys), 5, "row")
        # The Traffic pane saw the REGISTER dialog too, pushed live from the service.
        await until(lambda: app.state.dialogs.total_messages >= 4, 5, "traffic")
        assert app.state.stats is not None and app.state.stats.contacts == 1
        # Wire text stays text: a User-Agent written as markup shows as written.
        async with UdpClient(service.address) as client:
            phone = Phone(client, "alice", "alice-secret-1", DOMAIN)
            phone.user_agent = "[b red]evil[/] [@click=app.quit]x[/]"
            answer = await phone.register()
            assert answer is not None and answer.status == 200
            key = f"alice\x1fsip:alice@127.0.0.1:{client.local[1]}"
            await until(lambda: key in table.keys, 5, "the markup phone's row")
            assert phone.user_agent in [str(cell) for cell in table.cells(key)]
        assert app.is_running  # the [@click=app.quit] did nothing


async def test_a_user_added_in_the_attached_console_registers_at_once(
    service: ServiceProcess,
) -> None:
    app = attached_app(service)
    async with app.run_test(size=SIZE) as pilot:
        await until(lambda: app.ready, what="the console to attach")
        await pilot.press("4", "a")
        form = app.screen
        assert isinstance(form, UserForm)
        form.query_one("#username", Input).value = "carol"
        form.query_one("#password", Input).value = "carol-secret-333"
        await pilot.press("ctrl+s")
        await until(lambda: app.screen is not form, 10, "the form to close")
        async with UdpClient(service.address) as client:
            answer = await Phone(client, "carol", "carol-secret-333", DOMAIN).register()
            assert answer is not None and answer.status == 200
        # Refused by the service's own validation, shown under the field.
        await pilot.press("enter")  # close the credentials screen
        await pilot.press("a")
        form = app.screen
        assert isinstance(form, UserForm)
        form.query_one("#username", Input).value = "carol"
        form.query_one("#password", Input).value = "carol-secret-333"
        await pilot.press("ctrl+s")
        await until(lambda: any(field.error for field in form.query("Field")), 10, "an error")
        assert app.screen is form


async def test_an_attached_console_ends_with_the_reason_when_the_service_stops(
    tmp_path: Path,
) -> None:
    service = await start_service(tmp_path)
    app = attached_app(service)
    try:
        async with app.run_test(size=SIZE):
            await until(lambda: app.ready, what="the console to attach")
            service.stop()
            await until(lambda: app.lost_reason is not None, 10, "the console to notice")
        assert "closed the connection" in (app.lost_reason or "")
        assert app.return_code == 1
    finally:
        service.close()


async def test_each_console_says_what_quitting_stops(
    service: ServiceProcess, tmp_path: Path
) -> None:
    """Attached: detaching leaves the server running. One process: the server stops too."""
    app = attached_app(service)
    async with app.run_test(size=SIZE) as pilot:
        await until(lambda: app.ready, what="the console to attach")
        await pilot.press("ctrl+q")
        assert isinstance(app.screen, ConfirmScreen)
        assert app.screen.question.startswith("Detach the console? The SIP server (pid ")
        assert "keeps running" in app.screen.question and app.screen.yes == "Detach"
    async with console(tmp_path / "alone") as (local, pilot):
        assert local.console_screen.status_strip.mode == "one process"
        await pilot.press("ctrl+q")
        assert isinstance(local.screen, ConfirmScreen)
        assert "stops with it" in local.screen.question and local.screen.yes == "Quit"


# -- detaching, killing, several consoles ------------------------------------------------------


def tmux_console(service: ServiceProcess, name: str) -> int:
    """Plain `pbxtui` in a detached tmux session (a service runs on its database, so it
    attaches); returns the console's pid."""
    command = " ".join([sys.executable, "-m", "pbxtui", *service.global_options()])
    output = subprocess.run(
        [
            "tmux",
            "new-session",
            "-d",
            "-P",
            "-F",
            "#{pane_pid}",
            "-s",
            name,
            "-x",
            "120",
            "-y",
            "34",
            f"exec {command}",
        ],
        check=True,
        capture_output=True,
        text=True,
    )
    return int(output.stdout.strip())


def tmux_screen(name: str) -> str:
    return subprocess.run(
        ["tmux", "capture-pane", "-p", "-t", name], capture_output=True, text=True
    ).stdout


async def test_killed_and_detached_consoles_leave_the_service_and_its_calls(
    service: ServiceProcess, tmp_path: Path
) -> None:
    if shutil.which("tmux") is None:
        pytest.fail("tmux is needed for the detach test (apt-get install tmux)")
    for user, password in (("alice", "alice-secret-1"), ("bob", "bob-secret-22")):
        assert (await cli(service, "user", "add", user, "--password", password))[0] == 0
    await cli(service, "admin", "passwd", "--password", "console-pass-1")
    host, port = service.address
    callee_port, caller_port = free_port(), free_port()
    result = await run_sipp(
        "uas_register.xml",
        host,
        port,
        inf=write_users_csv(tmp_path / "bob.csv", {"bob": "bob-secret-22"}),
        local_port=callee_port,
        keys={"domain": DOMAIN},
        extra=["-auth_uri", DOMAIN],
    )
    assert result.returncode == 0, str(result)
    # bob answers and hangs up after 20 s: a call that is up while the consoles come and go
    # (a tmux console takes several seconds to start and unlock on a loaded machine).
    callee = asyncio.create_task(
        run_sipp(
            "uas_hangup.xml", host, port, local_port=callee_port, extra=["-d", "20000"], timeout=60
        )
    )
    await asyncio.sleep(0.5)
    caller = asyncio.create_task(
        run_sipp(
            "call_wait_bye.xml",
            host,
            port,
            local_port=caller_port,
            inf=write_users_csv(tmp_path / "alice.csv", {"alice": "alice-secret-1"}),
            keys={"callee": "bob", "domain": DOMAIN},
            extra=["-auth_uri", f"bob@{DOMAIN}"],
            timeout=60,
        )
    )
    session = f"pbxtui-test-{os.getpid()}"
    app = attached_app(service)
    try:
        async with app.run_test(size=SIZE):
            await until(lambda: app.ready, what="the Pilot console to attach")
            await until(lambda: len(app.core.calls()) == 1, 10, "the call in the console")
            pid = tmux_console(service, session)
            await until(
                lambda: (
                    "console password" in tmux_screen(session).lower()
                    or "password" in tmux_screen(session)
                ),
                15,
                "the tmux console's lock",
            )
            subprocess.run(
                ["tmux", "send-keys", "-t", session, "console-pass-1", "Enter"], check=True
            )
            await until(
                lambda: "attached" in tmux_screen(session), 15, "the tmux console to unlock"
            )
            out = (await cli(service, "status"))[1]
            assert "3 attached" in out  # two consoles and the status command itself
            os.kill(pid, signal.SIGKILL)
            await asyncio.sleep(0.5)
            # The service still answers, its call is still up, the other console still live.
            assert await options(service) == 200
            out = (await cli(service, "status"))[1]
            assert "calls up       1" in out and "2 attached" in out
            assert len(app.core.calls()) == 1 and app.core.lost is None
        # The Pilot console detached (quit): the service and the call go on.
        assert await options(service) == 200
        caller_result, callee_result = await asyncio.gather(caller, callee)
        assert caller_result.returncode == 0, str(caller_result)
        assert callee_result.returncode == 0, str(callee_result)
        assert service.process.poll() is None
    finally:
        subprocess.run(["tmux", "kill-session", "-t", session], capture_output=True)


# -- SIGHUP and systemd -----------------------------------------------------------------------


async def _flood(service: ServiceProcess, count: int, source: str) -> int:
    """`count` OPTIONS from `source` at once; how many were answered."""
    host, port = service.address
    client = await UdpClient(service.address).open(source)
    try:
        for index in range(count):
            client.send(
                request_text(
                    "OPTIONS",
                    f"sip:{host}:{port}",
                    local=client.local,
                    call_id=f"flood-{source}-{index}",
                )
            )
        answered = 0
        while await client.recv(0.5) is not None:
            answered += 1
        return answered
    finally:
        client.close()


async def test_sighup_changes_a_flood_limit_and_names_what_needs_a_restart(
    tmp_path: Path,
) -> None:
    service = await start_service(tmp_path, flood_limit=1_000)
    try:
        assert await _flood(service, 80, "127.0.0.2") == 80  # under the limit: all answered
        service.config.write_text(
            service.config.read_text()
            .replace("flood_limit = 1000", "flood_limit = 20")
            .replace('domain = "pbx.test"', 'domain = "pbx.test"\nuser_agent = "renamed"')
        )
        service.process.send_signal(signal.SIGHUP)
        log = await service.wait_for_log("reload: security settings in force: flood_limit")
        await service.wait_for_log("user_agent changed: it takes a restart")
        answered = await _flood(service, 80, "127.0.0.3")
        assert answered < 40, f"{answered} answered: the new limit is not in force"
        assert "flood-banned" in await service.wait_for_log("flood-banned")
        assert service.process.poll() is None, log
    finally:
        assert service.stop() == 0
        service.stderr.close()


async def test_systemd_notifications_and_journal_priorities(tmp_path: Path) -> None:
    """READY=1 when it listens, STOPPING=1 when it stops, WATCHDOG=1 while it runs; with
    stderr as the journal, lines carry `<N>` priorities and security lines keep their text."""
    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    notify_path = tmp_path / "notify.sock"
    notify.bind(str(notify_path))
    notify.setblocking(False)
    service = await start_service(
        tmp_path,
        flood_limit=20,
        env={"NOTIFY_SOCKET": str(notify_path), "WATCHDOG_USEC": "400000"},
        journal=True,
    )
    messages: list[str] = []
    try:
        await asyncio.sleep(0.5)
        assert service.process.poll() is None
        await _flood(service, 60, "127.0.0.4")
    finally:
        assert service.stop() == 0
        while True:
            try:
                messages.append(notify.recv(4096).decode())
            except BlockingIOError:
                break
        notify.close()
    assert messages[0].startswith("READY=1\nSTATUS=listening on udp:127.0.0.1:")
    assert "WATCHDOG=1" in messages
    assert messages[-1] == "STOPPING=1"
    log = service.read_log()
    service.stderr.close()
    # journald reads the priority from the prefix: `journalctl -p warning` shows the flood ban,
    # and after the prefix the line is what fail2ban's filter matches.
    assert "<6>INFO pbxtui: pbxtui ready" in log
    banned = [line for line in log.splitlines() if "flood-banned" in line]
    assert banned and all(line.startswith("<4>WARNING pbxtui.security: ") for line in banned), log


def test_journal_lines_carry_priorities_and_keep_the_security_text() -> None:
    import logging

    from core.events import SecurityEvent
    from core.security.seclog import format_log_line
    from pbxtui.systemd import JournalFormatter

    event = SecurityEvent("auth-failed", "203.0.113.9", "wrong password", user="alice")
    line = format_log_line(event)
    assert line is not None
    record = logging.LogRecord("pbxtui.security", logging.WARNING, "", 0, line, None, None)
    formatted = JournalFormatter().format(record)
    # The level word stays after the priority: the fail2ban filter reads the same text both ways.
    assert formatted == f"<4>WARNING pbxtui.security: {line}"
    info = logging.LogRecord("pbxtui", logging.INFO, "", 0, "ready\nsecond", None, None)
    assert JournalFormatter().format(info) == "<6>INFO pbxtui: ready\n<6>second"


def test_the_unit_file_passes_systemd_analyze(tmp_path: Path) -> None:
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        if os.environ.get("CI"):
            pytest.fail("systemd-analyze is missing in CI (apt-get install systemd)")
        pytest.skip("systemd-analyze is not installed")
    shipped = Path(__file__).resolve().parent.parent / "contrib" / "systemd" / "pbxtui.service"
    code = subprocess.run(
        [
            sys.executable,
            "-m",
            "pbxtui",
            "service",
            "install",
            "--stdout",
            "--user",
            "root",
            "--data-dir",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
    )
    assert code.returncode == 0, code.stderr
    for name, text in (("shipped", shipped.read_text()), ("installed", code.stdout)):
        unit = tmp_path / name / "pbxtui.service"
        unit.parent.mkdir()
        unit.write_text(text.replace("/usr/local/bin/pbxtui", sys.executable + " -m pbxtui"))
        result = subprocess.run([analyze, "verify", str(unit)], capture_output=True, text=True)
        problems = [
            line
            for line in (result.stdout + result.stderr).splitlines()
            if "pbxtui.service" in line
        ]
        assert result.returncode == 0 and not problems, (name, result.stdout, result.stderr)
    for needed in (
        "Type=notify",
        "Restart=on-failure",
        "AmbientCapabilities=CAP_NET_BIND_SERVICE",
        "ProtectSystem=strict",
        "NoNewPrivileges=yes",
        f"ReadWritePaths={tmp_path}",
    ):
        assert needed in code.stdout
