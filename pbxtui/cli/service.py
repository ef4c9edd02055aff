"""Commands about the service itself: `pbxtui status`, `pbxtui reg list`, `pbxtui console`
and `pbxtui service install`.

`status` and `reg list` ask the running service (the registrations live in its memory; the
database only keeps them for a restart); without one they say so and exit 1.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from pathlib import Path

from core.settings import Settings
from pbxtui.cli.context import CommandTable, UsageError
from pbxtui.cli.output import duration, local_time, print_table
from pbxtui.cli.remote import RemoteContext
from pbxtui.systemd import UNIT_NAME, unit_text


def add_commands(table: CommandTable) -> None:
    status = table.command("status", "what the running service is doing")
    status.set_defaults(service_handler=cmd_status)
    regs = table.group("reg", "registered phones (from the running service)")
    listing = table.command("list", "list registered contacts", regs)
    listing.add_argument("user", metavar="USER", nargs="?", help="only this user's contacts")
    listing.set_defaults(service_handler=cmd_reg_list)
    console = table.command("console", "attach the console to the running service")
    console.set_defaults(attach_only=True)
    service = table.group("service", "run pbxtui as a systemd service")
    install = table.command("install", f"write /etc/systemd/system/{UNIT_NAME}", service)
    install.add_argument("--user", default="pbxtui", help="the service's user (pbxtui)")
    install.add_argument(
        "--data-dir", type=Path, default=Path("/var/lib/pbxtui"), help="database folder"
    )
    install.add_argument(
        "--unit-dir", type=Path, default=Path("/etc/systemd/system"), help="where to write it"
    )
    install.add_argument("--stdout", action="store_true", help="print the unit, write nothing")
    install.set_defaults(local_handler=cmd_service_install)


async def cmd_status(ctx: RemoteContext) -> int:
    status = await ctx.admin.status()
    up = time.time() - status.started_at
    rows = [
        ("service", f"pid {status.pid}, up {duration(up)} (since {local_time(status.started_at)})"),
        ("domain", status.domain),
        ("listening", ", ".join(status.listening) or "-"),
        ("users", str(status.users)),
        ("registrations", f"{status.contacts} contacts"),
        ("calls up", str(status.calls_up)),
        ("bans", str(status.bans)),
        (
            "messages",
            f"{status.messages_in} in, {status.messages_out} out, {status.dropped} dropped",
        ),
        ("messages/s", f"{await _rate(ctx):.1f}"),
        ("workers", str(status.workers) if status.workers else "none (one process)"),
        ("consoles", f"{status.consoles} attached (this command included)"),
    ]
    width = max(len(name) for name, _ in rows)
    for name, value in rows:
        print(f"{name:<{width}}  {value}", file=ctx.out)
    return 0


RATE_SAMPLE_SECONDS = 1.0


async def _rate(ctx: RemoteContext) -> float:
    """Messages per second, in and out, over a one-second sample."""
    first = await ctx.admin.status()
    started = time.monotonic()
    await asyncio.sleep(RATE_SAMPLE_SECONDS)
    second = await ctx.admin.status()
    elapsed = time.monotonic() - started
    total = (second.messages_in + second.messages_out) - (first.messages_in + first.messages_out)
    return total / elapsed if elapsed > 0 else 0.0


async def cmd_reg_list(ctx: RemoteContext) -> int:
    rows = await ctx.admin.registrations(ctx.args.user)
    if not rows:
        print("no registrations", file=ctx.out)
        return 0
    now = time.time()
    print_table(
        ctx.out,
        ("USER", "CONTACT", "FROM", "PROTO", "EXPIRES IN", "NAT", "USER AGENT"),
        [
            (
                row.user,
                row.contact,
                f"{row.remote[0]}:{row.remote[1]}",
                row.transport.upper(),
                duration(row.expires_at - now),
                ("ok" if row.reachable else "unreachable") if row.behind_nat else "-",
                row.user_agent or "-",
            )
            for row in sorted(rows, key=lambda row: (row.user, row.contact))
        ],
    )
    return 0


def cmd_service_install(args: argparse.Namespace, settings: Settings) -> int:
    """Write the unit with this machine's paths; print the next steps."""
    text = unit_text(
        executable=_executable(),
        user=args.user,
        data_dir=args.data_dir,
        config=Path(args.config).resolve() if getattr(args, "config", None) else None,
    )
    if args.stdout:
        sys.stdout.write(text)
        return 0
    target = args.unit_dir / UNIT_NAME
    try:
        target.write_text(text)
    except OSError as error:
        raise UsageError(
            f"cannot write {target}: {error.strerror} (run as root, or --stdout)"
        ) from None
    print(f"wrote {target}", file=sys.stdout)
    print(
        "next:\n"
        f"  useradd --system --home-dir {args.data_dir} --shell /usr/sbin/nologin {args.user}\n"
        "  systemctl daemon-reload && systemctl enable --now pbxtui\n"
        "  journalctl -u pbxtui -p warning   # security events\n"
        f"  pbxtui console --db {args.data_dir / 'pbxtui.db'}",
        file=sys.stdout,
    )
    return 0


def _executable() -> str:
    """The `pbxtui` this process runs as: the venv's script when there is one."""
    script = Path(sys.argv[0]).resolve() if sys.argv and sys.argv[0] else None
    if script is not None and script.name == "pbxtui" and script.exists():
        return str(script)
    return f"{Path(sys.executable).resolve()} -m pbxtui"
