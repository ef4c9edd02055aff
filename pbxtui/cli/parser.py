"""The `pbxtui` command line: global options, server options, and each command family's
subcommands (added by the family's own module)."""

from __future__ import annotations

import argparse
from importlib import metadata

import pbxtui.cli.admin as admin
import pbxtui.cli.bans as bans
import pbxtui.cli.carriers as carriers
import pbxtui.cli.cdrs as cdrs
import pbxtui.cli.database as database
import pbxtui.cli.dids as dids
import pbxtui.cli.rates as rates
import pbxtui.cli.service as service
import pbxtui.cli.tls as tls
import pbxtui.cli.users as users
from pbxtui.cli.context import PROG, CommandTable


def build_parser() -> argparse.ArgumentParser:
    """The full command line. Global options work before or after the subcommand."""
    global_options = argparse.ArgumentParser(add_help=False)
    _add_global_options(global_options, default=argparse.SUPPRESS)
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="A PBX in a box: SIP registrar, proxy and carrier trunks with a console.",
        epilog="Without a command: attaches the console to the service running on the "
        "database, or else starts the SIP server with the console in one process "
        "(--headless: the service alone).",
    )
    _add_global_options(parser, default=None)
    parser.add_argument("--version", action="version", version=f"{PROG} {package_version()}")
    parser.add_argument(
        "--headless",
        action="store_true",
        help="run the SIP server without the console, logging to stderr (for systemd)",
    )
    parser.add_argument(
        "--workers",
        metavar="N",
        help="worker processes serving SIP over UDP beside the main one: 0 (none: one "
        'process does everything), 1-64, or "auto" (one per CPU)',
    )
    table = CommandTable(parser.add_subparsers(title="commands", metavar="COMMAND"), global_options)
    for family in (database, users, carriers, dids, bans, cdrs, rates, tls, admin, service):
        family.add_commands(table)
    return parser


def _add_global_options(parser: argparse.ArgumentParser, default: object) -> None:
    parser.add_argument("--config", metavar="FILE", default=default, help="TOML config file")
    parser.add_argument("--db", metavar="PATH", default=default, help="SQLite database")
    parser.add_argument(
        "--listen",
        action="append",
        metavar="PROTO:HOST:PORT",
        default=default,
        help="socket to listen on, e.g. udp:0.0.0.0:5060 (repeatable; replaces the config's)",
    )
    parser.add_argument("--domain", metavar="NAME", default=default, help="SIP domain and realm")
    parser.add_argument(
        "--advertise",
        metavar="HOST[:PORT]",
        default=default,
        help="the public address peers reach the listeners by behind 1:1 NAT (cloud instances); "
        "goes in Via and Record-Route",
    )


def package_version() -> str:
    """The installed distribution's version (pyproject.toml's, as pip recorded it)."""
    try:
        return metadata.version("pbxtui")
    except metadata.PackageNotFoundError:  # run from a checkout that was never installed
        return "(not installed)"
