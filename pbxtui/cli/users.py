"""`pbxtui user ...`: SIP accounts, one by one or imported from a CSV file."""

from __future__ import annotations

import argparse
import csv
import getpass
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TextIO

from core.provisioning import phone_settings
from core.settings import Settings
from core.store.errors import DuplicateError
from core.users import (
    OUTBOUND_POLICIES,
    User,
    changed_user,
    generate_password,
    make_user,
    validate_password,
    validate_username,
    with_password,
)
from pbxtui.cli.context import PROG, CommandTable, Context, UsageError, checked, checked_call
from pbxtui.cli.output import local_time, print_listing
from pbxtui.cli.realm import REALM_SETTING, realm_warning

WEAK_PASSWORD_LENGTH = 8
MAX_BAD_ROWS_SHOWN = 20
_TLS_ONLY_HELP = "refuse this user's REGISTERs and calls over UDP and TCP (TLS only)"


def add_commands(table: CommandTable) -> None:
    users = table.group("user", "SIP accounts")
    add = table.action(users, "add", cmd_user_add, "add a SIP user")
    add.add_argument("name", metavar="NAME")
    _add_password_options(add)
    _add_user_options(add)
    add.add_argument("--tls-only", action="store_true", default=None, help=_TLS_ONLY_HELP)
    table.action(users, "list", cmd_user_list, "list SIP users")
    delete = table.action(users, "del", cmd_user_del, "delete a SIP user and its DIDs")
    delete.add_argument("name", metavar="NAME")
    passwd = table.action(users, "passwd", cmd_user_passwd, "set a SIP user's password")
    passwd.add_argument("name", metavar="NAME")
    _add_password_options(passwd)
    change = table.action(users, "set", cmd_user_set, "change a SIP user's options")
    change.add_argument("name", metavar="NAME")
    _add_user_options(change)
    enabled = change.add_mutually_exclusive_group()
    enabled.add_argument("--enable", dest="enabled", action="store_true", default=None)
    enabled.add_argument("--disable", dest="enabled", action="store_false")
    tls_only = change.add_mutually_exclusive_group()
    tls_only.add_argument("--tls-only", action="store_true", default=None, help=_TLS_ONLY_HELP)
    tls_only.add_argument(
        "--no-tls-only", dest="tls_only", action="store_false", help="UDP and TCP allowed again"
    )
    bulk = table.action(
        users, "import", cmd_user_import, "add users from a CSV of username,password"
    )
    bulk.add_argument("file", metavar="FILE.csv", type=Path)


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


async def cmd_user_add(ctx: Context) -> int:
    name = checked(validate_username, ctx.args.name)
    password, generated = _new_password(ctx.args, f"Password for {name}: ")
    options = _user_options(ctx.args)
    user = checked_call(lambda: make_user(name, password, ctx.settings.realm, **options))
    try:
        await ctx.store.add_user(user)
    except DuplicateError:
        raise UsageError(f"user {name!r} already exists") from None
    status = await _password_stored(ctx, f"added user {name}", password, generated)
    print_phone_settings(ctx.out, user, password, generated, ctx.settings)
    return status


async def cmd_user_list(ctx: Context) -> int:
    warning = await realm_warning(ctx.store, ctx.settings)
    if warning:
        print(warning, file=ctx.err)
    users = await ctx.store.list_users()
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
            "yes" if user.tls_only else "-",
            ",".join(numbers_by_user.get(user.username, [])) or "-",
            local_time(user.created_at),
            "" if user.realm == ctx.settings.realm else f"needs new password (realm {user.realm})",
        )
        for user in users
    ]
    headers = (
        "USER",
        "NAME",
        "ENABLED",
        "OUTBOUND",
        "CALLER ID",
        "LIMITS",
        "TLS ONLY",
        "DIDS",
        "CREATED",
        "",
    )
    return print_listing(ctx.out, headers, rows, empty="no users")


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
    updated = checked_call(lambda: with_password(user, password, ctx.settings.realm))
    await ctx.store.update_user(updated)
    return await _password_stored(ctx, f"password changed for {user.username}", password, generated)


async def cmd_user_set(ctx: Context) -> int:
    user = await _existing_user(ctx)
    changes = _user_options(ctx.args)
    if ctx.args.enabled is not None:
        changes["enabled"] = ctx.args.enabled
    if not changes:
        raise UsageError("nothing to change: give at least one option (see --help)")
    await ctx.store.update_user(checked_call(lambda: changed_user(user, **changes)))
    print(f"updated user {user.username}", file=ctx.out)
    return 0


