"""Every SQL statement the store's direct methods run, table by table.

For the CLI, the console forms and start-up loading: each write is its own short transaction
(the SIP hot path queues its writes instead, see `core.store.writer`). Every statement is a
constant string with `?` parameters; nothing is built from input.
"""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator, Callable, Iterable, Sequence

from core.store.connection import Connection
from core.store.errors import DuplicateError, NotFoundError
from core.store.ops import DeleteBan, InsertCdr, UpsertBan, UpsertBinding
from core.store.rows import (
    BanRow,
    BindingRow,
    CarrierRow,
    CdrRow,
    DidRow,
    binding_from_row,
    binding_params,
    carrier_from_row,
    carrier_params,
    cdr_params,
    user_from_row,
    user_params,
)
from core.users import User

# The SELECT of each table's rows, in the column order of its dataclass (core.store.rows);
# each query adds its constant WHERE / ORDER BY.
_SELECT_USERS = """
    SELECT username, realm, ha1_md5, ha1_sha256, display_name, enabled, outbound_policy,
           allow_prefixes, deny_prefixes, max_concurrent_calls, max_calls_per_hour, caller_id,
           created_at, tls_only
    FROM users"""
_SELECT_CARRIERS = """
    SELECT name, addresses, port, transport, gateway, username, password, priority, enabled
    FROM carriers"""
_SELECT_BANS = "SELECT ip, until, reason, count, created_at FROM bans"
_SELECT_CDRS = """
    SELECT call_id, caller, callee, source_ip, direction, started_at, answered_at, ended_at,
           status, reason, duration, id
    FROM cdrs"""
_SELECT_CDRS_BY_ID = _SELECT_CDRS + " WHERE id > ? ORDER BY id LIMIT ?"
_USER_ROWS_AT_ONCE = 256


