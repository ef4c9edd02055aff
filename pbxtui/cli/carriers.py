"""`pbxtui carrier ...`: SIP trunks."""

from __future__ import annotations

import argparse
from typing import Any

from core.store.errors import DuplicateError
from core.trunks.carriers import CARRIER_TRANSPORTS, new_carrier
from pbxtui.cli.context import CommandTable, Context, UsageError, checked_call
from pbxtui.cli.output import print_listing


def add_commands(table: CommandTable) -> None:
    carriers = table.group("carrier", "SIP trunks")
    add = table.action(carriers, "add", cmd_carrier_add, "add a carrier")
    add.add_argument("name", metavar="NAME")
    add.add_argument(
        "--ip",
        dest="addresses",
        action="append",
        required=True,
        metavar="ADDR[/PREFIX]",
        help="address or range the carrier sends from (repeatable)",
    )
    add.add_argument("--port", type=int, help="carrier's SIP port (5060; 5061 for tls)")
    add.add_argument("--transport", choices=CARRIER_TRANSPORTS, default="udp")
    add.add_argument("--gateway", metavar="HOST[:PORT]", help="where outbound calls go")
    add.add_argument("--username", help="digest username for outbound calls")
    add.add_argument("--password", help="digest password for outbound calls")
    add.add_argument("--priority", type=int, default=10, help="lower is tried first (10)")
    table.action(carriers, "list", cmd_carrier_list, "list carriers")
    delete = table.action(carriers, "del", cmd_carrier_del, "delete a carrier")
    delete.add_argument("name", metavar="NAME")


def carrier_options(args: argparse.Namespace) -> dict[str, Any]:
    """`carrier add`'s options as the carrier rule takes them (core/trunks/carriers.py), for
    the database or for a running service alike."""
    return {
        "gateway": args.gateway,
        "port": args.port,
        "transport": args.transport,
        "username": args.username,
        "password": args.password,
        "priority": args.priority,
    }


async def cmd_carrier_add(ctx: Context) -> int:
    args = ctx.args
    carrier = checked_call(lambda: new_carrier(args.name, args.addresses, **carrier_options(args)))
    try:
        await ctx.store.add_carrier(carrier)
    except DuplicateError:
        raise UsageError(f"carrier {carrier.name!r} already exists") from None
    print(f"added carrier {carrier.name} ({', '.join(carrier.addresses)})", file=ctx.out)
    return 0


async def cmd_carrier_list(ctx: Context) -> int:
    carriers = await ctx.store.list_carriers()
    rows = [
        (
            carrier.name,
            ",".join(carrier.addresses),
            str(carrier.port),
            carrier.transport,
            carrier.gateway or "-",
            carrier.username or "-",  # never the password
            str(carrier.priority),
            "yes" if carrier.enabled else "no",
        )
        for carrier in carriers
    ]
    headers = ("CARRIER", "ADDRESSES", "PORT", "TRANSPORT", "GATEWAY", "AUTH", "PRIO", "ENABLED")
    return print_listing(ctx.out, headers, rows, empty="no carriers")


async def cmd_carrier_del(ctx: Context) -> int:
    if not await ctx.store.delete_carrier(ctx.args.name):
        raise UsageError(f"no carrier {ctx.args.name!r}")
    print(f"deleted carrier {ctx.args.name}", file=ctx.out)
    return 0
