"""Management commands carried out by the running service, through its control socket.

When a service runs on the database, `pbxtui user add` and the other changes go to it: the
service's own validation (core/admin.py, the same the console's forms get) decides, and the
change is in force at once, for the route and every attached console. The command prints
what the database-direct version prints, so scripts see no difference. Listing commands read
the database either way (SQLite in WAL mode is consistent for readers).
"""

from __future__ import annotations

import argparse
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TextIO

import pbxtui.cli.bans as bans
import pbxtui.cli.carriers as carriers
import pbxtui.cli.dids as dids
import pbxtui.cli.users as users
from core.control.client import RemoteAdmin
from core.security.bans import checked_ban
from core.security.sources import canonical_source
from core.settings import Settings
from core.users import validate_username
from pbxtui.cli.context import Handler, UsageError, checked, checked_call
from pbxtui.cli.output import duration


@dataclass(slots=True)
class RemoteContext:
    """What a command carried out by the service gets: the service's admin calls."""

    args: argparse.Namespace
    settings: Settings
    admin: RemoteAdmin
    out: TextIO
    err: TextIO


RemoteHandler = Callable[[RemoteContext], Awaitable[int]]


async def _service_says(call: Awaitable[object]) -> object:
    """The service's refusal (a ValueError sentence) is the operator's error: exit 2."""
    try:
        return await call
    except ValueError as error:
        raise UsageError(str(error)) from None


async def user_add(ctx: RemoteContext) -> int:
    name = checked(validate_username, ctx.args.name)
    password, generated = users._new_password(ctx.args, f"Password for {name}: ")
    options = checked_call(lambda: users._user_options(ctx.args))
    user = await _service_says(ctx.admin.add_user(name, password, **options))
    users.report_password(ctx.out, ctx.err, f"added user {name}", password, generated)
    users.print_phone_settings(ctx.out, user, password, generated, ctx.settings)  # type: ignore[arg-type]
    return 0


async def user_del(ctx: RemoteContext) -> int:
    name = ctx.args.name
    numbers = [did.number for did in await ctx.admin.list_dids() if did.username == name]
    await _service_says(ctx.admin.delete_user(name))
    also = f" and its DIDs {', '.join(numbers)}" if numbers else ""
    print(f"deleted user {name}{also}", file=ctx.out)
    return 0


async def user_passwd(ctx: RemoteContext) -> int:
    name = ctx.args.name
    if not any(user.username == name for user in await ctx.admin.list_users()):
        raise UsageError(f"no user {name!r}")
    password, generated = users._new_password(ctx.args, f"New password for {name}: ")
    await _service_says(ctx.admin.set_password(name, password))
    users.report_password(ctx.out, ctx.err, f"password changed for {name}", password, generated)
    return 0


async def user_set(ctx: RemoteContext) -> int:
    changes = checked_call(lambda: users._user_options(ctx.args))
    if ctx.args.enabled is not None:
        changes["enabled"] = ctx.args.enabled
    if not changes:
        raise UsageError("nothing to change: give at least one option (see --help)")
    await _service_says(ctx.admin.update_user(ctx.args.name, **changes))
    print(f"updated user {ctx.args.name}", file=ctx.out)
    return 0


async def carrier_add(ctx: RemoteContext) -> int:
    args = ctx.args
    if (args.username is None) != (args.password is None):
        raise UsageError("--username and --password go together")
    # The gateway goes as typed: the service reads it with the one gateway parser (a bare
    # host stays bare, so DNS SRV applies).
    carrier = await _service_says(
        ctx.admin.add_carrier(args.name, list(args.addresses), **carriers.carrier_options(args))
    )
    addresses = ", ".join(carrier.addresses)  # type: ignore[attr-defined]
    print(f"added carrier {args.name} ({addresses})", file=ctx.out)
    return 0


async def carrier_del(ctx: RemoteContext) -> int:
    await _service_says(ctx.admin.delete_carrier(ctx.args.name))
    print(f"deleted carrier {ctx.args.name}", file=ctx.out)
    return 0


async def did_add(ctx: RemoteContext) -> int:
    did = await _service_says(ctx.admin.add_did(ctx.args.number, ctx.args.user))
    print(f"DID {did.number} -> {did.username}", file=ctx.out)  # type: ignore[attr-defined]
    return 0


async def did_del(ctx: RemoteContext) -> int:
    number = dids._did_number(ctx, ctx.args.number)  # type: ignore[arg-type]
    await _service_says(ctx.admin.delete_did(number))
    print(f"deleted DID {number}", file=ctx.out)
    return 0


async def ban_add(ctx: RemoteContext) -> int:
    ip, seconds = checked_call(lambda: checked_ban(ctx.args.ip, ctx.args.seconds))
    await _service_says(ctx.admin.ban(ip, seconds, ctx.args.reason))
    how_long = "forever" if seconds is None else f"for {duration(seconds)}"
    print(f"banned {ip} {how_long}", file=ctx.out)
    return 0


async def ban_del(ctx: RemoteContext) -> int:
    # An address, or an IPv6 prefix banned as a whole.
    ip = checked_call(lambda: canonical_source(ctx.args.ip))
    await _service_says(ctx.admin.unban(ip))
    print(f"unbanned {ip}", file=ctx.out)
    return 0


# The database-direct handler → its version carried out by the service.
REMOTE_HANDLERS: dict[Handler, RemoteHandler] = {
    users.cmd_user_add: user_add,
    users.cmd_user_del: user_del,
    users.cmd_user_passwd: user_passwd,
    users.cmd_user_set: user_set,
    carriers.cmd_carrier_add: carrier_add,
    carriers.cmd_carrier_del: carrier_del,
    dids.cmd_did_add: did_add,
    dids.cmd_did_del: did_del,
    bans.cmd_ban_add: ban_add,
    bans.cmd_ban_del: ban_del,
}
