"""`pbxtui` without a command: start the SIP server headless (the service), attach the console
to the service running on this database, or, when none runs, run both in one process.
`pbxtui console` attaches only."""

from __future__ import annotations

import argparse
import asyncio
import sys

from core.control.client import ServiceRefused, ServiceUnavailable, running_service
from core.settings import Settings
from core.store.database import Store
from pbxtui.cli.context import PROG
from pbxtui.cli.realm import realm_warning
from pbxtui.config import load_settings


def reload_settings(args: argparse.Namespace) -> Settings:
    """The settings again, from the same file and the same command-line overrides (SIGHUP)."""
    return load_settings(
        getattr(args, "config", None),
        db=getattr(args, "db", None),
        listen=getattr(args, "listen", None),
        domain=getattr(args, "domain", None),
        workers=getattr(args, "workers", None),
    )


def start_server(args: argparse.Namespace, settings: Settings) -> int:
    """Attach to a running service, or warn about stale passwords and hand over to the
    runner (TUI or headless)."""
    if not args.headless:
        try:
            control_socket = running_service(settings.db_path)
        except (ServiceRefused, ServiceUnavailable) as error:
            print(f"{PROG}: error: {error}", file=sys.stderr)
            return 1
        if control_socket is not None:
            from pbxtui.run import run_attached

            return run_attached(settings, control_socket)
        if getattr(args, "attach_only", False):
            print(
                f"{PROG}: error: no pbxtui service runs on {settings.db_path}: start it "
                "(systemctl start pbxtui, or pbxtui --headless), or run `pbxtui` for the "
                "SIP server and the console in one process",
                file=sys.stderr,
            )
            return 1
    warning = asyncio.run(_startup_warning(settings))
    if warning:
        print(warning, file=sys.stderr)
    # Imported here: the management commands must not pay for loading Textual.
    if args.headless:
        from pbxtui.run import run_headless

        return run_headless(settings, lambda: reload_settings(args))
    from pbxtui.run import run_console

    return run_console(settings)


async def _startup_warning(settings: Settings) -> str | None:
    async with await Store.open(settings.db_path) as store:
        return await realm_warning(store, settings)
