"""`pbxtui tls selfsigned`: a certificate and key for trying SIP over TLS (pbxtui/selfsigned.py).

It writes files and prints the config lines to add; it needs neither the database nor a
running service, so it runs on its own (`local_handler`).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from core.settings import Settings
from pbxtui.cli.context import PROG, CommandTable, UsageError, checked
from pbxtui.config import validate_domain
from pbxtui.selfsigned import SELF_SIGNED_WARNING, SelfSignedError, make_self_signed

MAX_DAYS = 3_650


def add_commands(table: CommandTable) -> None:
    tls = table.group("tls", "certificates for SIP over TLS")
    selfsigned = table.command("selfsigned", "make a self-signed pair (testing)", tls)
    selfsigned.add_argument("--cert", type=Path, default=Path("pbxtui-cert.pem"), metavar="FILE")
    selfsigned.add_argument("--key", type=Path, default=Path("pbxtui-key.pem"), metavar="FILE")
    selfsigned.add_argument(
        "--name",
        dest="names",
        action="append",
        metavar="HOST",
        help="host name or address the phones use (repeatable; default: the SIP domain)",
    )
    selfsigned.add_argument("--days", type=int, default=365, help="validity (365)")
    selfsigned.add_argument("--force", action="store_true", help="overwrite existing files")
    selfsigned.set_defaults(local_handler=cmd_tls_selfsigned)


def cmd_tls_selfsigned(args: argparse.Namespace, settings: Settings) -> int:
    """Write the pair, print what to add to the config, and warn that phones will warn."""
    if not 1 <= args.days <= MAX_DAYS:
        raise UsageError(f"--days must be 1-{MAX_DAYS}")
    names: list[str] = args.names or [settings.domain]
    for name in names:
        checked(validate_domain, name)
    for path in (args.cert, args.key):
        if path.exists() and not args.force:
            raise UsageError(f"{path} exists (--force overwrites it)")
    try:
        make_self_signed(args.cert, args.key, names, args.days)
    except SelfSignedError as error:
        raise UsageError(str(error)) from None
    out = sys.stdout
    print(f"wrote {args.cert} and {args.key} (openssl, RSA 2048, {args.days} days)", file=out)
    print(f'add to the config:\n[tls]\ncertificate = "{args.cert.absolute()}"', file=out)
    print(f'key = "{args.key.absolute()}"', file=out)
    print('and listen on "tls:0.0.0.0:5061" in [server] listen', file=out)
    print(f"{PROG}: warning: {SELF_SIGNED_WARNING}", file=sys.stderr)
    return 0
