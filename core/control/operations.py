"""What a console or the CLI may ask a running service to do, and how each request is checked.

One table, `OPERATIONS`: the name on the wire, the arguments it takes (name → JSON type,
required or not) and the coroutine that carries it out with the service's own `AdminApi`, so
a user added over the socket gets exactly the validation a form in a local console gets.
A request with an unknown operation, an unknown argument or a value of the wrong JSON type is
answered with an error and runs nothing.
"""

from __future__ import annotations

import os
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from core.control.codec import to_wire
from core.control.rows import ContactRow, ServiceStatus

if TYPE_CHECKING:
    from core.pbx import Pbx

MAX_SNAPSHOT_ROWS = 10_000  # registrations or bans in one reply (the console shows 1,000)


@dataclass(frozen=True, slots=True)
class Argument:
    types: tuple[type, ...]
    required: bool = True


@dataclass(frozen=True, slots=True)
class Operation:
    arguments: dict[str, Argument]
    run: Callable[[ServiceContext, dict[str, Any]], Awaitable[object]]


@dataclass(slots=True)
class ServiceContext:
    """What operations may use: the Pbx, when it started, and how many consoles are attached."""

    pbx: Pbx
    started_at: float
    version: str
    consoles: Callable[[], int]


def _text(required: bool = True) -> Argument:
    return Argument((str,), required)


def _number(required: bool = True) -> Argument:
    return Argument((int, float, type(None)), required)


def _integer(required: bool = True) -> Argument:
    return Argument((int,), required)


def _status(context: ServiceContext) -> ServiceStatus:
    pbx = context.pbx
    stats = pbx.stats()
    return ServiceStatus(
        pid=os.getpid(),
        version=context.version,
        started_at=context.started_at,
        domain=pbx.settings.domain,
        listening=tuple(str(address) for address in pbx.listening),
        users=stats.users,
        contacts=stats.contacts,
        calls_up=stats.calls_up,
        bans=stats.bans,
        messages_in=stats.messages_in,
        messages_out=stats.messages_out,
        dropped=stats.dropped,
        workers=pbx.settings.workers,
        consoles=context.consoles(),
    )


def _registrations(context: ServiceContext, args: dict[str, Any]) -> list[ContactRow]:
    user = args.get("user")
    location = context.pbx.location
    bindings = location.bindings_of(user) if user else location.all_bindings()
    rows = []
    for binding in bindings:
        rows.append(ContactRow.of(binding))
        if len(rows) >= MAX_SNAPSHOT_ROWS:
            break
    return rows


def _user_fields(raw: object) -> dict[str, object]:
    """Field changes of a user, lists (JSON) back to the tuples the User holds."""
    if not isinstance(raw, dict):
        raise ValueError("fields must be an object")
    return {
        str(name): tuple(value) if isinstance(value, list) else value for name, value in raw.items()
    }


def _admin(context: ServiceContext):  # type: ignore[no-untyped-def]
    return context.pbx.admin


async def _async(value: object) -> object:
    return value


