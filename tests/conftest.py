"""Shared fixtures: a real Pbx on a free loopback port with a real SQLite file.

`pbx` starts the whole core in the test's event loop, so tests can drive it with SIPp or raw
sockets and then look inside (events, location, bans) without any mock.
"""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, replace
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from support.ports import free_port

from core.compiled import CORE, stale_modules
from core.pbx import Pbx
from core.settings import AuthSettings, ListenAddress, Settings
from core.store.database import Store
from core.users import make_user
from pbxtui.cli import main


def _no_caret_anchors_on_python_3_11() -> None:
    """CPython 3.11 keeps the AST builder's recursion count in one per-interpreter variable
    (python/cpython#106905): a traceback formatted while another `ast.parse` is under way —
    a "Task exception was never retrieved" logged by a finaliser that the garbage collector
    runs in the middle of pytest's own `ast.parse` of a failing test's source, or of
    test_layers' — makes the outer parse raise "AST constructor recursion depth mismatch",
    and pytest stops with an INTERNALERROR instead of reporting the failure. The traceback
    module parses only to draw its `^^^` carets; without them it formats the same frames."""
    import traceback

    if sys.version_info < (3, 12) and hasattr(
        traceback, "_extract_caret_anchors_from_line_segment"
    ):
        traceback._extract_caret_anchors_from_line_segment = lambda segment: None  # type: ignore[attr-defined]


_no_caret_anchors_on_python_3_11()


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
    wanted = USERS if users is None else users
    if settings.workers:
        # Worker processes read the users when they start, and start() waits until each is
        # ready; added afterwards, each worker reloads them a moment later, and a test that
        # registers at once would race that reload (and get 401 on a loaded machine).
        async with await Store.open(settings.db_path) as store:
            for username, password in wanted.items():
                await store.add_user(make_user(username, password, settings.realm))
        wanted = {}
    pbx = Pbx(settings)
    await pbx.start()
    for username, password in wanted.items():
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


# -- the CLI on a real database file ---------------------------------------------------------
@dataclass(frozen=True, slots=True)
class CliResult:
    """What one `pbxtui` command did: its exit status and everything it printed."""

    code: int
    out: str
    err: str

    @property
    def messages(self) -> str:
        """stderr without the `pbxtui: database PATH` line every management command starts
        with: the command's own warnings and errors."""
        return "".join(
            line
            for line in self.err.splitlines(keepends=True)
            if not line.startswith("pbxtui: database ")
        )


Cli = Callable[..., CliResult]


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "pbx.db"


@pytest.fixture
def cli(
    tmp_path: Path, db: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> Cli:
    """Run `pbxtui --db DB --domain pbx.test ARGS...` (another domain with `domain=`), isolated
    from any real config, on a database made by `pbxtui init` (management commands create
    none). Commands run in the test's thread, each with its own event loop."""
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    for variable in ("XDG_CONFIG_HOME", "XDG_DATA_HOME", "PBXTUI_CONFIG"):
        monkeypatch.delenv(variable, raising=False)
    monkeypatch.chdir(tmp_path)
    assert main(["--db", str(db), "--domain", DOMAIN, "init"]) == 0
    capsys.readouterr()

    def run(*args: str, domain: str = DOMAIN) -> CliResult:
        code = main(["--db", str(db), "--domain", domain, *args])
        captured = capsys.readouterr()
        return CliResult(code, captured.out, captured.err)

    return run
