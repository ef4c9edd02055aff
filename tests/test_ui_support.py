"""Shared helpers for the console tests (no tests here): a real PbxApp on a free loopback
port with a tmp database, and real SIP traffic sent to it."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import replace
from pathlib import Path

from conftest import make_settings
from support.client import UdpClient, request_text
from support.phone import Phone
from support.ports import free_port
from textual.pilot import Pilot

from core.settings import Settings, UiSettings
from pbxtui.app import PbxApp
from screens.base import PbxPane

SIZE = (100, 30)


def console_settings(
    tmp_path: Path, core: dict[str, object] | None = None, **ui: object
) -> Settings:
    """Settings for a test console; `core` replaces whole sections (e.g. security=...)."""
    settings = make_settings(tmp_path / "pbx.db", free_port(), **(core or {}))
    return replace(settings, ui=replace(UiSettings(refresh_hz=10), **ui))  # type: ignore[arg-type]


@asynccontextmanager
async def console(
    tmp_path: Path,
    *,
    require_login: bool = False,
    size: tuple[int, int] = SIZE,
    users: dict[str, str] | None = None,
    core: dict[str, object] | None = None,
    **ui: object,
) -> AsyncIterator[tuple[PbxApp, Pilot[None]]]:
    """A started console (Pbx listening, panes refreshing) and its pilot."""
    app = PbxApp(console_settings(tmp_path, core, **ui), require_login=require_login)
    async with app.run_test(size=size) as pilot:
        await pilot.pause()
        assert app.ready, app.start_error
        for username, password in (users or {}).items():
            await app.pbx.admin.add_user(username, password)
        yield app, pilot


def server_of(app: PbxApp) -> tuple[str, int]:
    bound = app.pbx.listening[0]
    return bound.host, bound.port


async def register(app: PbxApp, user: str, password: str) -> UdpClient:
    """Register `user` from a fresh UDP socket; returns the (open) client."""
    client = await UdpClient(server_of(app)).open()
    response = await Phone(client, user, password).register()
    assert response is not None and response.status == 200, response
    return client


async def options_ping(app: PbxApp, *, user_agent: str = "pbxtui-tests") -> None:
    """One OPTIONS to the server, answered 200: a one-message dialog in the Traffic pane."""
    host, port = server_of(app)
    async with UdpClient((host, port)) as client:
        text = request_text(
            "OPTIONS", f"sip:{host}:{port}", local=client.local, user_agent=user_agent
        )
        await client.ask(text)


async def flood(app: PbxApp, count: int, local_ip: str = "127.0.0.2") -> None:
    """`count` OPTIONS at once from `local_ip` (not one of the server's own addresses)."""
    host, port = server_of(app)
    client = await UdpClient((host, port)).open(local_ip)
    try:
        for _ in range(count):
            client.send(request_text("OPTIONS", f"sip:{host}:{port}", local=client.local))
        await client.recv(0.3)
    finally:
        client.close()


def pane_on_show(app: PbxApp) -> PbxPane | None:
    """The pane the admin sees; None while a form, the help or the lock covers it."""
    return app.console_screen.pane if app.screen is app.console_screen else None


async def refreshed(pilot: Pilot[None], app: PbxApp) -> None:
    """Let the console drain the bus and redraw once, now."""
    app.refresh_panes()
    await pilot.pause()