async def cmd_user_import(ctx: Context) -> int:
    """All rows are checked before anything is written, and then written in one transaction:
    a file with one bad row imports nothing, and thousands of users take about a second."""
    path: Path = ctx.args.file
    rows, problems = _read_user_csv(path)
    existing = await ctx.store.list_usernames()
    first_line_by_name: dict[str, int] = {}
    users: list[User] = []
    created_at = time.time()
    for line, name, password, display_name in rows:
        try:
            user = make_user(
                name, password, ctx.settings.realm, display_name=display_name, created_at=created_at
            )
        except ValueError as exc:
            problems.append((line, str(exc)))
            continue
        if name in existing:
            problems.append((line, f"user {name!r} already exists"))
        elif name in first_line_by_name:
            problems.append((line, f"{name!r} is also on line {first_line_by_name[name]}"))
        else:
            first_line_by_name[name] = line
            users.append(user)
    if problems:
        problems.sort()
        for line, reason in problems[:MAX_BAD_ROWS_SHOWN]:
            print(f"{path}:{line}: {reason}", file=ctx.err)
        if len(problems) > MAX_BAD_ROWS_SHOWN:
            print(f"... and {len(problems) - MAX_BAD_ROWS_SHOWN} more", file=ctx.err)
        raise UsageError(f"{len(problems)} bad row(s) in {path}; nothing imported")
    if not rows:
        raise UsageError(f"{path}: no users in the file")
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
    """The `--display-name`, `--outbound`, ... options given, as User field values (checked
    where they are applied: `make_user`, `changed_user`)."""
    fields = {
        "display_name": args.display_name,
        "outbound_policy": args.outbound,
        "caller_id": args.caller_id,
        "max_concurrent_calls": args.max_calls,
        "max_calls_per_hour": args.max_calls_per_hour,
        "tls_only": args.tls_only,
    }
    return {key: value for key, value in fields.items() if value is not None}


def _new_password(args: argparse.Namespace, prompt: str) -> tuple[str, bool]:
    """(password, generated?) from --password, --generate or an interactive prompt."""
    if args.generate:
        return generate_password(), True
    if args.password is not None:
        checked(validate_password, args.password)
        return args.password, False
    if not sys.stdin.isatty():
        raise UsageError("no password given: use --password PW or --generate")
    password = getpass.getpass(prompt)
    if getpass.getpass("Again: ") != password:
        raise UsageError("the passwords do not match")
    checked(validate_password, password)
    return password, False


async def _password_stored(ctx: Context, done: str, password: str, generated: bool) -> int:
    """Remember the realm the new HA1s are for, say what was done, and show a generated
    password once (or warn about a weak typed one)."""
    await ctx.store.set_setting(REALM_SETTING, ctx.settings.realm)
    report_password(ctx.out, ctx.err, done, password, generated)
    return 0


def report_password(out: TextIO, err: TextIO, done: str, password: str, generated: bool) -> None:
    """Say what was done, and show a generated password once (or warn about a weak typed
    one): the same words whether the database or a running service took the change."""
    print(done, file=out)
    if generated:
        print(f"password: {password}", file=out)
    elif len(password) < WEAK_PASSWORD_LENGTH:
        print(
            f"{PROG}: warning: passwords under {WEAK_PASSWORD_LENGTH} characters are guessed "
            "quickly; consider --generate",
            file=err,
        )


def print_phone_settings(
    out: TextIO, user: User, password: str, generated: bool, settings: Settings
) -> None:
    """What to type into the phone (core/provisioning.py), after `user add`: TLS is said to
    be required for a TLS-only user, or on a server with `[tls] tls_only`."""
    shown = password if generated else "(the one you set)"
    account = phone_settings(
        user.username,
        shown,
        settings.realm,
        settings.listen,
        tls_required=user.tls_only or settings.tls.tls_only,
    )
    print(f"\nIn the phone's SIP account:\n{account.text()}", file=out)


def _limits(user: User) -> str:
    limits = []
    if user.max_concurrent_calls:
        limits.append(f"{user.max_concurrent_calls} calls")
    if user.max_calls_per_hour:
        limits.append(f"{user.max_calls_per_hour}/h")
    return ", ".join(limits) or "-"
