"""The `pbxtui` command: start the server (console or headless) or manage its database.

Scripts and tests drive the product through this, so the contract in DESIGN.md holds:
exit 0 on success, 2 on bad usage or a bad value with one `pbxtui: error: ...` line on
stderr, 1 when the database itself fails. A user error never prints a traceback.

When a service runs on the database, management commands that change something are carried
out by it through its control socket (pbxtui/cli/remote.py: its validation, in force at once);
otherwise they write straight to the SQLite file (a one-process console notices through
`PRAGMA data_version` within about a second).

The modules: `parser` (the command line), `server` (start without a command), one module per
command family (`users`, `carriers`, `dids`, `bans`, `cdrs`, `tls`, `admin`, `database`:
init and backup), `context` (what the commands share) and `output` (tables and times).
"""

from __future__ import annotations

import argparse
import asyncio
import sqlite3
import sys
from collections.abc import Sequence

from core.control.client import (
    ControlClient,
    RemoteAdmin,
    ServiceRefused,
    ServiceUnavailable,
    running_service,
)
from core.settings import Settings
from core.store.database import Store
from core.store.errors import MissingDatabaseError, StoreError
from pbxtui.cli.context import PROG, Context, Handler, UsageError
from pbxtui.cli.database import cmd_init
from pbxtui.cli.parser import build_parser
from pbxtui.cli.remote import REMOTE_HANDLERS, RemoteContext, RemoteHandler
from pbxtui.cli.server import start_server
from pbxtui.config import ConfigError, load_settings

__all__ = ["main"]


class ServiceError(Exception):
    """The service could not be reached or refused this user: exit 1 with its reason."""


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
            advertise=getattr(args, "advertise", None),
        )
        handler: Handler | None = getattr(args, "handler", None)
        service_handler = getattr(args, "service_handler", None)
        local_handler = getattr(args, "local_handler", None)
        attach_only = getattr(args, "attach_only", False)
        if args.headless and (handler or service_handler or local_handler or attach_only):
            raise UsageError("--headless starts the server; it takes no command")
        if local_handler is not None:
            return int(local_handler(args, settings))
        if service_handler is not None:
            return asyncio.run(_run_on_service(service_handler, args, settings))
        if handler is None:
            return start_server(args, settings)
        return asyncio.run(_run_command(handler, args, settings))
    except (UsageError, ConfigError) as exc:
        return _fail(str(exc), 2)
    except (StoreError, ServiceError) as exc:
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
    """Run a management command: through the running service's control socket when one runs
    on this database (its validation, in force at once), else on the database itself, which
    it names on stderr.

    Only the server and `pbxtui init` create a database: a command pointed at the wrong
    one (another user's home under sudo, a missing --config) must not make an empty
    database the service never reads.
    """
    remote = REMOTE_HANDLERS.get(handler)
    if remote is not None:
        client = await _service_client(settings)
        if client is not None:
            try:
                context = RemoteContext(args, settings, RemoteAdmin(client), sys.stdout, sys.stderr)
                return await remote(context)
            finally:
                await client.close()
    path = settings.db_path.expanduser()
    creates = handler is cmd_init
    print(f"{PROG}: database {path}", file=sys.stderr)
    try:
        store = await Store.open(path, create=creates)
    except MissingDatabaseError:
        raise StoreError(
            f"no database at {path}: start the server once or run `{PROG} init` to create "
            "it, or point at the service's with --db, --config or PBXTUI_CONFIG"
        ) from None
    async with store:
        return await handler(Context(args, settings, store, sys.stdout, sys.stderr))


async def _run_on_service(
    handler: RemoteHandler, args: argparse.Namespace, settings: Settings
) -> int:
    client = await _service_client(settings)
    if client is None:
        raise ServiceError(
            f"no pbxtui service runs on {settings.db_path} "
            "(systemctl start pbxtui, or pbxtui --headless)"
        )
    try:
        return await handler(
            RemoteContext(args, settings, RemoteAdmin(client), sys.stdout, sys.stderr)
        )
    finally:
        await client.close()


async def _service_client(settings: Settings) -> ControlClient | None:
    """A connection to the service on this database; None when none runs."""
    try:
        path = running_service(settings.db_path)
        if path is None:
            return None
        return await ControlClient.connect(path, "pbxtui cli")
    except (ServiceRefused, ServiceUnavailable) as error:
        raise ServiceError(str(error)) from None
