"""`pbxtui cdr ...`: call records, listed or exported as CSV."""

from __future__ import annotations

import argparse
import csv
import re
from datetime import UTC, datetime
from pathlib import Path
from typing import TextIO

from core.accounting.disposition import DISPOSITIONS
from core.accounting.rates import format_money
from core.accounting.stats import TALLY_COLUMNS
from core.private_files import open_private
from core.store.accounting import FAR_FUTURE, CdrFilter
from core.store.database import Store
from core.store.rows import CdrRow
from pbxtui.cli.context import CommandTable, Context, UsageError
from pbxtui.cli.output import duration, local_time, print_listing, print_table, utc_time

TALLY_HEADERS = tuple(column.upper() for column in TALLY_COLUMNS[1:])

CDR_CSV_COLUMNS = (
    "id",
    "call_id",
    "caller",
    "callee",
    "source_ip",
    "direction",
    "started_at",
    "answered_at",
    "ended_at",
    "status",
    "reason",
    "duration",
    "disposition",
    "hangup_side",
    "carrier",
    "gateway",
    "dialled",
    "number",
    "contact",
    "rate_prefix",
    "rate_per_minute",
    "rate_increments",
    "billable_seconds",
    "cost",
    "currency",
)
MAX_LIST_ROWS = 100_000


