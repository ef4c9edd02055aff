"""The console app: starting and stopping the core, pane keys, help, the command palette and
the console lock (first-run password, wrong and right passwords, idle lock)."""

from __future__ import annotations

import asyncio
import socket
import time
from pathlib import Path

from test_ui_support import SIZE, console, console_settings, pane_on_show, refreshed
from textual.widgets import Input, Label

from core.settings import ListenAddress
from pbxtui.app import PbxApp
from screens.confirm import ConfirmScreen
from screens.help import HelpScreen
from screens.lock import LockScreen
from screens.security import SecurityPane
from screens.traffic import TrafficPane
from screens.user_form import UserForm
from screens.users import UsersPane
from screens.widgets.key_bar import KeyBar
from screens.widgets.tables import KeyedTable


async def test_app_starts_the_core_and_stops_it_on_exit(tmp_path: Path) -> None:
    async with console(tmp_path) as (app, pilot):
        address = app.pbx.listening[0]
        assert address.host == "127.0.0.1" and address.port == app.settings.listen[0].port
        assert isinstance(pane_on_show(app), TrafficPane)
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
        assert app.current_pane == "users" and isinstance(pane_on_show(app), UsersPane)
        await pilot.press("1")
        assert app.current_pane == "traffic"
        await pilot.press("slash", "2", "0", "3")
        assert app.current_pane == "traffic"  # typed into the filter, not a pane switch
        assert app.screen.query_one("#traffic-filter", Input).value == "203"


async def test_a_pane_shows_fresh_data_on_its_first_frame_and_keeps_its_focus(
    tmp_path: Path,
) -> None:
    # One refresh every two seconds: what the Security pane shows comes from the switch itself.
    async with console(tmp_path, refresh_hz=0.5) as (app, pilot):
        await app.pbx.admin.ban("203.0.113.9", 600, "by hand")
        await pilot.press("3")
        pane = pane_on_show(app)
        assert isinstance(pane, SecurityPane)
        assert pane.query_one("#bans", KeyedTable).keys == ["203.0.113.9"]
        assert app.console_screen.status_strip.pane == "security"
        assert app.screen.focused is pane.query_one("#feed")
        bans = pane.query_one("#bans", KeyedTable)
        bans.focus()
        await pilot.press("1")
        assert app.screen.focused is app.screen.query_one("#dialogs")
        await pilot.press("3")
        assert app.screen.focused is bans  # back where the admin left it
        await pilot.press("u", "y")  # the pane's own keys work at once
        await pilot.pause()
        assert app.pbx.security.bans(app.pbx.clock()) == []


async def test_key_bar_follows_the_pane_and_a_click_presses_the_key(tmp_path: Path) -> None:
    async with console(tmp_path) as (app, pilot):
        bar = app.screen.query_one(KeyBar)
        shown = {key.description for key in bar.keys}
        assert {"Filter", "Pause", "Save", "Help", "Lock", "Quit"} <= shown
        await pilot.press("4")
        await pilot.pause()
        shown = {key.description for key in bar.keys}
        assert {"Add", "Edit", "Delete", "Help"} <= shown and "Pause" not in shown
        start = next(start for start, _end, key in bar._spans if key.description == "Add")
        await pilot.click(KeyBar, offset=(start + 1, 0))
        assert isinstance(app.screen, UserForm)


async def test_pane_keys_wait_for_the_help_and_for_an_answer(tmp_path: Path) -> None:
    async with console(tmp_path, users={"alice": "alice-secret-1"}) as (app, pilot):
        await pilot.press("question_mark", "3")
        assert isinstance(app.screen, HelpScreen) and app.current_pane == "traffic"
        await pilot.press("escape", "4")
        await app.workers.wait_for_complete()
        await refreshed(pilot, app)
        await pilot.press("d")
        assert isinstance(app.screen, ConfirmScreen)
        await pilot.press("1")  # a question waits for its answer
        assert isinstance(app.screen, ConfirmScreen) and app.current_pane == "users"
        await pilot.press("n")
        assert isinstance(pane_on_show(app), UsersPane)


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
        assert isinstance(pane_on_show(app), TrafficPane)


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
        assert app.current_pane == "users"
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
        assert isinstance(app.screen, LockScreen) and app.current_pane == "traffic"
        assert list(app.get_system_commands(app.screen)) == []
        assert "at least 8" in await submit_lock(pilot, app, "short", "short")
        assert "differ" in await submit_lock(pilot, app, "console-pass-1", "console-pass-2")
        await submit_lock(pilot, app, "console-pass-1", "console-pass-1")
        assert not app.locked and isinstance(pane_on_show(app), TrafficPane)
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
        assert not app.locked and isinstance(pane_on_show(app), TrafficPane)


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
