"""The `pbxtui` command: start the server (console or headless) or manage its database.

Scripts and tests drive the product through this, so the contract in DESIGN.md holds:
exit 0 on success, 2 on bad usage or a bad value with one `pbxtui: error: ...` line on
stderr, 1 when the database itself fails. A user error never prints a traceback.

Management commands write straight to the SQLite file; a running server notices through
`PRAGMA data_version` within about a second, so they work while it runs.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import getpass
import re
import sqlite3
import sys
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import TextIO, TypeVar

from core.net.addresses import parse_ip, parse_network
from core.settings import Settings
from core.store.database import (
    BanRow,
    CarrierRow,
    CdrRow,
    DuplicateError,
    NotFoundError,
    Store,
    StoreError,
)
from core.users import (
    OUTBOUND_POLICIES,
    User,
    generate_password,
    hash_admin_password,
    make_user,
    normalise_number,
    validate_caller_id,
    validate_display_name,
    validate_name,
    validate_password,
    validate_username,
    with_password,
)
from pbxtui.config import ConfigError, load_settings, validate_domain
from pbxtui.selfsigned import SELF_SIGNED_WARNING, SelfSignedError, make_self_signed

PROG = "pbxtui"
REALM_SETTING = "realm"  # settings-table key: the realm the stored HA1s were computed for
WEAK_PASSWORD_LENGTH = 8
ADMIN_MIN_PASSWORD_LENGTH = 8
MAX_BAD_ROWS_SHOWN = 20
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


T = TypeVar("T")
R = TypeVar("R")


class UsageError(Exception):
    """A bad value from the operator: printed as one line, exit status 2."""


@dataclass(slots=True)
class Context:
    """What a command handler gets."""

    args: argparse.Namespace
    settings: Settings
    store: Store
    out: TextIO
    err: TextIO


Handler = Callable[[Context], Awaitable[int]]


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `pbxtui` console script; returns the exit status."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exit_request:  # --help, or argparse's own usage error (status 2)
        return int(exit_request.code or 0)
    try:
        settings = load_settings(
            getattr(args, "config", None),
            db=getattr(args, "db", None),
            listen=getattr(args, "listen", None),
            domain=getattr(args, "domain", None),
            workers=getattr(args, "workers", None),
        )
        handler: Handler | None = getattr(args, "handler", None)
        if handler is not None and args.headless:
            raise UsageError("--headless starts the server; it takes no command")
        if handler is None:
            return _start_server(args, settings)
        return asyncio.run(_run_command(handler, args, settings))
    except (UsageError, ConfigError) as exc:
        return _fail(str(exc), 2)
    except StoreError as exc:
        return _fail(str(exc), 1)
    except sqlite3.Error as exc:  # e.g. still locked by another writer after the busy timeout
        return _fail(f"database: {exc}", 1)
    except KeyboardInterrupt:
        print(file=sys.stderr)
        return 130


def _fail(message: str, status: int) -> int:
    print(f"{PROG}: error: {message}", file=sys.stderr)
    return status


async def _run_command(handler: Handler, args: argparse.Namespace, settings: Settings) -> int:
    async with await Store.open(settings.db_path) as store:
        return await handler(Context(args, settings, store, sys.stdout, sys.stderr))


def _start_server(args: argparse.Namespace, settings: Settings) -> int:
    """Warn about stale passwords, then hand over to the runner (TUI or headless)."""
    warning = asyncio.run(_startup_warning(settings))
    if warning:
        print(warning, file=sys.stderr)
    # Imported here: the management commands must not pay for loading Textual.
    if args.headless:
        from pbxtui.run import run_headless

        return run_headless(settings)
    from pbxtui.run import run_console

    return run_console(settings)


async def _startup_warning(settings: Settings) -> str | None:
    async with await Store.open(settings.db_path) as store:
        return await realm_warning(store, settings)


async def realm_warning(store: Store, settings: Settings) -> str | None:
    """A warning when stored HA1s were computed for another realm than the configured domain.

    HA1 = H(user:realm:password), so after a domain change those users cannot authenticate
    until their passwords are set again; there is no way to convert an HA1.
    """
    stale = [user for user in await store.list_users() if user.realm != settings.realm]
    stored_realm = await store.get_setting(REALM_SETTING)
    if not stale and (stored_realm is None or stored_realm == settings.realm):
        return None
    old_realm = stale[0].realm if stale else stored_realm
    who = f"{len(stale)} user(s) have" if stale else "the database has"
    return (
        f"{PROG}: warning: {who} passwords hashed for realm {old_realm!r} but the domain is "
        f"{settings.realm!r}; digest HA1 depends on the realm, so reset them with "
        f"'{PROG} user passwd NAME' (or set the domain back)"
    )


# --- argument parsing ---------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    """The full command line. Global options work before or after the subcommand."""
    global_options = argparse.ArgumentParser(add_help=False)
    _add_global_options(global_options, default=argparse.SUPPRESS)
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="A PBX in a box: SIP registrar, proxy and carrier trunks with a console.",
        epilog="Without a command, starts the SIP server with the console (or --headless).",
    )
    _add_global_options(parser, default=None)
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
    commands = parser.add_subparsers(title="commands", metavar="COMMAND")

    def group(name: str, help_text: str) -> argparse._SubParsersAction[argparse.ArgumentParser]:
        sub = commands.add_parser(name, help=help_text, parents=[global_options])
        actions = sub.add_subparsers(title="actions", metavar="ACTION", required=True)
        return actions

    def action(
        actions: argparse._SubParsersAction[argparse.ArgumentParser],
        name: str,
        handler: Handler,
        help_text: str,
    ) -> argparse.ArgumentParser:
        sub = actions.add_parser(name, help=help_text, parents=[global_options])
        sub.set_defaults(handler=handler)
        return sub

    users = group("user", "SIP accounts")
    add = action(users, "add", cmd_user_add, "add a SIP user")
    add.add_argument("name", metavar="NAME")
    _add_password_options(add)
    _add_user_options(add)
    action(users, "list", cmd_user_list, "list SIP users")
    delete = action(users, "del", cmd_user_del, "delete a SIP user and its DIDs")
    delete.add_argument("name", metavar="NAME")
    passwd = action(users, "passwd", cmd_user_passwd, "set a SIP user's password")
    passwd.add_argument("name", metavar="NAME")
    _add_password_options(passwd)
    change = action(users, "set", cmd_user_set, "change a SIP user's options")
    change.add_argument("name", metavar="NAME")
    _add_user_options(change)
    enabled = change.add_mutually_exclusive_group()
    enabled.add_argument("--enable", dest="enabled", action="store_true", default=None)
    enabled.add_argument("--disable", dest="enabled", action="store_false")
    bulk = action(users, "import", cmd_user_import, "add users from a CSV of username,password")
    bulk.add_argument("file", metavar="FILE.csv", type=Path)

    carriers = group("carrier", "SIP trunks")
    add = action(carriers, "add", cmd_carrier_add, "add a carrier")
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
    add.add_argument("--transport", choices=("udp", "tcp", "tls"), default="udp")
    add.add_argument("--gateway", metavar="HOST[:PORT]", help="where outbound calls go")
    add.add_argument("--username", help="digest username for outbound calls")
    add.add_argument("--password", help="digest password for outbound calls")
    add.add_argument("--priority", type=int, default=10, help="lower is tried first (10)")
    action(carriers, "list", cmd_carrier_list, "list carriers")
    delete = action(carriers, "del", cmd_carrier_del, "delete a carrier")
    delete.add_argument("name", metavar="NAME")

    dids = group("did", "inbound numbers")
    add = action(dids, "add", cmd_did_add, "route an inbound number to a user")
    add.add_argument("number", metavar="NUMBER")
    add.add_argument("user", metavar="USER")
    action(dids, "list", cmd_did_list, "list inbound numbers")
    delete = action(dids, "del", cmd_did_del, "delete an inbound number")
    delete.add_argument("number", metavar="NUMBER")

    bans = group("ban", "banned source addresses")
    action(bans, "list", cmd_ban_list, "list bans")
    add = action(bans, "add", cmd_ban_add, "ban an address")
    add.add_argument("ip", metavar="IP")
    add.add_argument("--for", dest="seconds", type=float, metavar="SECONDS", help="else forever")
    add.add_argument("--reason", default="banned by hand")
    delete = action(bans, "del", cmd_ban_del, "lift a ban")
    delete.add_argument("ip", metavar="IP")

    cdrs = group("cdr", "call records")
    listing = action(cdrs, "list", cmd_cdr_list, "show the newest call records")
    listing.add_argument("--limit", type=int, default=50, metavar="N", help="rows (50)")
    export = action(cdrs, "export", cmd_cdr_export, "write every call record to a CSV file")
    export.add_argument("--csv", dest="csv_file", required=True, metavar="FILE", help="- = stdout")

    tls = group("tls", "certificates for SIP over TLS")
    selfsigned = action(tls, "selfsigned", cmd_tls_selfsigned, "make a self-signed pair (testing)")
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

    admin = group("admin", "the console password")
    passwd = action(admin, "passwd", cmd_admin_passwd, "set the console password (bcrypt)")
    passwd.add_argument("--password", help="for scripts; otherwise prompted twice")
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


def _add_password_options(parser: argparse.ArgumentParser) -> None:
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--password", metavar="PW", help="the password (visible in ps!)")
    source.add_argument("--generate", action="store_true", help="generate and print one")


def _add_user_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--display-name", metavar="TEXT")
    parser.add_argument(
        "--outbound", choices=OUTBOUND_POLICIES, help="what the user may dial via carriers"
    )
    parser.add_argument("--caller-id", metavar="NUMBER", help="number shown to carriers")
    parser.add_argument("--max-calls", type=int, metavar="N", help="concurrent calls (0: no cap)")
    parser.add_argument("--max-calls-per-hour", type=int, metavar="N", help="0: no cap")


# --- users --------------------------------------------------------------------------------


async def cmd_user_add(ctx: Context) -> int:
    name = _checked(validate_username, ctx.args.name)
    password, generated = _new_password(ctx.args, f"Password for {name}: ")
    options = _checked_call(lambda: _user_options(ctx.args))
    user = _checked_call(lambda: make_user(name, password, ctx.settings.realm, **options))
    try:
        await ctx.store.add_user(user)
    except DuplicateError:
        raise UsageError(f"user {name!r} already exists") from None
    await ctx.store.set_setting(REALM_SETTING, ctx.settings.realm)
    print(f"added user {name}", file=ctx.out)
    if generated:
        print(f"password: {password}", file=ctx.out)
    else:
        _warn_if_weak(ctx, password)
    return 0


async def cmd_tls_selfsigned(ctx: Context) -> int:
    args = ctx.args
    if not 1 <= args.days <= 3_650:
        raise UsageError("--days must be 1-3650")
    names = args.names or [ctx.settings.domain]
    for name in names:
        _checked_call(lambda name=name: validate_domain(name))
    for path in (args.cert, args.key):
        if path.exists() and not args.force:
            raise UsageError(f"{path} exists (--force overwrites it)")
    try:
        make_self_signed(args.cert, args.key, names, args.days)
    except SelfSignedError as error:
        raise UsageError(str(error)) from None
    print(f"wrote {args.cert} and {args.key} (openssl, RSA 2048, {args.days} days)", file=ctx.out)
    print(f'add to the config:\n[tls]\ncertificate = "{args.cert.absolute()}"', file=ctx.out)
    print(f'key = "{args.key.absolute()}"', file=ctx.out)
    print('and listen on "tls:0.0.0.0:5061" in [server] listen', file=ctx.out)
    print(f"{PROG}: warning: {SELF_SIGNED_WARNING}", file=ctx.err)
    return 0


async def cmd_user_list(ctx: Context) -> int:
    warning = await realm_warning(ctx.store, ctx.settings)
    if warning:
        print(warning, file=ctx.err)
    users = await ctx.store.list_users()
    if not users:
        print("no users", file=ctx.out)
        return 0
    numbers_by_user: dict[str, list[str]] = {}
    for did in await ctx.store.list_dids():
        numbers_by_user.setdefault(did.username, []).append(did.number)
    rows = [
        (
            user.username,
            user.display_name or "-",
            "yes" if user.enabled else "no",
            user.outbound_policy,
            user.caller_id or "-",
            _limits(user),
            ",".join(numbers_by_user.get(user.username, [])) or "-",
            _local_time(user.created_at),
            "" if user.realm == ctx.settings.realm else f"needs new password (realm {user.realm})",
        )
        for user in users
    ]
    headers = ("USER", "NAME", "ENABLED", "OUTBOUND", "CALLER ID", "LIMITS", "DIDS", "CREATED", "")
    _print_table(ctx.out, headers, rows)
    return 0


async def cmd_user_del(ctx: Context) -> int:
    name = ctx.args.name
    numbers = [did.number for did in await ctx.store.list_dids() if did.username == name]
    if not await ctx.store.delete_user(name):
        raise UsageError(f"no user {name!r}")
    also = f" and its DIDs {', '.join(numbers)}" if numbers else ""
    print(f"deleted user {name}{also}", file=ctx.out)
    return 0


async def cmd_user_passwd(ctx: Context) -> int:
    user = await _existing_user(ctx)
    password, generated = _new_password(ctx.args, f"New password for {user.username}: ")
    # Always hash for the configured realm: this is how stale HA1s get fixed.
    updated = _checked_call(lambda: with_password(user, password, ctx.settings.realm))
    await ctx.store.update_user(updated)
    await ctx.store.set_setting(REALM_SETTING, ctx.settings.realm)
    print(f"password changed for {user.username}", file=ctx.out)
    if generated:
        print(f"password: {password}", file=ctx.out)
    else:
        _warn_if_weak(ctx, password)
    return 0


async def cmd_user_set(ctx: Context) -> int:
    user = await _existing_user(ctx)
    changes = _checked_call(lambda: _user_options(ctx.args))
    if ctx.args.enabled is not None:
        changes["enabled"] = ctx.args.enabled
    if not changes:
        raise UsageError("nothing to change: give at least one option (see --help)")
    if min(changes.get("max_concurrent_calls", 0), changes.get("max_calls_per_hour", 0)) < 0:
        raise UsageError("call limits must be 0 (no limit) or positive")
    await ctx.store.update_user(replace(user, **changes))
    print(f"updated user {user.username}", file=ctx.out)
    return 0


async def cmd_user_import(ctx: Context) -> int:
    """All rows are checked before anything is written, and then written in one transaction:
    a file with one bad row imports nothing, and thousands of users take about a second."""
    path: Path = ctx.args.file
    rows, problems = _read_user_csv(path)
    existing = await ctx.store.list_usernames()
    first_line_by_name: dict[str, int] = {}
    for line, name, password, display_name in rows:
        try:
            validate_username(name)
            validate_password(password)
            validate_display_name(display_name)
        except ValueError as exc:
            problems.append((line, str(exc)))
            continue
        if name in existing:
            problems.append((line, f"user {name!r} already exists"))
        elif name in first_line_by_name:
            problems.append((line, f"{name!r} is also on line {first_line_by_name[name]}"))
        else:
            first_line_by_name[name] = line
    if problems:
        problems.sort()
        for line, reason in problems[:MAX_BAD_ROWS_SHOWN]:
            print(f"{path}:{line}: {reason}", file=ctx.err)
        if len(problems) > MAX_BAD_ROWS_SHOWN:
            print(f"... and {len(problems) - MAX_BAD_ROWS_SHOWN} more", file=ctx.err)
        raise UsageError(f"{len(problems)} bad row(s) in {path}; nothing imported")
    if not rows:
        raise UsageError(f"{path}: no users in the file")
    created_at = time.time()
    users = [
        make_user(name, password, ctx.settings.realm, display_name=display, created_at=created_at)
        for _line, name, password, display in rows
    ]
    try:
        await ctx.store.bulk_add_users(users)
    except DuplicateError as exc:  # added by someone else since we looked
        raise UsageError(f"{exc}; nothing imported") from None
    await ctx.store.set_setting(REALM_SETTING, ctx.settings.realm)
    print(f"imported {len(users)} users from {path}", file=ctx.out)
    return 0


def _read_user_csv(path: Path) -> tuple[list[tuple[int, str, str, str]], list[tuple[int, str]]]:
    """Data rows as (line, username, password, display name), and (line, reason) problems.

    Columns: username, password and an optional display name. A first row reading
    `username,password` is a header and skipped; blank rows are skipped. Usernames are
    stripped of spaces, passwords are taken exactly as written. Line numbers are the file's,
    so a quoted field spanning lines still points at the right place.
    """
    rows: list[tuple[int, str, str, str]] = []
    problems: list[tuple[int, str]] = []
    seen_data = False
    try:
        with path.open(encoding="utf-8-sig", newline="") as stream:
            reader = csv.reader(stream)
            for fields in reader:
                line = reader.line_num
                if not any(field.strip() for field in fields):
                    continue
                if not seen_data and _is_header(fields):
                    seen_data = True
                    continue
                seen_data = True
                if len(fields) not in (2, 3):
                    problems.append(
                        (
                            line,
                            f"expected username,password[,display name], got {len(fields)} columns",
                        )
                    )
                    continue
                display_name = fields[2].strip() if len(fields) == 3 else ""
                rows.append((line, fields[0].strip(), fields[1], display_name))
    except FileNotFoundError:
        raise UsageError(f"{path}: no such file") from None
    except UnicodeDecodeError:
        raise UsageError(f"{path}: not UTF-8 text") from None
    except csv.Error as exc:
        raise UsageError(f"{path}: not a CSV file: {exc}") from None
    except OSError as exc:
        raise UsageError(f"{path}: {exc.strerror}") from None
    return rows, problems


def _is_header(fields: Sequence[str]) -> bool:
    names = [field.strip().lower() for field in fields]
    return names[:2] == ["username", "password"]


async def _existing_user(ctx: Context) -> User:
    user = await ctx.store.get_user(ctx.args.name)
    if user is None:
        raise UsageError(f"no user {ctx.args.name!r}")
    return user


def _user_options(args: argparse.Namespace) -> dict[str, object]:
    """The `--display-name`, `--outbound`, ... options given, as User field values;
    `ValueError` for a bad one."""
    fields = {
        "display_name": args.display_name,
        "outbound_policy": args.outbound,
        "caller_id": args.caller_id,
        "max_concurrent_calls": args.max_calls,
        "max_calls_per_hour": args.max_calls_per_hour,
    }
    if args.display_name is not None:
        validate_display_name(args.display_name)
    if args.caller_id is not None:
        validate_caller_id(args.caller_id)
    return {key: value for key, value in fields.items() if value is not None}


def _new_password(args: argparse.Namespace, prompt: str) -> tuple[str, bool]:
    """(password, generated?) from --password, --generate or an interactive prompt."""
    if args.generate:
        return generate_password(), True
    if args.password is not None:
        _checked(validate_password, args.password)
        return args.password, False
    if not sys.stdin.isatty():
        raise UsageError("no password given: use --password PW or --generate")
    password = getpass.getpass(prompt)
    if getpass.getpass("Again: ") != password:
        raise UsageError("the passwords do not match")
    _checked(validate_password, password)
    return password, False


def _warn_if_weak(ctx: Context, password: str) -> None:
    if len(password) < WEAK_PASSWORD_LENGTH:
        print(
            f"{PROG}: warning: passwords under {WEAK_PASSWORD_LENGTH} characters are guessed "
            "quickly; consider --generate",
            file=ctx.err,
        )


def _limits(user: User) -> str:
    limits = []
    if user.max_concurrent_calls:
        limits.append(f"{user.max_concurrent_calls} calls")
    if user.max_calls_per_hour:
        limits.append(f"{user.max_calls_per_hour}/h")
    return ", ".join(limits) or "-"


# --- carriers -----------------------------------------------------------------------------


async def cmd_carrier_add(ctx: Context) -> int:
    args = ctx.args
    name = _checked(lambda n: validate_name(n, "carrier name"), args.name)
    addresses: list[str] = []
    for text in args.addresses:
        try:
            addresses.append(str(parse_network(text)))
        except ValueError as exc:
            raise UsageError(f"--ip: {exc}") from None
    if args.port is None:
        args.port = 5061 if args.transport == "tls" else 5060  # RFC 3261 §19.1.2
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
    _print_table(ctx.out, headers, rows)
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


# --- DIDs ---------------------------------------------------------------------------------


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
    _print_table(ctx.out, ("NUMBER", "USER"), [(did.number, did.username) for did in dids])
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


# --- bans ---------------------------------------------------------------------------------


async def cmd_ban_list(ctx: Context) -> int:
    bans = await ctx.store.list_bans()
    if not bans:
        print("no bans", file=ctx.out)
        return 0
    now = time.time()
    rows = [
        (
            ban.ip,
            "forever" if ban.until is None else _local_time(ban.until),
            _remaining(ban, now),
            str(ban.count),
            _local_time(ban.created_at),
            ban.reason,
        )
        for ban in bans
    ]
    _print_table(ctx.out, ("IP", "UNTIL", "LEFT", "COUNT", "SINCE", "REASON"), rows)
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
    how_long = "forever" if seconds is None else f"for {_duration(seconds)}"
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
    return _duration(ban.until - now) if ban.active(now) else "expired"


# --- CDRs ---------------------------------------------------------------------------------


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
            _local_time(cdr.started_at),
            cdr.direction,
            cdr.caller,
            cdr.callee,
            str(cdr.status),
            _duration(cdr.duration) if cdr.answered_at is not None else "-",
            cdr.source_ip,
            cdr.reason,
        )
        for cdr in cdrs
    ]
    headers = ("ID", "STARTED", "DIRECTION", "FROM", "TO", "STATUS", "TALK", "SOURCE", "REASON")
    _print_table(ctx.out, headers, rows)
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
        _utc_time(cdr.started_at),
        _utc_time(cdr.answered_at),
        _utc_time(cdr.ended_at),
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


# --- admin --------------------------------------------------------------------------------


async def cmd_admin_passwd(ctx: Context) -> int:
    password: str | None = ctx.args.password
    if password is None:
        if not sys.stdin.isatty():
            raise UsageError("no password given: use --password PW")
        password = getpass.getpass("Console password: ")
        if getpass.getpass("Again: ") != password:
            raise UsageError("the passwords do not match")
    if len(password) < ADMIN_MIN_PASSWORD_LENGTH:
        raise UsageError(f"the console password needs {ADMIN_MIN_PASSWORD_LENGTH}+ characters")
    # bcrypt at cost 12 takes ~0.3 s: run it off the event loop like any blocking call.
    bcrypt_hash = await asyncio.to_thread(_checked_call, lambda: hash_admin_password(password))
    await ctx.store.set_admin_hash(bcrypt_hash)
    print("console password set", file=ctx.out)
    return 0


# --- output and checks --------------------------------------------------------------------


def _print_table(out: TextIO, headers: Sequence[str], rows: Iterable[Sequence[str]]) -> None:
    """Left-aligned columns two spaces apart; the last column is not padded."""
    table = [list(headers), *(list(row) for row in rows)]
    widths = [max(len(row[i]) for row in table) for i in range(len(headers))]
    for row in table:
        cells = [cell.ljust(width) for cell, width in zip(row[:-1], widths, strict=False)]
        print("  ".join([*cells, row[-1]]).rstrip(), file=out)


def _local_time(timestamp: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(timestamp))


def _utc_time(timestamp: float | None) -> str:
    if timestamp is None:
        return ""
    return datetime.fromtimestamp(timestamp, UTC).isoformat(timespec="milliseconds")


def _duration(seconds: float) -> str:
    whole = max(0, round(seconds))
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def _checked(check: Callable[[T], None], value: T) -> T:
    """Run a validator; its ValueError becomes a UsageError (exit 2, one line)."""
    try:
        check(value)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    return value


def _checked_call(build: Callable[[], R]) -> R:
    try:
        return build()
    except ValueError as exc:
        raise UsageError(str(exc)) from None
