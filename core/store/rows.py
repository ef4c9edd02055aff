"""The store's rows: what the SIP hot path, the console and the CLI read and write.

Plain dataclasses and their mapping to and from SQLite rows, with no SQLite in sight: the
compiled hot-path modules (registrar, trunks, accounting) import them without importing
aiosqlite. A column order here matches the SELECTs in `core.store.queries`.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from core.users import User


@dataclass(frozen=True, slots=True)
class CarrierRow:
    """A SIP trunk: calls from `addresses` are trusted as inbound from this carrier; outbound
    calls go to `gateway`, answering its digest challenges with `username`/`password`.
    Lower `priority` is tried first (as in DNS SRV)."""

    name: str
    addresses: tuple[str, ...]
    port: int = 5060
    transport: str = "udp"
    gateway: str | None = None
    username: str | None = None
    password: str | None = None
    priority: int = 10
    enabled: bool = True

    def __repr__(self) -> str:
        # The carrier password is a live credential: never in logs or tracebacks.
        return (
            f"CarrierRow(name={self.name!r}, addresses={self.addresses!r}, "
            f"gateway={self.gateway!r}, priority={self.priority})"
        )


@dataclass(frozen=True, slots=True)
class DidRow:
    """An inbound number, in the canonical form of `core.trunks.dialplan.Dialplan.did_number`,
    and the user it rings."""

    number: str
    username: str


@dataclass(frozen=True, slots=True)
class BanRow:
    """A banned source address; `until` None means until someone removes it."""

    ip: str
    until: float | None
    reason: str = ""
    count: int = 1
    created_at: float = 0.0

    def active(self, now: float) -> bool:
        return self.until is None or self.until > now


# CdrRow, BindingRow and their write ops are built on the SIP path (a row per call, per
# REGISTER refresh): not frozen, because a frozen dataclass's __init__ sets every field
# through object.__setattr__ (BindingRow has 17). Once submitted, a row is never changed.
@dataclass(slots=True)
class CdrRow:
    """One call attempt. `status` is the final SIP status (200 when answered); `duration` is
    answered-to-ended seconds, 0 when never answered. `id` is None until stored.

    The accounting fields (core/accounting): how it ended (`disposition`, `hangup_side`),
    the route (`carrier`, `gateway`, the number as `dialled` and in canonical form as
    `number`, the `contact` that answered a forked call) and the price (`rate_prefix`,
    `rate_per_minute` and `cost` in micro-units, `rate_increments` as "60/60",
    `billable_seconds`, `currency`)."""

    call_id: str
    caller: str
    callee: str
    source_ip: str
    direction: str  # "inbound", "outbound" or "internal"
    started_at: float
    answered_at: float | None = None
    ended_at: float | None = None
    status: int = 0
    reason: str = ""
    duration: float = 0.0
    id: int | None = None
    disposition: str = ""
    hangup_side: str = ""
    carrier: str = ""
    gateway: str = ""
    dialled: str = ""
    number: str = ""
    contact: str = ""
    rate_prefix: str = ""
    rate_per_minute: int = 0
    rate_increments: str = ""
    billable_seconds: int = 0
    cost: int = 0
    currency: str = ""


@dataclass(slots=True)
class BindingRow:
    """One registered contact of an address-of-record (RFC 3261 §10), with where it really
    came from (`received`, for NAT) and its RFC 5626 instance / reg-id when the phone sent them
    ("" and 0 when it did not). `socket` names the local listener it arrived on, so requests go
    back out the same way; `path` is the Path it registered through (RFC 3327), so they go
    back through the same edge proxy. (aor, contact, instance, reg_id) identifies the row.
    Times are wall-clock: `registered_at` the first registration, `refreshed_at` the last."""

    aor: str
    contact: str
    expires_at: float
    received: str = ""
    received_port: int = 0
    transport: str = "udp"
    socket: str = ""
    user_agent: str = ""
    call_id: str = ""
    cseq: int = 0
    q: float | None = None
    nat: bool = False
    instance: str = ""
    reg_id: int = 0
    registered_at: float = 0.0
    path: tuple[str, ...] = ()
    refreshed_at: float = 0.0


def user_params(user: User) -> tuple[object, ...]:
    return (
        user.username,
        user.realm,
        user.ha1_md5,
        user.ha1_sha256,
        user.display_name,
        int(user.enabled),
        user.outbound_policy,
        json.dumps(list(user.allow_prefixes)),
        json.dumps(list(user.deny_prefixes)),
        user.max_concurrent_calls,
        user.max_calls_per_hour,
        user.caller_id,
        user.created_at,
        int(user.tls_only),
    )


def user_from_row(row: Sequence[Any]) -> User:
    # Column order of the SELECTs matches the dataclass field order. The realm and the
    # outbound policy are one of a few values: SQLite hands out a new string per row, so they
    # are interned (about 110 bytes a user, in every process that holds the directory).
    return User(  # type: ignore[call-arg]  # mypy cannot count a star-unpacked row
        row[0],
        sys.intern(row[1]),
        *row[2:5],
        bool(row[5]),
        sys.intern(row[6]),
        json_strings(row[7]),
        json_strings(row[8]),
        *row[9:13],
        bool(row[13]),
    )


def carrier_params(carrier: CarrierRow) -> tuple[object, ...]:
    return (
        carrier.name,
        json.dumps(list(carrier.addresses)),
        carrier.port,
        carrier.transport,
        carrier.gateway,
        carrier.username,
        carrier.password,
        carrier.priority,
        int(carrier.enabled),
    )


def carrier_from_row(row: Sequence[Any]) -> CarrierRow:
    # mypy cannot count a star-unpacked row
    return CarrierRow(row[0], json_strings(row[1]), *row[2:8], bool(row[8]))  # type: ignore[call-arg]


def cdr_params(cdr: CdrRow) -> tuple[object, ...]:
    return (
        cdr.call_id,
        cdr.caller,
        cdr.callee,
        cdr.source_ip,
        cdr.direction,
        cdr.started_at,
        cdr.answered_at,
        cdr.ended_at,
        cdr.status,
        cdr.reason,
        cdr.duration,
        cdr.disposition,
        cdr.hangup_side,
        cdr.carrier,
        cdr.gateway,
        cdr.dialled,
        cdr.number,
        cdr.contact,
        cdr.rate_prefix,
        cdr.rate_per_minute,
        cdr.rate_increments,
        cdr.billable_seconds,
        cdr.cost,
        cdr.currency,
    )


def binding_params(binding: BindingRow) -> tuple[object, ...]:
    return (
        binding.aor,
        binding.contact,
        binding.received,
        binding.received_port,
        binding.transport,
        binding.socket,
        binding.expires_at,
        binding.user_agent,
        binding.call_id,
        binding.cseq,
        binding.q,
        int(binding.nat),
        binding.instance,
        binding.reg_id,
        binding.registered_at,
        json.dumps(list(binding.path)),
        binding.refreshed_at,
    )


def binding_from_row(row: Sequence[Any]) -> BindingRow:
    # Column order of the SELECT matches the dataclass field order.
    # mypy cannot count a star-unpacked row
    return BindingRow(*row[:11], bool(row[11]), *row[12:15], json_strings(row[15]), row[16])  # type: ignore[call-arg]


def json_strings(value: object) -> tuple[str, ...]:
    decoded = json.loads(str(value)) if value else []
    return tuple(str(item) for item in decoded)
