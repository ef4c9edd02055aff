"""The writes the SIP hot path queues for the store's writer task.

Each op carries one constant statement, the table it writes and its parameters; the writer
(`core.store.writer`) sends runs of the same statement to SQLite with one executemany. Like the
rows, they import no SQLite, so compiled modules build them freely.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Protocol

from core.store.rows import BanRow, BindingRow, CdrRow, binding_params, cdr_params


@dataclass(slots=True)
class UpsertBinding:
    binding: BindingRow
    TABLE: ClassVar[str] = "location"
    SQL: ClassVar[str] = """
        INSERT INTO location (aor, contact, received, received_port, transport, socket,
                              expires_at, user_agent, call_id, cseq, q, nat, instance, reg_id,
                              registered_at, path, refreshed_at)
        VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
        ON CONFLICT (aor, contact, instance, reg_id) DO UPDATE SET
            received = excluded.received, received_port = excluded.received_port,
            transport = excluded.transport, socket = excluded.socket,
            expires_at = excluded.expires_at, user_agent = excluded.user_agent,
            call_id = excluded.call_id, cseq = excluded.cseq, q = excluded.q,
            nat = excluded.nat, registered_at = excluded.registered_at,
            path = excluded.path, refreshed_at = excluded.refreshed_at
        """

    def params(self) -> tuple[object, ...]:
        return binding_params(self.binding)


@dataclass(slots=True)
class DeleteBinding:
    """Exactly one binding's row: the same Contact URI may be stored once per RFC 5626 flow
    (reg-id), and removing one flow must leave the others. `instance` and `reg_id` are as the
    row stores them ("" and 0 for a phone that sent none)."""

    aor: str
    contact: str
    instance: str
    reg_id: int
    TABLE: ClassVar[str] = "location"
    SQL: ClassVar[str] = (
        "DELETE FROM location WHERE aor = ? AND contact = ? AND instance = ? AND reg_id = ?"
    )

    @classmethod
    def of(cls, row: BindingRow) -> DeleteBinding:
        """The delete of the row `row` was stored as."""
        return cls(row.aor, row.contact, row.instance, row.reg_id)

    def params(self) -> tuple[object, ...]:
        return (self.aor, self.contact, self.instance, self.reg_id)


@dataclass(frozen=True, slots=True)
class DeleteBindingsOf:
    """All contacts of one AOR (REGISTER with `Contact: *`, or the user was deleted)."""

    aor: str
    TABLE: ClassVar[str] = "location"
    SQL: ClassVar[str] = "DELETE FROM location WHERE aor = ?"

    def params(self) -> tuple[object, ...]:
        return (self.aor,)


@dataclass(frozen=True, slots=True)
class DeleteExpiredBindings:
    now: float
    TABLE: ClassVar[str] = "location"
    SQL: ClassVar[str] = "DELETE FROM location WHERE expires_at <= ?"

    def params(self) -> tuple[object, ...]:
        return (self.now,)


@dataclass(slots=True)
class InsertCdr:
    cdr: CdrRow
    TABLE: ClassVar[str] = "cdrs"
    SQL: ClassVar[str] = """
        INSERT INTO cdrs (call_id, caller, callee, source_ip, direction, started_at,
                          answered_at, ended_at, status, reason, duration)
        VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
        """

    def params(self) -> tuple[object, ...]:
        return cdr_params(self.cdr)


@dataclass(frozen=True, slots=True)
class UpsertBan:
    ban: BanRow
    TABLE: ClassVar[str] = "bans"
    SQL: ClassVar[str] = """
        INSERT INTO bans (ip, until, reason, count, created_at) VALUES (?, ?, ?, ?, ?)
        ON CONFLICT (ip) DO UPDATE SET
            until = excluded.until, reason = excluded.reason, count = excluded.count
        """

    def params(self) -> tuple[object, ...]:
        ban = self.ban
        return (ban.ip, ban.until, ban.reason, ban.count, ban.created_at)


@dataclass(frozen=True, slots=True)
class DeleteBan:
    ip: str
    TABLE: ClassVar[str] = "bans"
    SQL: ClassVar[str] = "DELETE FROM bans WHERE ip = ?"

    def params(self) -> tuple[object, ...]:
        return (self.ip,)


@dataclass(frozen=True, slots=True)
class DeleteExpiredBans:
    now: float
    TABLE: ClassVar[str] = "bans"
    SQL: ClassVar[str] = "DELETE FROM bans WHERE until IS NOT NULL AND until <= ?"

    def params(self) -> tuple[object, ...]:
        return (self.now,)


WriteOp = (
    UpsertBinding
    | DeleteBinding
    | DeleteBindingsOf
    | DeleteExpiredBindings
    | InsertCdr
    | UpsertBan
    | DeleteBan
    | DeleteExpiredBans
)


class WriteQueue(Protocol):
    """Where the hot path queues its writes (the store's batching writer): never waits,
    False when the op was dropped."""

    def submit(self, op: WriteOp) -> bool: ...
