"""`pbxtui rate ...` and `pbxtui spend ...`: what calls cost, and how much users may spend.

`rate import FILE.csv --carrier NAME` replaces the carrier's whole table in one transaction:
every line is checked first and any bad one (reported with its line number) leaves the old
table in force. `rate list --carrier NAME` prints the table in the import format, so it can
be edited and imported back.
"""

from __future__ import annotations

import csv
import sys

from core.accounting.limits import SpendLimit
from core.accounting.rates import (
    RateImportError,
    format_money,
    parse_money,
    parse_prefix,
    parse_rates_csv,
    rates_csv,
    validate_currency,
)
from core.store.errors import NotFoundError
from pbxtui.cli.context import CommandTable, Context, UsageError, checked, checked_call
from pbxtui.cli.output import print_table

MAX_RATE_FILE_BYTES = 32 * 1024 * 1024  # a full international deck is a few megabytes


def add_commands(table: CommandTable) -> None:
    rates = table.group("rate", "what calls through each carrier cost")
    imported = table.action(rates, "import", cmd_rate_import, "replace a carrier's rate table")
    imported.add_argument("file", metavar="FILE.csv", help="prefix,per_minute,first_increment,"
                          "increment,connection (- = stdin)")  # fmt: skip
    imported.add_argument("--carrier", required=True, metavar="NAME")
    imported.add_argument("--currency", metavar="CODE", help="ISO 4217 code (the config's)")
    listing = table.action(rates, "list", cmd_rate_list, "list rate tables, or one as CSV")
    listing.add_argument("--carrier", metavar="NAME", help="print this carrier's table as CSV")
    delete = table.action(rates, "del", cmd_rate_del, "delete a carrier's table or one prefix")
    delete.add_argument("--carrier", required=True, metavar="NAME")
    delete.add_argument("--prefix", metavar="DIGITS", help="only this prefix")

    spend = table.group("spend", "users' spend limits (the config sets the defaults)")
    put = table.action(spend, "set", cmd_spend_set, "set a user's own daily/monthly limits")
    put.add_argument("username", metavar="USER")
    put.add_argument("--day", metavar="AMOUNT", default="0", help="per UTC day (0: none)")
    put.add_argument("--month", metavar="AMOUNT", default="0", help="per month (0: none)")
    table.action(spend, "list", cmd_spend_list, "users with limits of their own, and spend")
    remove = table.action(spend, "del", cmd_spend_del, "back to the configured default")
    remove.add_argument("username", metavar="USER")


def _read_text(path: str) -> str:
    try:
        if path == "-":
            text = sys.stdin.read(MAX_RATE_FILE_BYTES + 1)
        else:
            with open(path, encoding="utf-8", newline="") as stream:
                text = stream.read(MAX_RATE_FILE_BYTES + 1)
    except OSError as exc:
        raise UsageError(f"{path}: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise UsageError(f"{path}: not UTF-8 text") from None
    if len(text) > MAX_RATE_FILE_BYTES:
        raise UsageError(f"{path}: larger than {MAX_RATE_FILE_BYTES // (1024 * 1024)} MiB")
    return text.removeprefix("\ufeff")  # a spreadsheet's byte-order mark


async def cmd_rate_import(ctx: Context) -> int:
    args = ctx.args
    currency = checked(validate_currency, args.currency or ctx.settings.accounting.currency)
    text = _read_text(args.file)
    try:
        rates = parse_rates_csv(text)
    except RateImportError as exc:  # one line, every bad line of the file named in it
        raise UsageError(f"{args.file}: nothing imported: {exc}") from None
    try:
        await ctx.store.replace_rates(args.carrier, currency, rates)
    except NotFoundError as exc:
        raise UsageError(str(exc)) from None
    print(f"imported {len(rates)} rates for carrier {args.carrier} ({currency})", file=ctx.out)
    return 0


async def cmd_rate_list(ctx: Context) -> int:
    carrier = ctx.args.carrier
    if carrier is not None:
        _currency, rates = await ctx.store.list_rates(carrier)
        if not rates:
            raise UsageError(f"carrier {carrier!r} has no rates")
        csv.writer(ctx.out, lineterminator="\n").writerows(rates_csv(rates))
        return 0
    tables = await ctx.store.rate_counts()
    if not tables:
        print("no rates", file=ctx.out)
        return 0
    rows = [(name, currency, str(count)) for name, currency, count in tables]
    print_table(ctx.out, ("CARRIER", "CURRENCY", "PREFIXES"), rows)
    return 0


async def cmd_rate_del(ctx: Context) -> int:
    args = ctx.args
    prefix = None if args.prefix is None else checked_call(lambda: parse_prefix(args.prefix))
    removed = await ctx.store.delete_rates(args.carrier, prefix)
    if not removed:
        what = f"prefix {prefix}" if prefix is not None else "rates"
        raise UsageError(f"carrier {args.carrier!r} has no {what}")
    print(f"deleted {removed} rates of carrier {args.carrier}", file=ctx.out)
    return 0


def _amount(text: str, option: str) -> int:
    try:
        return parse_money(text)
    except ValueError as exc:
        raise UsageError(f"{option}: {exc}") from None


async def cmd_spend_set(ctx: Context) -> int:
    args = ctx.args
    limit = SpendLimit(_amount(args.day, "--day"), _amount(args.month, "--month"))
    try:
        await ctx.store.set_spend_limit(args.username, limit)
    except NotFoundError as exc:
        raise UsageError(str(exc)) from None
    print(
        f"{args.username}: {format_money(limit.per_day)} a day, "
        f"{format_money(limit.per_month)} a month (0.00: no limit)",
        file=ctx.out,
    )
    return 0


async def cmd_spend_list(ctx: Context) -> int:
    limits = await ctx.store.spend_limits()
    if not limits:
        print("no user has limits of their own (see [accounting] in the config)", file=ctx.out)
        return 0
    rows = [
        (name, format_money(limit.per_day), format_money(limit.per_month))
        for name, limit in sorted(limits.items())
    ]
    print_table(ctx.out, ("USER", "PER DAY", "PER MONTH"), rows)
    return 0


async def cmd_spend_del(ctx: Context) -> int:
    if not await ctx.store.delete_spend_limit(ctx.args.username):
        raise UsageError(f"user {ctx.args.username!r} has no limits of their own")
    print(f"{ctx.args.username}: back to the configured default", file=ctx.out)
    return 0
