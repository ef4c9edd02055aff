"""`pbxtui carrier ...`: SIP trunks."""

from __future__ import annotations

import re

from core.net.addresses import parse_ip, parse_network
from core.store.errors import DuplicateError
from core.store.rows import CarrierRow
from core.users import validate_name
from pbxtui.cli.context import CommandTable, Context, UsageError, checked
from pbxtui.cli.output import print_table


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
    add.add_argument("--port", type=int, default=5060, help="carrier's SIP port (5060)")
    add.add_argument("--transport", choices=("udp", "tcp"), default="udp")
    add.add_argument("--gateway", metavar="HOST[:PORT]", help="where outbound calls go")
    add.add_argument("--username", help="digest username for outbound calls")
    add.add_argument("--password", help="digest password for outbound calls")
    add.add_argument("--priority", type=int, default=10, help="lower is tried first (10)")
    table.action(carriers, "list", cmd_carrier_list, "list carriers")
    delete = table.action(carriers, "del", cmd_carrier_del, "delete a carrier")
    delete.add_argument("name", metavar="NAME")


async def cmd_carrier_add(ctx: Context) -> int:
    args = ctx.args
    name = checked(lambda n: validate_name(n, "carrier name"), args.name)
    addresses: list[str] = []
    for text in args.addresses:
        try:
            addresses.append(str(parse_network(text)))
        except ValueError as exc:
            raise UsageError(f"--ip: {exc}") from None
    if not 1 <= args.port <= 65_535:
        raise UsageError(f"--port {args.port}: must be 1-65535")
    if (args.username is None) != (args.password is None):
        raise UsageError("--username and --password go together")
    gateway = parse_gateway(args.gateway) if args.gateway is not None else None
    carrier = CarrierRow(
        name=name,
        addresses=tuple(dict.fromkeys(addresses)),
        port=args.port,
        transport=args.transport,
        gateway=gateway,
        username=args.username,
        password=args.password,
        priority=args.priority,
    )
    try:
        await ctx.store.add_carrier(carrier)
    except DuplicateError:
        raise UsageError(f"carrier {name!r} already exists") from None
    print(f"added carrier {name} ({', '.join(carrier.addresses)})", file=ctx.out)
    return 0


async def cmd_carrier_list(ctx: Context) -> int:
    carriers = await ctx.store.list_carriers()
    if not carriers:
        print("no carriers", file=ctx.out)
        return 0
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
    print_table(ctx.out, headers, rows)
    return 0


async def cmd_carrier_del(ctx: Context) -> int:
    if not await ctx.store.delete_carrier(ctx.args.name):
        raise UsageError(f"no carrier {ctx.args.name!r}")
    print(f"deleted carrier {ctx.args.name}", file=ctx.out)
    return 0


_GATEWAY_HOST = re.compile(r"[A-Za-z0-9]([A-Za-z0-9.-]*[A-Za-z0-9])?", re.ASCII)


def parse_gateway(text: str) -> str:
    """Normalise `HOST[:PORT]` (IPv6 in brackets) to `host:port`; port defaults to 5060."""
    host, port_text = text, ""
    if text.startswith("["):
        inside, bracket, after = text[1:].partition("]")
        if not bracket or (after and not after.startswith(":")):
            raise UsageError(f"--gateway {text!r}: expected HOST:PORT, IPv6 in brackets")
        host, port_text = inside, after[1:]
        try:
            parse_ip(host)
        except ValueError:
            raise UsageError(f"--gateway {text!r}: {host!r} is not an IPv6 address") from None
        host = f"[{host}]"
    elif ":" in text:
        host, _, port_text = text.rpartition(":")
    if not text.startswith("[") and not _GATEWAY_HOST.fullmatch(host):
        raise UsageError(f"--gateway {text!r}: {host!r} is not a host name or address")
    if port_text == "" and text.endswith(":"):
        raise UsageError(f"--gateway {text!r}: port is missing after ':'")
    port = 5060
    if port_text:
        if not port_text.isdigit() or not 1 <= int(port_text) <= 65_535:
            raise UsageError(f"--gateway {text!r}: port must be 1-65535")
        port = int(port_text)
    return f"{host}:{port}"
