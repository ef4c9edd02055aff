"""`pbxtui init` and `pbxtui backup FILE`: the database file itself.

`init` is the one management command that creates a database (the server creates one on
its first start too); every other command refuses a missing file (pbxtui/cli/__init__.py).
`backup` writes a consistent copy while the server runs (core/store/backup.py).
"""

from __future__ import annotations

from pathlib import Path

from pbxtui.cli.context import CommandTable, Context
from pbxtui.cli.realm import REALM_SETTING


def add_commands(table: CommandTable) -> None:
    init = table.command("init", "create the database (the server also does on first start)")
    init.set_defaults(handler=cmd_init)
    backup = table.command("backup", "copy the database, consistent, while it runs")
    backup.set_defaults(handler=cmd_backup)
    backup.add_argument("file", metavar="FILE", type=Path, help="a new file for the copy")


async def cmd_init(ctx: Context) -> int:
    """The store is open (created and migrated) by now; record the realm like `user add`."""
    await ctx.store.get_or_create_setting(REALM_SETTING, lambda: ctx.settings.realm)
    print(f"database ready: {ctx.store.path}", file=ctx.out)
    return 0


async def cmd_backup(ctx: Context) -> int:
    copy = await ctx.store.backup(ctx.args.file)
    print(f"backed up {ctx.store.path} to {copy}", file=ctx.out)
    live = ctx.store.path
    print(f"to restore: stop pbxtui, rm -f {live}-wal {live}-shm, cp {copy} {live}", file=ctx.out)
    return 0