def _add_filters(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--since", metavar="TIME", help="started at or after (ISO 8601, UTC)")
    parser.add_argument("--until", metavar="TIME", help="started before (ISO 8601, UTC)")
    parser.add_argument("--user", metavar="NAME", help="calls made by this user")
    parser.add_argument("--carrier", metavar="NAME", help="calls through this carrier")
    parser.add_argument(
        "--disposition", metavar="WHAT", help="how the call ended: " + ", ".join(DISPOSITIONS)
    )


def add_commands(table: CommandTable) -> None:
    cdrs = table.group("cdr", "call records")
    listing = table.action(cdrs, "list", cmd_cdr_list, "show the newest call records")
    listing.add_argument("--limit", type=int, default=50, metavar="N", help="rows (50)")
    _add_filters(listing)
    export = table.action(cdrs, "export", cmd_cdr_export, "write call records to a CSV file")
    export.add_argument("--csv", dest="csv_file", required=True, metavar="FILE", help="- = stdout")
    _add_filters(export)
    stats = table.action(cdrs, "stats", cmd_cdr_stats, "calls, ASR, ACD, minutes and cost")
    _add_filters(stats)


def parse_time(text: str, option: str) -> float:
    """An ISO 8601 date or date-time (`2026-03-01`, `2026-03-01T08:00`, `...Z`, `...+01:00`);
    without an offset it is UTC, like every time the CDR export prints."""
    try:
        moment = datetime.fromisoformat(text.strip())
    except ValueError:
        raise UsageError(f"{option} {text!r}: expected an ISO 8601 date or time") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()


def cdr_filter(args: argparse.Namespace) -> CdrFilter:
    """The filter options of `cdr list/export/stats`, checked."""
    since = parse_time(args.since, "--since") if args.since else 0.0
    until = parse_time(args.until, "--until") if args.until else FAR_FUTURE
    if until <= since:
        raise UsageError("--until must be later than --since")
    if args.disposition is not None and args.disposition not in DISPOSITIONS:
        raise UsageError(f"--disposition {args.disposition!r}: one of {', '.join(DISPOSITIONS)}")
    return CdrFilter(since, until, args.user, args.carrier, args.disposition)


async def cmd_cdr_list(ctx: Context) -> int:
    if not 1 <= ctx.args.limit <= MAX_LIST_ROWS:
        raise UsageError(f"--limit {ctx.args.limit}: must be 1 to {MAX_LIST_ROWS}")
    cdrs = await ctx.store.query_cdrs(cdr_filter(ctx.args), limit=ctx.args.limit)
    rows = [
        (
            str(cdr.id),
            local_time(cdr.started_at),
            cdr.direction,
            cdr.caller,
            cdr.callee,
            cdr.disposition or "-",
            str(cdr.status),
            duration(cdr.duration) if cdr.answered_at is not None else "-",
            cdr.hangup_side or "-",
            cdr.carrier or "-",
            f"{format_money(cdr.cost)} {cdr.currency}" if cdr.currency else "-",
            cdr.reason,
        )
        for cdr in cdrs
    ]
    headers = (
        "ID", "STARTED", "DIRECTION", "FROM", "TO", "DISPOSITION", "STATUS", "TALK", "ENDED BY",
        "CARRIER", "COST", "REASON",
    )  # fmt: skip
    return print_listing(ctx.out, headers, rows, empty="no calls")


async def cmd_cdr_export(ctx: Context) -> int:
    target: str = ctx.args.csv_file
    where = cdr_filter(ctx.args)
    if target == "-":
        await _write_cdr_csv(ctx.store, ctx.out, where)
        return 0
    try:
        # Owner-only, never through a symlink (core/private_files.py).
        with open_private(Path(target), "w") as stream:
            count = await _write_cdr_csv(ctx.store, stream, where)
    except OSError as exc:
        raise UsageError(f"{target}: {exc.strerror}") from None
    print(f"exported {count} call records to {target}", file=ctx.out)
    return 0


async def cmd_cdr_stats(ctx: Context) -> int:
    where = cdr_filter(ctx.args)
    everything, by_user, by_carrier = await ctx.store.cdr_tallies(where)
    since = utc_time(where.since) if where.since else "the first record"
    until = utc_time(where.until) if where.until < FAR_FUTURE else "now"
    print(f"calls from {since} to {until}", file=ctx.out)
    print_table(ctx.out, ("TOTAL", *TALLY_HEADERS), [everything.row()])
    if by_user:
        print(file=ctx.out)
        print_table(ctx.out, ("USER", *TALLY_HEADERS), [tally.row() for tally in by_user])
    if by_carrier:
        print(file=ctx.out)
        print_table(ctx.out, ("CARRIER", *TALLY_HEADERS), [tally.row() for tally in by_carrier])
    return 0


async def _write_cdr_csv(store: Store, stream: TextIO, where: CdrFilter) -> int:
    """Times as ISO 8601 UTC; fields that a spreadsheet would run as a formula are quoted."""
    writer = csv.writer(stream)
    writer.writerow(CDR_CSV_COLUMNS)
    count = 0
    async for cdr in store.iterate_cdrs(where):
        writer.writerow(_cdr_csv_row(cdr))
        count += 1
    return count


def _cdr_csv_row(cdr: CdrRow) -> list[str]:
    return [
        str(cdr.id),
        _spreadsheet_safe(cdr.call_id),
        _spreadsheet_safe(cdr.caller),
        _spreadsheet_safe(cdr.callee),
        cdr.source_ip,
        cdr.direction,
        utc_time(cdr.started_at),
        utc_time(cdr.answered_at),
        utc_time(cdr.ended_at),
        str(cdr.status),
        _spreadsheet_safe(cdr.reason),
        f"{cdr.duration:.3f}",
        cdr.disposition,
        cdr.hangup_side,
        _spreadsheet_safe(cdr.carrier),
        cdr.gateway,
        _spreadsheet_safe(cdr.dialled),
        _spreadsheet_safe(cdr.number),
        _spreadsheet_safe(cdr.contact),
        cdr.rate_prefix,
        format_money(cdr.rate_per_minute) if cdr.rate_prefix else "",
        cdr.rate_increments,
        str(cdr.billable_seconds),
        format_money(cdr.cost),
        cdr.currency,
    ]


_PLAIN_NUMBER = re.compile(r"[+-]?[0-9][0-9 ]*", re.ASCII)


def _spreadsheet_safe(value: str) -> str:
    """Caller names come from the network: `=HYPERLINK(...)` in a From header must not become
    a live formula in whoever opens the export (CSV injection). Phone numbers stay as is."""
    if value[:1] in ("=", "@", "\t", "\r") or (
        value[:1] in ("+", "-") and not _PLAIN_NUMBER.fullmatch(value)
    ):
        return "'" + value
    return value
