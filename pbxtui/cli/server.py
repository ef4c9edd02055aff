"""`pbxtui` without a command: start the SIP server, with the console or headless."""

from __future__ import annotations

import argparse
import asyncio
import sys

from core.settings import Settings
from core.store.database import Store
from pbxtui.cli.realm import realm_warning


def start_server(args: argparse.Namespace, settings: Settings) -> int:
    """Warn about stale passwords, then hand over to the runner (TUI or headless)."""
    warning = asyncio.run(_startup_warning(settings))
    if warning:
        print(warning, file=sys.stderr)
    # Imported here: the management commands must not pay for loading Textual.
    if args.headless:
        from pbxtui.run import run_headless

        return run_headless(settings)
    from pbxtui.run import run_console

    return run_console(settings)


async def _startup_warning(settings: Settings) -> str | None:
    async with await Store.open(settings.db_path) as store:
        return await realm_warning(store, settings)