OPERATIONS: dict[str, Operation] = {
    "status": Operation({}, lambda c, a: _async(_status(c))),
    "registrations": Operation({"user": _text(False)}, lambda c, a: _async(_registrations(c, a))),
    "bans": Operation(
        {},
        lambda c, a: _async(c.pbx.security.bans(c.pbx.clock())[:MAX_SNAPSHOT_ROWS]),
    ),
    "calls": Operation({}, lambda c, a: _async(c.pbx.calls())),
    "list_users": Operation({}, lambda c, a: _admin(c).list_users()),
    "add_user": Operation(
        {"username": _text(), "password": _text(), "fields": Argument((dict,), False)},
        lambda c, a: _admin(c).add_user(
            a["username"], a["password"], **_user_fields(a.get("fields", {}))
        ),
    ),
    "update_user": Operation(
        {"username": _text(), "fields": Argument((dict,))},
        lambda c, a: _admin(c).update_user(a["username"], **_user_fields(a["fields"])),
    ),
    "set_password": Operation(
        {"username": _text(), "password": _text()},
        lambda c, a: _admin(c).set_password(a["username"], a["password"]),
    ),
    "delete_user": Operation(
        {"username": _text()}, lambda c, a: _admin(c).delete_user(a["username"])
    ),
    "list_carriers": Operation({}, lambda c, a: _admin(c).list_carriers()),
    "add_carrier": Operation(
        {
            "name": _text(),
            "addresses": Argument((list,)),
            "gateway": Argument((str, type(None)), False),
            "port": Argument((int, type(None)), False),
            "transport": _text(False),
            "username": Argument((str, type(None)), False),
            "password": Argument((str, type(None)), False),
            "priority": _integer(False),
        },
        lambda c, a: _admin(c).add_carrier(
            a["name"],
            [str(address) for address in a["addresses"]],
            **{key: value for key, value in a.items() if key not in ("name", "addresses")},
        ),
    ),
    "delete_carrier": Operation(
        {"name": _text()}, lambda c, a: _admin(c).delete_carrier(a["name"])
    ),
    "list_dids": Operation({}, lambda c, a: _admin(c).list_dids()),
    "add_did": Operation(
        {"number": _text(), "username": _text()},
        lambda c, a: _admin(c).add_did(a["number"], a["username"]),
    ),
    "delete_did": Operation({"number": _text()}, lambda c, a: _admin(c).delete_did(a["number"])),
    "ban": Operation(
        {"ip": _text(), "seconds": _number(False), "reason": _text(False)},
        lambda c, a: _admin(c).ban(a["ip"], a.get("seconds"), a.get("reason") or "banned by admin"),
    ),
    "unban": Operation({"ip": _text()}, lambda c, a: _admin(c).unban(a["ip"])),
    "list_bans": Operation({}, lambda c, a: _admin(c).list_bans()),
    "unregister": Operation(
        {"user": _text(), "contact": _text()},
        lambda c, a: _admin(c).unregister(a["user"], a["contact"]),
    ),
    "list_cdrs": Operation(
        {"limit": _integer(False), "text": Argument((str, type(None)), False)},
        lambda c, a: _admin(c).list_cdrs(
            limit=min(max(1, a.get("limit", 200)), MAX_SNAPSHOT_ROWS), text=a.get("text")
        ),
    ),
    "has_console_password": Operation({}, lambda c, a: _admin(c).has_console_password()),
    "set_console_password": Operation(
        {"password": _text()}, lambda c, a: _admin(c).set_console_password(a["password"])
    ),
    "check_console_password": Operation(
        {"password": _text()}, lambda c, a: _admin(c).check_console_password(a["password"])
    ),
}


def check_arguments(name: str, args: dict[str, Any]) -> Operation:
    """The operation `name`, once `args` fit it; ValueError says what does not."""
    operation = OPERATIONS.get(name)
    if operation is None:
        raise ValueError(f"unknown operation {name[:40]!r}")
    for key, value in args.items():
        argument = operation.arguments.get(key)
        if argument is None:
            raise ValueError(f"{name} takes no argument {key[:40]!r}")
        if isinstance(value, bool) and bool not in argument.types:
            raise ValueError(f"{name}: {key} has the wrong type")
        if not isinstance(value, argument.types):
            raise ValueError(f"{name}: {key} has the wrong type")
    missing = [
        key
        for key, argument in operation.arguments.items()
        if argument.required and key not in args
    ]
    if missing:
        raise ValueError(f"{name} needs {', '.join(missing)}")
    return operation


def result_to_wire(result: object) -> object:
    """A reply's result as JSON values: dataclasses through the codec, lists of them too."""
    if isinstance(result, list):
        return [result_to_wire(item) for item in result]
    if result is None or isinstance(result, (bool, int, float, str)):
        return result
    return to_wire(result)
