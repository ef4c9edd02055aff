"""Render the console attached to a running service, and `pbxtui status`, to SVG.

    python tools/screenshots_service.py [--out screenshots]

A real `pbxtui --headless` service runs in a subprocess on a free loopback port with a
throw-away database; users are added through its control socket with the CLI, phones
register with digest, one address floods until it is banned. The console then attaches
(`RemoteCore`, as `pbxtui console` does) and each pane is saved at 120x36; `pbxtui status`
is run against the service and its output saved as a terminal SVG.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from rich.console import Console  # noqa: E402
from rich.text import Text  # noqa: E402
from support.client import UdpClient, request_text  # noqa: E402
from support.phone import Phone  # noqa: E402
from support.service import DOMAIN, ServiceProcess, cli, start_service  # noqa: E402

from core.control.client import RemoteCore  # noqa: E402
from core.control.peers import socket_path  # noqa: E402
from pbxtui.app import PbxApp  # noqa: E402
from pbxtui.config import load_settings  # noqa: E402

USERS = {"alice": "alice-secret-1", "bob": "bob-secret-22", "reception": "recep-secret-4"}
WIDE = (120, 36)


async def populate(service: ServiceProcess) -> list[UdpClient]:
    for user, password in USERS.items():
        code, _out, err = await cli(service, "user", "add", user, "--password", password)
        assert code == 0, err
    phones = []
    for index, (user, password) in enumerate(USERS.items()):
        client = await UdpClient(service.address).open(f"127.0.0.{10 + index}")
        answer = await Phone(client, user, password, DOMAIN).register()
        assert answer is not None and answer.status == 200, answer
        phones.append(client)
    return phones


async def flood(service: ServiceProcess, source: str = "127.0.0.66") -> None:
    host, port = service.address
    client = await UdpClient(service.address).open(source)
    try:
        for index in range(80):
            client.send(
                request_text(
                    "OPTIONS",
                    f"sip:{host}:{port}",
                    local=client.local,
                    call_id=f"shot-flood-{index}",
                    user_agent="friendly-scanner",
                )
            )
        await asyncio.sleep(0.5)
    finally:
        client.close()


async def render(out: Path) -> None:
    with tempfile.TemporaryDirectory(prefix="pbxtui-shots-") as folder:
        service = await start_service(Path(folder), flood_limit=30)
        try:
            phones = await populate(service)
            settings = load_settings(service.config, db=service.db)
            app = PbxApp(
                settings, core=RemoteCore(settings, socket_path(service.db)), require_login=False
            )
            async with app.run_test(size=WIDE) as pilot:
                while not app.ready:
                    await asyncio.sleep(0.05)
                await flood(service)
                for phone, (user, password) in zip(phones, USERS.items(), strict=True):
                    await Phone(phone, user, password, DOMAIN).register()
                await asyncio.sleep(1.2)
                for key, name in (("1", "traffic"), ("2", "registrations"), ("3", "security")):
                    await pilot.press(key)
                    app.refresh_panes()
                    await pilot.pause(0.3)
                    app.save_screenshot(filename=f"attached-{key}-{name}.svg", path=str(out))
                await pilot.press("ctrl+q")
                await pilot.pause(0.2)
                app.save_screenshot(filename="attached-detach.svg", path=str(out))
            for phone in phones:
                phone.close()
            code, status, err = await cli(service, "status")
            assert code == 0, err
        finally:
            service.close()
    terminal = Console(record=True, width=90, file=open("/dev/null", "w"))  # noqa: SIM115
    terminal.print(Text(f"$ pbxtui status\n{status}"))
    terminal.save_svg(str(out / "pbxtui-status.svg"), title="pbxtui status")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "screenshots")
    options = parser.parse_args()
    options.out.mkdir(parents=True, exist_ok=True)
    asyncio.run(render(options.out))
    print(f"saved to {options.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
