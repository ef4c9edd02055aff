"""Shared fixtures: a real Pbx on a free loopback port with a real SQLite file.

`pbx` starts the whole core in the test's event loop, so tests can drive it with SIPp or raw
sockets and then look inside (events, location, bans) without any mock.
"""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from support.ports import free_port

from core.compiled import CORE, stale_modules
from core.pbx import Pbx
from core.settings import AuthSettings, ListenAddress, Settings


def pytest_configure(config: pytest.Config) -> None:
    """Refuse to test a compiled module whose source changed since the build: the tests
    would exercise the old code and pass or fail for reasons not in the files."""
    stale = stale_modules()
    if stale:
        names = ", ".join(str(path.relative_to(CORE.parent)) for path in stale)
        pytest.exit(
            f"compiled modules older than their source: {names}. Rebuild them with "
            "`python setup.py build_ext --inplace` (or reinstall), or delete the core/**.so "
            "files to test the source as it is.",
            returncode=2,
        )


DOMAIN = "pbx.test"
USERS = {"alice": "alice-secret-1", "bob": "bob-secret-22", "carol": "carol-secret-333"}


# SIPp 3.6 answers only MD5 challenges (it reads the first algorithm= of all WWW-Authenticate
# headers joined), so the shared fixture offers MD5 alone, as the default does; tests of the
# SHA-256 opt-in pass `auth=AuthSettings(algorithms=("SHA-256", "MD5"))`.
SIPP_AUTH = AuthSettings(algorithms=("MD5",))


def make_settings(db_path: Path, port: int, **changes: object) -> Settings:
    settings = Settings(
        domain=DOMAIN,
        db_path=db_path,
        listen=(
            ListenAddress("udp", "127.0.0.1", port),
            ListenAddress("tcp", "127.0.0.1", port),
        ),
        auth=SIPP_AUTH,
    )
    return replace(settings, **changes)  # type: ignore[arg-type]


async def start_pbx(tmp_path: Path, users: dict[str, str] | None = None, **changes: object) -> Pbx:
    port = free_port()
    settings = make_settings(tmp_path / "pbx.db", port, **changes)
    pbx = Pbx(settings)
    await pbx.start()
    for username, password in (USERS if users is None else users).items():
        await pbx.admin.add_user(username, password)
    return pbx


@pytest.fixture
async def pbx(tmp_path: Path) -> AsyncIterator[Pbx]:
    """A running Pbx on 127.0.0.1:<free port> (UDP+TCP), users alice, bob and carol."""
    server = await start_pbx(tmp_path)
    try:
        yield server
    finally:
        await server.stop()


@pytest.fixture
def server_address(pbx: Pbx) -> tuple[str, int]:
    bound = pbx.listening[0]
    return bound.host, bound.port
