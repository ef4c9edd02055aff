"""The `pbxtui` command: start the server (console or headless) or manage its database.

Scripts and tests drive the product through this, so the contract in DESIGN.md holds:
exit 0 on success, 2 on bad usage or a bad value with one `pbxtui: error: ...` line on
stderr, 1 when the database itself fails. A user error never prints a traceback.

Management commands write straight to the SQLite file; a running server notices through
`PRAGMA data_version` within about a second, so they work while it runs.

The modules: `parser` (the command line), `server` (start without a command), one module per
command family (`users`, `carriers`, `dids`, `bans`, `cdrs`, `admin`), `context` (what the
commands share) and `output` (tables and times).
"""

from __future__ import annotations

import argparse
import asyncio
import sqlite3
import sys
from collections.abc import Sequence

from core.settings import Settings
from core.store.database import Store
from core.store.errors import StoreError
from pbxtui.cli.context import PROG, Context, Handler, UsageError
from pbxtui.cli.parser import build_parser
from pbxtui.cli.server import start_server
from pbxtui.config import ConfigError, load_settings

__all__ = ["main"]


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `pbxtui` console script; returns the exit status."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exit_request:  # --help, or argparse's own usage error (status 2)
        return int(exit_request.code or 0)
    try:
        settings = load_settings(
            getattr(args, "config", None),
            db=getattr(args, "db", None),
            listen=getattr(args, "listen", None),
            domain=getattr(args, "domain", None),
            workers=getattr(args, "workers", None),
        )
        handler: Handler | None = getattr(args, "handler", None)
        if handler is not None and args.headless:
            raise UsageError("--headless starts the server; it takes no command")
        if handler is None:
            return start_server(args, settings)
        return asyncio.run(_run_command(handler, args, settings))
    except (UsageError, ConfigError) as exc:
        return _fail(str(exc), 2)
    except StoreError as exc:
        return _fail(str(exc), 1)
    except sqlite3.Error as exc:  # e.g. still locked by another writer after the busy timeout
        return _fail(f"database: {exc}", 1)
    except KeyboardInterrupt:
        print(file=sys.stderr)
        return 130


def _fail(message: str, status: int) -> int:
    print(f"{PROG}: error: {message}", file=sys.stderr)
    return status


async def _run_command(handler: Handler, args: argparse.Namespace, settings: Settings) -> int:
    async with await Store.open(settings.db_path) as store:
        return await handler(Context(args, settings, store, sys.stdout, sys.stderr))
