"""The console app: starting and stopping the core, pane keys, help, the command palette and
the console lock (first-run password, wrong and right passwords, idle lock)."""

from __future__ import annotations

import asyncio
import socket
import time
from pathlib import Path

from test_ui_support import SIZE, console, console_settings, refreshed
from textual.widgets import Input, Label

from core.settings import ListenAddress
from pbxtui.app import PbxApp
from screens.help import HelpScreen
from screens.lock import LockScreen
from screens.traffic import TrafficScreen
from screens.users import UsersScreen


async def test_app_starts_the_core_and_stops_it_on_exit(tmp_path: Path) -> None:
    async with console(tmp_path) as (app, pilot):
        address = app.pbx.listening[0]
        assert address.host == "127.0.0.1" and address.port == app.settings.listen[0].port
        assert isinstance(app.screen, TrafficScreen)
        await refreshed(pilot, app)
    assert not app.ready
    # The port is free again: the core closed its sockets when the console exited.
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind(("127.0.0.1", address.port))


async def test_a_taken_port_is_a_clear_start_error(tmp_path: Path) -> None:
    settings = console_settings(tmp_path)
    port = settings.listen[0].port
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as squatter:
        squatter.bind(("127.0.0.1", port))
        app = PbxApp(settings, require_login=False)
        async with app.run_test(size=SIZE) as pilot:
            await pilot.pause()
        assert app.start_error is not None and str(port) in app.start_error
        assert app.return_code == 2 and not app.ready


async def test_number_keys_switch_panes_and_keep_typed_digits_in_inputs(tmp_path: Path) -> None:
    async with console(tmp_path) as (app, pilot):
        await pilot.press("4")
        assert app.current_mode == "users" and isinstance(app.screen, UsersScreen)
        await pilot.press("1")
        assert app.current_mode == "traffic"
        await pilot.press("slash", "2", "0", "3")
        assert app.current_mode == "traffic"  # typed into the filter, not a pane switch
        assert app.screen.query_one("#traffic-filter", Input).value == "203"


async def test_help_lists_every_pane_action_and_closes(tmp_path: Path) -> None:
    async with console(tmp_path) as (app, pilot):
        await pilot.press("question_mark")
        assert isinstance(app.screen, HelpScreen)
        titles = [title for title, _bindings in app.screen.sections]
        assert titles == [
            "Everywhere",
            "Traffic",
            "Registrations",
            "Security",
            "Users",
            "Carriers",
            "Calls",
            "Forms",
        ]
        descriptions = {b.description for _t, bindings in app.screen.sections for b in bindings}  # type: ignore[union-attr]
        assert {
            "Unregister",
            "Ban",
            "Unban",
            "Add",
            "Add carrier",
            "Add DID",
            "Save",
            "Pause",
            "Filter CDRs",
            "Generate password",
            "Lock",
        } <= descriptions
        await pilot.press("escape")
        assert isinstance(app.screen, TrafficScreen)


async def test_command_palette_finds_pane_actions_and_runs_them(tmp_path: Path) -> None:
    async with console(tmp_path) as (app, pilot):
        commands = {command.title: command for command in app.get_system_commands(app.screen)}
        assert {
            "Go to Security",
            "Users: Add",
            "Carriers: Add DID",
            "Traffic: Save",
            "Security: Ban",
            "Lock the console",
        } <= set(commands)
        await app.run_pane_action("users", "add")
        await pilot.pause()
        assert app.current_mode == "users"
        assert type(app.screen).__name__ == "UserForm"


async def submit_lock(pilot, app: PbxApp, password: str, confirm: str | None = None) -> str:
    """Type into the lock screen, press Enter, wait for bcrypt; returns the message shown."""
    screen = app.screen
    assert isinstance(screen, LockScreen)
    screen.query_one("#password", Input).value = password
    last = screen.query_one("#password", Input)
    if confirm is not None:
        last = screen.query_one("#confirm", Input)
        last.value = confirm
    last.focus()
    await pilot.press("enter")
    await app.workers.wait_for_complete()  # bcrypt runs in a worker thread
    await pilot.pause()
    if app.screen is not screen:
        return "unlocked"
    return str(screen.query_one("#lock-error", Label).render())


async def test_first_run_sets_the_console_password_then_asks_for_it(tmp_path: Path) -> None:
    async with console(tmp_path, require_login=True) as (app, pilot):
        assert isinstance(app.screen, LockScreen) and app.screen.first_run and app.locked
        # Locked: pane keys and the palette do nothing.
        await pilot.press("escape", "4")
        assert isinstance(app.screen, LockScreen) and app.current_mode == "traffic"
        assert list(app.get_system_commands(app.screen)) == []
        assert "at least 8" in await submit_lock(pilot, app, "short", "short")
        assert "differ" in await submit_lock(pilot, app, "console-pass-1", "console-pass-2")
        await submit_lock(pilot, app, "console-pass-1", "console-pass-1")
        assert not app.locked and isinstance(app.screen, TrafficScreen)
        assert await app.pbx.admin.check_console_password("console-pass-1")
        # Ctrl+L locks again, now asking for the password that was set.
        await pilot.press("ctrl+l")
        assert isinstance(app.screen, LockScreen) and not app.screen.first_run


async def test_wrong_password_is_refused_and_the_right_one_unlocks(tmp_path: Path) -> None:
    settings = console_settings(tmp_path)
    async with console(tmp_path) as (app, _pilot):
        await app.pbx.admin.set_console_password("console-pass-1")
    app = PbxApp(settings, require_login=True)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause()
        assert isinstance(app.screen, LockScreen) and not app.screen.first_run
        assert "wrong password (1 failed)" in await submit_lock(pilot, app, "not-the-password")
        assert isinstance(app.screen, LockScreen)
        assert app.screen.query_one("#password", Input).value == ""
        await submit_lock(pilot, app, "console-pass-1")
        assert not app.locked and isinstance(app.screen, TrafficScreen)


async def test_idle_console_locks_itself_and_activity_postpones_it(tmp_path: Path) -> None:
    settings = console_settings(tmp_path, lock_after_seconds=0.6)
    async with console(tmp_path) as (app, _pilot):
        await app.pbx.admin.set_console_password("console-pass-1")
    app = PbxApp(settings, require_login=True)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause()
        await submit_lock(pilot, app, "console-pass-1")
        assert not app.locked
        deadline = time.monotonic() + 0.5
        while time.monotonic() < deadline:  # keep typing: no lock while someone is there
            await pilot.press("down")
            await asyncio.sleep(0.1)
        assert not app.locked
        for _ in range(60):
            await asyncio.sleep(0.05)
            if app.locked:
                break
        await pilot.pause()
        assert app.locked and isinstance(app.screen, LockScreen)


async def test_settings_default_requires_login(tmp_path: Path) -> None:
    app = PbxApp(console_settings(tmp_path))
    assert app.require_login
    assert ListenAddress("udp", "127.0.0.1", 0).transport == "udp"