class Queries(Connection):
    """The per-table methods of `core.store.database.Store`."""

    # -- users

    async def add_user(self, user: User) -> None:
        """Insert a user; `DuplicateError` if the name is taken."""
        await self.bulk_add_users([user])

    async def bulk_add_users(self, users: Sequence[User]) -> None:
        """Insert many users in one transaction: all of them, or none and `DuplicateError`."""
        async with self._transaction() as db:
            taken = {row[0] for row in await db.execute_fetchall("SELECT username FROM users")}
            seen: set[str] = set()
            for user in users:
                if user.username in taken or user.username in seen:
                    raise DuplicateError(f"user {user.username!r} already exists")
                seen.add(user.username)
            await db.executemany(
                """
                INSERT INTO users (username, realm, ha1_md5, ha1_sha256, display_name, enabled,
                                   outbound_policy, allow_prefixes, deny_prefixes,
                                   max_concurrent_calls, max_calls_per_hour, caller_id,
                                   created_at, tls_only)
                VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
                """,
                [user_params(user) for user in users],
            )

    async def update_user(self, user: User) -> None:
        """Replace every column of an existing user; `NotFoundError` if there is none."""
        changed = await self._rows_changed(
            """
            UPDATE users SET realm = ?, ha1_md5 = ?, ha1_sha256 = ?, display_name = ?,
                             enabled = ?, outbound_policy = ?, allow_prefixes = ?,
                             deny_prefixes = ?, max_concurrent_calls = ?,
                             max_calls_per_hour = ?, caller_id = ?, created_at = ?,
                             tls_only = ?
            WHERE username = ?
            """,
            (*user_params(user)[1:], user.username),
        )
        if changed == 0:
            raise NotFoundError(f"no user {user.username!r}")

    async def delete_user(self, username: str) -> bool:
        """Delete a user and its DIDs (they would point nowhere). False if there was none."""
        return await self._rows_changed("DELETE FROM users WHERE username = ?", (username,)) > 0

    async def get_user(self, username: str) -> User | None:
        row = await self._first_row(_SELECT_USERS + " WHERE username = ?", (username,))
        return user_from_row(row) if row else None

    async def list_users(self) -> list[User]:
        """Every user, read _USER_ROWS_AT_ONCE rows at a time.

        Every user at start and after another process's change: fetching all rows at once
        held each row's tuple and texts beside its `User` until the last one was built, and
        that memory stayed scattered among the users' for the life of the process (about
        400 bytes a user). The transaction lock keeps the writer out while the one SELECT
        runs, so no BEGIN lands between two chunks on the shared connection."""
        users: list[User] = []
        async with (
            self._transaction_lock,
            self._db.execute(_SELECT_USERS + " ORDER BY username") as cursor,
        ):
            while rows := await cursor.fetchmany(_USER_ROWS_AT_ONCE):
                users.extend([user_from_row(row) for row in rows])
        return users

    async def list_usernames(self) -> set[str]:
        rows = await self._db.execute_fetchall("SELECT username FROM users")
        return {row[0] for row in rows}

    # -- carriers

    async def add_carrier(self, carrier: CarrierRow) -> None:
        """Insert a carrier; `DuplicateError` if the name is taken."""
        try:
            async with self._transaction() as db:
                await db.execute(
                    """
                    INSERT INTO carriers (name, addresses, port, transport, gateway, username,
                                          password, priority, enabled)
                    VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)
                    """,
                    carrier_params(carrier),
                )
        except sqlite3.IntegrityError as exc:
            raise DuplicateError(f"carrier {carrier.name!r} already exists") from exc

    async def update_carrier(self, carrier: CarrierRow) -> None:
        changed = await self._rows_changed(
            """
            UPDATE carriers SET addresses = ?, port = ?, transport = ?, gateway = ?,
                                username = ?, password = ?, priority = ?, enabled = ?
            WHERE name = ?
            """,
            (*carrier_params(carrier)[1:], carrier.name),
        )
        if changed == 0:
            raise NotFoundError(f"no carrier {carrier.name!r}")

    async def delete_carrier(self, name: str) -> bool:
        return await self._rows_changed("DELETE FROM carriers WHERE name = ?", (name,)) > 0

    async def get_carrier(self, name: str) -> CarrierRow | None:
        row = await self._first_row(_SELECT_CARRIERS + " WHERE name = ?", (name,))
        return carrier_from_row(row) if row else None

    async def list_carriers(self) -> list[CarrierRow]:
        """Carriers in the order outbound routing should try them."""
        rows = await self._db.execute_fetchall(_SELECT_CARRIERS + " ORDER BY priority, name")
        return [carrier_from_row(row) for row in rows]

    # -- DIDs

    async def add_did(self, number: str, username: str) -> None:
        """Map an inbound number to a user. `NotFoundError` for an unknown user,
        `DuplicateError` when the number is already mapped."""
        async with self._transaction() as db:
            users = await db.execute_fetchall("SELECT 1 FROM users WHERE username = ?", (username,))
            if not users:
                raise NotFoundError(f"no user {username!r}")
            existing = await db.execute_fetchall(
                "SELECT username FROM dids WHERE number = ?", (number,)
            )
            for (owner,) in existing:
                raise DuplicateError(f"DID {number} is already routed to {owner!r}")
            await db.execute(
                "INSERT INTO dids (number, username) VALUES (?, ?)", (number, username)
            )

    async def delete_did(self, number: str) -> bool:
        return await self._rows_changed("DELETE FROM dids WHERE number = ?", (number,)) > 0

    async def list_dids(self) -> list[DidRow]:
        rows = await self._db.execute_fetchall("SELECT number, username FROM dids ORDER BY number")
        return [DidRow(number=row[0], username=row[1]) for row in rows]

    # -- bans

    async def upsert_ban(self, ban: BanRow) -> None:
        async with self._transaction() as db:
            op = UpsertBan(ban)
            await db.execute(op.SQL, op.params())

    async def delete_ban(self, ip: str) -> bool:
        return await self._rows_changed(DeleteBan.SQL, (ip,)) > 0

    async def get_ban(self, ip: str) -> BanRow | None:
        row = await self._first_row(_SELECT_BANS + " WHERE ip = ?", (ip,))
        return BanRow(*row) if row else None

    async def list_bans(self, active_at: float | None = None) -> list[BanRow]:
        """Every ban, or only those still in force at `active_at`."""
        if active_at is None:
            rows = await self._db.execute_fetchall(_SELECT_BANS + " ORDER BY created_at, ip")
        else:
            rows = await self._db.execute_fetchall(
                _SELECT_BANS + " WHERE until IS NULL OR until > ? ORDER BY created_at, ip",
                (active_at,),
            )
        return [BanRow(*row) for row in rows]

    # -- CDRs

    async def insert_cdr(self, cdr: CdrRow) -> int:
        """Store one CDR now and return its id (the hot path uses `submit(InsertCdr(...))`)."""
        async with self._transaction() as db:
            cursor = await db.execute(InsertCdr.SQL, cdr_params(cdr))
            return int(cursor.lastrowid or 0)

    async def list_cdrs(self, limit: int = 100, offset: int = 0) -> list[CdrRow]:
        """Newest first."""
        rows = await self._db.execute_fetchall(
            _SELECT_CDRS + " ORDER BY id DESC LIMIT ? OFFSET ?",
            (limit, offset),
        )
        return [CdrRow(*row) for row in rows]

    async def count_cdrs(self) -> int:
        return await self._scalar_int("SELECT count(*) FROM cdrs")

    async def export_cdrs(self, chunk_size: int = 1_000) -> AsyncIterator[CdrRow]:
        """Every CDR, oldest first, read in chunks so an export never loads the whole table."""
        async for cdr in self._cdrs_by_id(_SELECT_CDRS_BY_ID, (), chunk_size):
            yield cdr

    # -- admin

    async def get_admin_hash(self) -> str | None:
        row = await self._first_row("SELECT bcrypt_hash FROM admin WHERE id = 1")
        return str(row[0]) if row else None

    async def set_admin_hash(self, bcrypt_hash: str) -> None:
        async with self._transaction() as db:
            await db.execute(
                """
                INSERT INTO admin (id, bcrypt_hash) VALUES (1, ?)
                ON CONFLICT (id) DO UPDATE SET bcrypt_hash = excluded.bcrypt_hash
                """,
                (bcrypt_hash,),
            )

    # -- settings

    async def get_setting(self, key: str) -> str | None:
        row = await self._first_row("SELECT value FROM settings WHERE key = ?", (key,))
        return str(row[0]) if row else None

    async def set_setting(self, key: str, value: str) -> None:
        async with self._transaction() as db:
            await db.execute(
                """
                INSERT INTO settings (key, value) VALUES (?, ?)
                ON CONFLICT (key) DO UPDATE SET value = excluded.value
                """,
                (key, value),
            )

    async def get_or_create_setting(self, key: str, make_value: Callable[[], str]) -> str:
        """The stored value, or `make_value()` stored first (e.g. the per-install nonce
        secret). Atomic across processes: two first starts agree on one value."""
        async with self._transaction() as db:
            await db.execute(
                "INSERT INTO settings (key, value) VALUES (?, ?) ON CONFLICT (key) DO NOTHING",
                (key, make_value()),
            )
            rows = await db.execute_fetchall("SELECT value FROM settings WHERE key = ?", (key,))
        return str(next(iter(rows))[0])

    # -- location

    async def load_bindings(self, now: float | None = None) -> list[BindingRow]:
        """Every stored binding, or only the unexpired ones when `now` is given."""
        rows = await self._db.execute_fetchall(
            """
            SELECT aor, contact, expires_at, received, received_port, transport, socket,
                   user_agent, call_id, cseq, q, nat, instance, reg_id, registered_at, path,
                   refreshed_at
            FROM location WHERE expires_at > ? ORDER BY aor, id
            """,
            (float("-inf") if now is None else now,),
        )
        return [binding_from_row(row) for row in rows]

    async def replace_bindings(self, bindings: Iterable[BindingRow]) -> None:
        """Make the location table exactly `bindings` (a snapshot of the registrar)."""
        async with self._transaction() as db:
            await db.execute("DELETE FROM location")
            await db.executemany(UpsertBinding.SQL, [binding_params(b) for b in bindings])
