"""`pbxtui did ...`: inbound numbers and the users they ring."""

from __future__ import annotations

from core.store.errors import DuplicateError, NotFoundError
from core.users import normalise_number
from pbxtui.cli.context import CommandTable, Context, UsageError
from pbxtui.cli.output import print_table


def add_commands(table: CommandTable) -> None:
    dids = table.group("did", "inbound numbers")
    add = table.action(dids, "add", cmd_did_add, "route an inbound number to a user")
    add.add_argument("number", metavar="NUMBER")
    add.add_argument("user", metavar="USER")
    table.action(dids, "list", cmd_did_list, "list inbound numbers")
    delete = table.action(dids, "del", cmd_did_del, "delete an inbound number")
    delete.add_argument("number", metavar="NUMBER")


async def cmd_did_add(ctx: Context) -> int:
    number = _did_number(ctx, ctx.args.number)
    try:
        await ctx.store.add_did(number, ctx.args.user)
    except (NotFoundError, DuplicateError) as exc:
        raise UsageError(str(exc)) from None
    print(f"DID {number} -> {ctx.args.user}", file=ctx.out)
    return 0


async def cmd_did_list(ctx: Context) -> int:
    dids = await ctx.store.list_dids()
    if not dids:
        print("no DIDs", file=ctx.out)
        return 0
    print_table(ctx.out, ("NUMBER", "USER"), [(did.number, did.username) for did in dids])
    return 0


async def cmd_did_del(ctx: Context) -> int:
    number = _did_number(ctx, ctx.args.number)
    if not await ctx.store.delete_did(number):
        raise UsageError(f"no DID {number}")
    print(f"deleted DID {number}", file=ctx.out)
    return 0


def _did_number(ctx: Context, text: str) -> str:
    dialplan = ctx.settings.dialplan
    try:
        return normalise_number(
            text, dialplan.national_prefix, dialplan.country_code, dialplan.international_prefix
        )
    except ValueError as exc:
        raise UsageError(str(exc)) from None
