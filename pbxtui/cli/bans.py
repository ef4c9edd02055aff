"""`pbxtui ban ...`: banned source addresses."""

from __future__ import annotations

import time

from core.net.addresses import parse_ip
from core.store.rows import BanRow
from pbxtui.cli.context import CommandTable, Context, UsageError
from pbxtui.cli.output import duration, local_time, print_table


def add_commands(table: CommandTable) -> None:
    bans = table.group("ban", "banned source addresses")
    table.action(bans, "list", cmd_ban_list, "list bans")
    add = table.action(bans, "add", cmd_ban_add, "ban an address")
    add.add_argument("ip", metavar="IP")
    add.add_argument("--for", dest="seconds", type=float, metavar="SECONDS", help="else forever")
    add.add_argument("--reason", default="banned by hand")
    delete = table.action(bans, "del", cmd_ban_del, "lift a ban")
    delete.add_argument("ip", metavar="IP")


async def cmd_ban_list(ctx: Context) -> int:
    bans = await ctx.store.list_bans()
    if not bans:
        print("no bans", file=ctx.out)
        return 0
    now = time.time()
    rows = [
        (
            ban.ip,
            "forever" if ban.until is None else local_time(ban.until),
            _remaining(ban, now),
            str(ban.count),
            local_time(ban.created_at),
            ban.reason,
        )
        for ban in bans
    ]
    print_table(ctx.out, ("IP", "UNTIL", "LEFT", "COUNT", "SINCE", "REASON"), rows)
    return 0


async def cmd_ban_add(ctx: Context) -> int:
    ip = _checked_ip(ctx.args.ip)
    seconds: float | None = ctx.args.seconds
    if seconds is not None and not seconds > 0:
        raise UsageError(f"--for {seconds:g}: must be more than 0 seconds")
    now = time.time()
    previous = await ctx.store.get_ban(ip)
    ban = BanRow(
        ip=ip,
        until=None if seconds is None else now + seconds,
        reason=ctx.args.reason,
        count=previous.count + 1 if previous else 1,
        created_at=previous.created_at if previous else now,
    )
    await ctx.store.upsert_ban(ban)
    how_long = "forever" if seconds is None else f"for {duration(seconds)}"
    print(f"banned {ip} {how_long}", file=ctx.out)
    return 0


async def cmd_ban_del(ctx: Context) -> int:
    ip = _checked_ip(ctx.args.ip)
    if not await ctx.store.delete_ban(ip):
        raise UsageError(f"{ip} is not banned")
    print(f"unbanned {ip}", file=ctx.out)
    return 0


def _checked_ip(text: str) -> str:
    try:
        return str(parse_ip(text))
    except ValueError as exc:
        raise UsageError(str(exc)) from None


def _remaining(ban: BanRow, now: float) -> str:
    if ban.until is None:
        return "-"
    return duration(ban.until - now) if ban.active(now) else "expired"
