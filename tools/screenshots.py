"""Render every pane of the console to SVG (screenshots/), from a real Pbx with real traffic.

    python tools/screenshots.py [--out screenshots]

The console runs headless (Textual's pilot) around a real `Pbx` on a free loopback port with a
throw-away database. Real SIP goes to it over 127.0.0.0/8 before each capture: phones
register with digest, SIPp places a call between two registered users (when sipp is
installed), a wrong password is tried, a scanner's User-Agent knocks, and one address floods
until it is banned. Each pane is saved at 120x36 and at 80x24, plus the forms and screens an
admin meets (add user, credentials, help, lock).
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import sys
import tempfile
from dataclasses import replace
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from support.client import UdpClient, request_text  # noqa: E402
from support.phone import Phone  # noqa: E402
from support.ports import free_port  # noqa: E402
from support.sipp import run_sipp  # noqa: E402
from textual.pilot import Pilot  # noqa: E402
from textual.widgets import Input  # noqa: E402

from core.settings import (  # noqa: E402
    AuthSettings,
    ListenAddress,
    SecuritySettings,
    Settings,
    UiSettings,
)
from pbxtui.app import PbxApp  # noqa: E402
from screens.lock import LockScreen  # noqa: E402
from screens.widgets.ladder import LadderTable  # noqa: E402
from screens.widgets.line_table import LineTable  # noqa: E402

DOMAIN = "pbx.example.net"
USERS = {
    "alice": ("alice-secret-1", "Alice Martin", "national"),
    "bob": ("bob-secret-22", "Bob Nguyen", "local"),
    "carol": ("carol-secret-333", "Carol Diaz", "none"),
    "reception": ("recep-secret-4", "Front desk", "international"),
}
WIDE = (120, 36)
SMALL = (80, 24)


def settings_for(folder: Path) -> Settings:
    port = free_port()
    return Settings(
        domain=DOMAIN,
        db_path=folder / "pbx.db",
        listen=(ListenAddress("udp", "127.0.0.1", port), ListenAddress("tcp", "127.0.0.1", port)),
        auth=AuthSettings(algorithms=("MD5",)),  # SIPp answers MD5 challenges only
        security=replace(SecuritySettings(), flood_limit=30),
        ui=UiSettings(refresh_hz=8),
    )


def server_of(app: PbxApp) -> tuple[str, int]:
    bound = app.pbx.listening[0]
    return bound.host, bound.port


async def register(app: PbxApp, user: str, local_ip: str = "127.0.0.1") -> UdpClient:
    client = await UdpClient(server_of(app)).open(local_ip)
    phone = Phone(client, user, USERS[user][0], domain=DOMAIN)
    response = await phone.register()
    assert response is not None and response.status == 200, response
    return client


async def attacks(app: PbxApp) -> None:
    """A password guesser, a scanner and a flooder, each from its own loopback address."""
    host, port = server_of(app)
    async with UdpClient((host, port)) as guesser:
        await guesser.open("127.0.0.3")
        for user in ("alice", "admin", "100"):
            phone = Phone(guesser, user, "123456", domain=DOMAIN)
            await phone.register()
    scanner = await UdpClient((host, port)).open("127.0.0.4")
    for _ in range(4):
        scanner.send(
            request_text(
                "OPTIONS",
                f"sip:100@{host}",
                local=scanner.local,
                domain=DOMAIN,
                user_agent="friendly-scanner",
            )
        )
    await asyncio.sleep(0.2)
    scanner.close()
    flooder = await UdpClient((host, port)).open("127.0.0.5")
    for _ in range(60):
        flooder.send(
            request_text(
                "OPTIONS",
                f"sip:{host}:{port}",
                local=flooder.local,
                domain=DOMAIN,
                user_agent="sipcli/v1.8",
            )
        )
    await asyncio.sleep(0.3)
    flooder.close()
    await app.pbx.admin.ban("198.51.100.23", 3_600, "toll fraud attempts")


async def start_call(app: PbxApp, folder: Path) -> asyncio.Task[object] | None:
    """bob answers on a SIPp UAS; alice calls him and holds the call for a while."""
    if shutil.which("sipp") is None:
        print("sipp not found: no call in the screenshots", file=sys.stderr)
        return None
    host, port = server_of(app)
    callee_port, caller_port = free_port(), free_port()
    bob_csv = folder / "bob.csv"
    bob_csv.write_text(
        f"SEQUENTIAL\nbob;[authentication username=bob password={USERS['bob'][0]}]\n"
    )
    result = await run_sipp(
        "uas_register.xml",
        host,
        port,
        inf=bob_csv,
        local_port=callee_port,
        keys={"domain": DOMAIN},
        extra=["-auth_uri", DOMAIN],
    )
    assert result.returncode == 0, str(result)
    callee = asyncio.create_task(
        run_sipp(
            "uas_answer.xml", host, port, local_port=callee_port, extra=["-d", "500"], timeout=30
        )
    )
    await asyncio.sleep(0.5)
    alice_csv = folder / "alice.csv"
    alice_csv.write_text(
        f"SEQUENTIAL\nalice;[authentication username=alice password={USERS['alice'][0]}]\n"
    )
    caller = asyncio.create_task(
        run_sipp(
            "call_basic.xml",
            host,
            port,
            inf=alice_csv,
            local_port=caller_port,
            keys={"domain": DOMAIN, "callee": "bob"},
            extra=["-auth_uri", f"bob@{DOMAIN}", "-d", "15000"],
            timeout=30,
        )
    )
    for _ in range(100):
        if any(call.answered_at for call in app.pbx.calls()):
            break
        await asyncio.sleep(0.05)
    return asyncio.gather(callee, caller)  # type: ignore[return-value]


async def populate(app: PbxApp) -> None:
    admin = app.pbx.admin
    for username, (password, display_name, policy) in USERS.items():
        await admin.add_user(
            username,
            password,
            display_name=display_name,
            outbound_policy=policy,
            max_concurrent_calls=2 if policy != "none" else 0,
            max_calls_per_hour=30 if policy == "international" else 0,
        )
    await admin.add_carrier(
        "acme-voice",
        ["203.0.113.0/28", "198.51.100.7"],
        gateway="sip.acme-voice.example:5060",
        username="trunk-4471",
        password="trunk-password",
        priority=5,
    )
    await admin.add_carrier(
        "backup-trunk", ["192.0.2.64/27"], gateway="192.0.2.65", transport="tcp", priority=20
    )
    await admin.add_did("+44 20 7946 0001", "reception")
    await admin.add_did("+44 20 7946 0002", "alice")


async def show(pilot: Pilot[None], app: PbxApp, key: str) -> None:
    await pilot.press(key)
    await pilot.pause()
    await app.workers.wait_for_complete()
    app.refresh_panes()
    await pilot.pause()


def save(app: PbxApp, out: Path, name: str) -> None:
    app.save_screenshot(filename=f"{name}.svg", path=str(out))
    print(out / f"{name}.svg")


async def capture_panes(pilot: Pilot[None], app: PbxApp, out: Path, suffix: str) -> None:
    # The call is held for a few seconds only: the Calls pane first, while it is up.
    await show(pilot, app, "6")
    save(app, out, f"6-calls{suffix}")
    await show(pilot, app, "1")
    dialogs = app.screen.query_one("#dialogs", LineTable)
    invite = next(
        (key for key in dialogs.keys if app.state.dialogs.get(key).method == "INVITE"),  # type: ignore[union-attr]
        None,
    )
    if invite is not None:
        dialogs.select_key(invite)
        await pilot.pause()
        app.screen.query_one("#ladder", LadderTable).move_cursor(row=0)
    await pilot.pause()
    save(app, out, f"1-traffic{suffix}")
    for key, name in (
        ("2", "registrations"),
        ("3", "security"),
        ("4", "users"),
        ("5", "carriers"),
    ):
        await show(pilot, app, key)
        save(app, out, f"{key}-{name}{suffix}")


async def render(out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as temp:
        folder = Path(temp)
        app = PbxApp(settings_for(folder), require_login=False)
        async with app.run_test(size=WIDE) as pilot:
            await pilot.pause()
            assert app.ready, app.start_error
            await populate(app)
            phones = [await register(app, "alice"), await register(app, "carol", "127.0.0.6")]
            reception = await register(app, "reception", "127.0.0.7")
            await attacks(app)
            call = await start_call(app, folder)
            await asyncio.sleep(1.2)  # a second of history for the sparkline and the timers
            await capture_panes(pilot, app, out, "")
            await pilot.resize_terminal(*SMALL)
            await capture_panes(pilot, app, out, "-80x24")
            await pilot.resize_terminal(*WIDE)

            # Traffic zoomed into the call flow with the raw message, at 80x24.
            await pilot.resize_terminal(*SMALL)
            await show(pilot, app, "1")
            await pilot.press("z")
            ladder = app.screen.query_one("#ladder", LadderTable)
            ladder.move_cursor(row=min(3, max(ladder.row_count - 1, 0)))
            await pilot.pause()
            save(app, out, "1-traffic-flow-80x24")
            await pilot.press("escape")
            await pilot.resize_terminal(*WIDE)

            # Adding a phone: the form, then the credentials shown once.
            await show(pilot, app, "4")
            await pilot.press("a")
            form = app.screen
            form.query_one("#username", Input).value = "dave"
            form.query_one("#display_name", Input).value = "Dave (warehouse)"
            await pilot.press("ctrl+g")
            await pilot.pause()
            save(app, out, "4-users-add")
            await pilot.press("ctrl+s")
            await pilot.pause()
            save(app, out, "4-users-credentials")
            await pilot.press("enter")

            await pilot.press("question_mark")
            await pilot.pause()
            save(app, out, "help")
            await pilot.press("escape")

            await app.pbx.admin.set_console_password("screenshot-console-pw")
            app.require_login = True
            app.lock(first_run=False)
            await pilot.pause()
            assert isinstance(app.screen, LockScreen)
            save(app, out, "lock")

            if call is not None:
                await call
            for phone in (*phones, reception):
                phone.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "screenshots")
    args = parser.parse_args()
    asyncio.run(render(args.out))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
