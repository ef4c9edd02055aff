"""`pbxtui cdr ...`: call records, listed or exported as CSV."""

from __future__ import annotations

import csv
import re
from typing import TextIO

from core.store.database import Store
from core.store.rows import CdrRow
from pbxtui.cli.context import CommandTable, Context, UsageError
from pbxtui.cli.output import duration, local_time, print_table, utc_time

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
)


def add_commands(table: CommandTable) -> None:
    cdrs = table.group("cdr", "call records")
    listing = table.action(cdrs, "list", cmd_cdr_list, "show the newest call records")
    listing.add_argument("--limit", type=int, default=50, metavar="N", help="rows (50)")
    export = table.action(cdrs, "export", cmd_cdr_export, "write every call record to a CSV file")
    export.add_argument("--csv", dest="csv_file", required=True, metavar="FILE", help="- = stdout")


async def cmd_cdr_list(ctx: Context) -> int:
    if ctx.args.limit < 1:
        raise UsageError(f"--limit {ctx.args.limit}: must be at least 1")
    cdrs = await ctx.store.list_cdrs(limit=ctx.args.limit)
    if not cdrs:
        print("no calls", file=ctx.out)
        return 0
    rows = [
        (
            str(cdr.id),
            local_time(cdr.started_at),
            cdr.direction,
            cdr.caller,
            cdr.callee,
            str(cdr.status),
            duration(cdr.duration) if cdr.answered_at is not None else "-",
            cdr.source_ip,
            cdr.reason,
        )
        for cdr in cdrs
    ]
    headers = ("ID", "STARTED", "DIRECTION", "FROM", "TO", "STATUS", "TALK", "SOURCE", "REASON")
    print_table(ctx.out, headers, rows)
    return 0


async def cmd_cdr_export(ctx: Context) -> int:
    target: str = ctx.args.csv_file
    if target == "-":
        await _write_cdr_csv(ctx.store, ctx.out)
        return 0
    try:
        with open(target, "w", encoding="utf-8", newline="") as stream:
            count = await _write_cdr_csv(ctx.store, stream)
    except OSError as exc:
        raise UsageError(f"{target}: {exc.strerror}") from None
    print(f"exported {count} call records to {target}", file=ctx.out)
    return 0


async def _write_cdr_csv(store: Store, stream: TextIO) -> int:
    """Times as ISO 8601 UTC; fields that a spreadsheet would run as a formula are quoted."""
    writer = csv.writer(stream)
    writer.writerow(CDR_CSV_COLUMNS)
    count = 0
    async for cdr in store.export_cdrs():
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
