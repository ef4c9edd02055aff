"""`pbxtui admin passwd`: the console password."""

from __future__ import annotations

import asyncio
import getpass
import sys

from core.users import hash_admin_password
from pbxtui.cli.context import CommandTable, Context, UsageError, checked_call

ADMIN_MIN_PASSWORD_LENGTH = 8


def add_commands(table: CommandTable) -> None:
    admin = table.group("admin", "the console password")
    passwd = table.action(admin, "passwd", cmd_admin_passwd, "set the console password (bcrypt)")
    passwd.add_argument("--password", help="for scripts; otherwise prompted twice")


async def cmd_admin_passwd(ctx: Context) -> int:
    password: str | None = ctx.args.password
    if password is None:
        if not sys.stdin.isatty():
            raise UsageError("no password given: use --password PW")
        password = getpass.getpass("Console password: ")
        if getpass.getpass("Again: ") != password:
            raise UsageError("the passwords do not match")
    if len(password) < ADMIN_MIN_PASSWORD_LENGTH:
        raise UsageError(f"the console password needs {ADMIN_MIN_PASSWORD_LENGTH}+ characters")
    # bcrypt at cost 12 takes ~0.3 s: run it off the event loop like any blocking call.
    bcrypt_hash = await asyncio.to_thread(checked_call, lambda: hash_admin_password(password))
    await ctx.store.set_admin_hash(bcrypt_hash)
    print("console password set", file=ctx.out)
    return 0
