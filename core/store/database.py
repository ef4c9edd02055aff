"""The database: schema, migrations and every SQL statement pbxtui runs.

One SQLite file in WAL mode, so the CLI can write while the server reads. Two ways in:

* `await store.add_user(...)`-style methods, for the CLI, the console forms and start-up
  loading. Each write is its own short transaction.
* `store.submit(op)`, for the SIP hot path, which must never wait on disk. Ops go into a
  bounded queue that one writer task (`start_writer`) commits in batches about every 100 ms;
  a commit per row costs 300-800 µs, a batched row ~10 µs. When the queue is full the op is
  dropped and counted, never awaited.

Changes made by another process are noticed by polling `PRAGMA data_version`
(`watch_changes`), which only moves when *another* connection commits.

Every statement below is a constant string with `?` parameters; nothing is built from input.
The schema version lives in `PRAGMA user_version`; `MIGRATIONS[n]` upgrades version n to n+1,
so opening an older file upgrades it in place, one transaction per step.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import sqlite3
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import aiosqlite

from core.users import User

logger = logging.getLogger(__name__)

DEFAULT_WRITE_QUEUE_SIZE = 10_000
DEFAULT_BATCH_INTERVAL = 0.1  # seconds between writer commits


class StoreError(Exception):
    """A database operation could not be done; the message is fit for an operator."""


class DuplicateError(StoreError):
    """A row with the same key already exists."""


class NotFoundError(StoreError):
    """The row to change or reference does not exist."""


# --- schema -------------------------------------------------------------------------------
# Each migration is a tuple of constant statements ending with its own version stamp.
# Never edit a released migration: append a new one.

_MIGRATION_1 = (
    """
    CREATE TABLE users (
        username             TEXT PRIMARY KEY NOT NULL,
        realm                TEXT NOT NULL,
        ha1_md5              TEXT NOT NULL,
        ha1_sha256           TEXT NOT NULL,
        display_name         TEXT NOT NULL DEFAULT '',
        enabled              INTEGER NOT NULL DEFAULT 1 CHECK (enabled IN (0, 1)),
        outbound_policy      TEXT NOT NULL DEFAULT 'none'
                             CHECK (outbound_policy IN ('none', 'local', 'national',
                                                        'international')),
        allow_prefixes       TEXT NOT NULL DEFAULT '[]',
        deny_prefixes        TEXT NOT NULL DEFAULT '[]',
        max_concurrent_calls INTEGER NOT NULL DEFAULT 0 CHECK (max_concurrent_calls >= 0),
        max_calls_per_hour   INTEGER NOT NULL DEFAULT 0 CHECK (max_calls_per_hour >= 0),
        caller_id            TEXT NOT NULL DEFAULT '',
        created_at           REAL NOT NULL
    )
    """,
    """
    CREATE TABLE carriers (
        name      TEXT PRIMARY KEY NOT NULL,
        addresses TEXT NOT NULL DEFAULT '[]',
        port      INTEGER NOT NULL DEFAULT 5060 CHECK (port BETWEEN 1 AND 65535),
        transport TEXT NOT NULL DEFAULT 'udp' CHECK (transport IN ('udp', 'tcp', 'tls')),
        gateway   TEXT,
        username  TEXT,
        password  TEXT,
        priority  INTEGER NOT NULL DEFAULT 10,
        enabled   INTEGER NOT NULL DEFAULT 1 CHECK (enabled IN (0, 1))
    )
    """,
    """
    CREATE TABLE dids (
        number   TEXT PRIMARY KEY NOT NULL,
        username TEXT NOT NULL REFERENCES users (username)
                 ON DELETE CASCADE ON UPDATE CASCADE
    )
    """,
    "CREATE INDEX dids_by_username ON dids (username)",
    """
    CREATE TABLE location (
        id            INTEGER PRIMARY KEY,
        aor           TEXT NOT NULL,
        contact       TEXT NOT NULL,
        received      TEXT NOT NULL DEFAULT '',
        received_port INTEGER NOT NULL DEFAULT 0,
        transport     TEXT NOT NULL DEFAULT 'udp',
        socket        TEXT NOT NULL DEFAULT '',
        expires_at    REAL NOT NULL,
        user_agent    TEXT NOT NULL DEFAULT '',
        call_id       TEXT NOT NULL DEFAULT '',
        cseq          INTEGER NOT NULL DEFAULT 0,
        q             REAL,
        nat           INTEGER NOT NULL DEFAULT 0 CHECK (nat IN (0, 1)),
        instance      TEXT NOT NULL DEFAULT '',
        reg_id        INTEGER NOT NULL DEFAULT 0,
        registered_at REAL NOT NULL,
        UNIQUE (aor, contact)
    )
    """,
    "CREATE INDEX location_by_expiry ON location (expires_at)",
    """
    CREATE TABLE bans (
        ip         TEXT PRIMARY KEY NOT NULL,
        until      REAL,
        reason     TEXT NOT NULL DEFAULT '',
        count      INTEGER NOT NULL DEFAULT 1,
        created_at REAL NOT NULL
    )
    """,
    """
    CREATE TABLE cdrs (
        id          INTEGER PRIMARY KEY AUTOINCREMENT,
        call_id     TEXT NOT NULL,
        caller      TEXT NOT NULL DEFAULT '',
        callee      TEXT NOT NULL DEFAULT '',
        source_ip   TEXT NOT NULL DEFAULT '',
        direction   TEXT NOT NULL DEFAULT '',
        started_at  REAL NOT NULL,
        answered_at REAL,
        ended_at    REAL,
        status      INTEGER NOT NULL DEFAULT 0,
        reason      TEXT NOT NULL DEFAULT '',
        duration    REAL NOT NULL DEFAULT 0
    )
    """,
    "CREATE INDEX cdrs_by_start ON cdrs (started_at)",
    """
    CREATE TABLE admin (
        id          INTEGER PRIMARY KEY CHECK (id = 1),
        bcrypt_hash TEXT NOT NULL
    )
    """,
    """
    CREATE TABLE settings (
        key   TEXT PRIMARY KEY NOT NULL,
        value TEXT NOT NULL
    )
    """,
    "PRAGMA user_version = 1",
)

# Version 2: the location table learns each binding's Path (RFC 3327 §5.3: without it a
# contact registered through an edge proxy would be reached directly after a restart) and its
# last refresh time, and a row is one (aor, contact, instance, reg-id): RFC 5626 §4.2 lets one
# phone register the same Contact URI over two flows (reg-ids), which must not overwrite each
# other. SQLite cannot change a UNIQUE constraint in place, so the table is rebuilt (the
# "make other kinds of table schema changes" procedure of https://sqlite.org/lang_altertable.html;
# no other table or trigger refers to location). Migrated rows take their registration time as
# the refresh time, as the loader did while the column was missing.
_MIGRATION_2 = (
    """
    CREATE TABLE location_new (
        id            INTEGER PRIMARY KEY,
        aor           TEXT NOT NULL,
        contact       TEXT NOT NULL,
        received      TEXT NOT NULL DEFAULT '',
        received_port INTEGER NOT NULL DEFAULT 0,
        transport     TEXT NOT NULL DEFAULT 'udp',
        socket        TEXT NOT NULL DEFAULT '',
        expires_at    REAL NOT NULL,
        user_agent    TEXT NOT NULL DEFAULT '',
        call_id       TEXT NOT NULL DEFAULT '',
        cseq          INTEGER NOT NULL DEFAULT 0,
        q             REAL,
        nat           INTEGER NOT NULL DEFAULT 0 CHECK (nat IN (0, 1)),
        instance      TEXT NOT NULL DEFAULT '',
        reg_id        INTEGER NOT NULL DEFAULT 0,
        registered_at REAL NOT NULL,
        path          TEXT NOT NULL DEFAULT '[]',
        refreshed_at  REAL NOT NULL DEFAULT 0,
        UNIQUE (aor, contact, instance, reg_id)
    )
    """,
    """
    INSERT INTO location_new (id, aor, contact, received, received_port, transport, socket,
                              expires_at, user_agent, call_id, cseq, q, nat, instance, reg_id,
                              registered_at, path, refreshed_at)
    SELECT id, aor, contact, received, received_port, transport, socket, expires_at,
           user_agent, call_id, cseq, q, nat, instance, reg_id, registered_at, '[]',
           registered_at
    FROM location
    """,
    "DROP TABLE location",
    "ALTER TABLE location_new RENAME TO location",
    "CREATE INDEX location_by_expiry ON location (expires_at)",
    "PRAGMA user_version = 2",
)

MIGRATIONS: tuple[tuple[str, ...], ...] = (_MIGRATION_1, _MIGRATION_2)
SCHEMA_VERSION = len(MIGRATIONS)


# --- rows ---------------------------------------------------------------------------------


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
    """An inbound number (canonical form, see `core.users.normalise_number`) and its user."""

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
    answered-to-ended seconds, 0 when never answered. `id` is None until stored."""

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


# --- write ops for the writer task --------------------------------------------------------
# Each op carries one constant statement, the table it writes and its parameters; the writer
# sends runs of the same statement to SQLite with one executemany.


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
        return _binding_params(self.binding)


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
        return _cdr_params(self.cdr)


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


@dataclass(frozen=True, slots=True)
class WriterStats:
    """Counters for the console's health view."""

    pending: int
    committed: int
    dropped: int  # queue was full (or the store closing): the op never reached the disk
    failed: int  # SQLite refused it; logged


# --- the store ----------------------------------------------------------------------------


class Store:
    """The pbxtui database. Create with `await Store.open(path)`; end with `await close()`."""

    def __init__(
        self,
        db: aiosqlite.Connection,
        path: str,
        write_queue_size: int,
        batch_interval: float,
    ) -> None:
        self._db = db
        self.path = path
        self._batch_interval = batch_interval
        # One transaction at a time on the shared connection: the writer task and the
        # direct methods would otherwise interleave BEGINs.
        self._transaction_lock = asyncio.Lock()
        self._write_queue: asyncio.Queue[WriteOp] = asyncio.Queue(maxsize=write_queue_size)
        self._writer_wake = asyncio.Event()
        self._writer_task: asyncio.Task[None] | None = None
        self._watch_tasks: set[asyncio.Task[None]] = set()
        self._closing = False
        self._closed = False
        self._committed_writes = 0
        self._dropped_writes = 0
        self._failed_writes = 0
        self._data_version_seen = 0
        self.schema_version = 0

    # -- lifecycle

    @classmethod
    async def open(
        cls,
        path: str | os.PathLike[str],
        *,
        write_queue_size: int = DEFAULT_WRITE_QUEUE_SIZE,
        batch_interval: float = DEFAULT_BATCH_INTERVAL,
    ) -> Store:
        """Open (creating if needed, mode 0600, parent directory 0700) and migrate the file.

        Raises `StoreError` when the file is not a usable pbxtui database.
        """
        location = os.fspath(path)
        if location != ":memory:":
            _create_private_file(Path(location).expanduser())
            location = os.fspath(Path(location).expanduser())
        try:
            db = await aiosqlite.connect(location, isolation_level=None)
        except sqlite3.Error as exc:
            raise StoreError(f"cannot open database {location}: {exc}") from exc
        store = cls(db, location, write_queue_size, batch_interval)
        try:
            await store._configure()
            await store._migrate()
            store._data_version_seen = await store.data_version()
        except BaseException:
            await db.close()
            raise
        return store

    async def _configure(self) -> None:
        try:
            async with self._db.execute("PRAGMA journal_mode = WAL") as cursor:
                row = await cursor.fetchone()
        except sqlite3.DatabaseError as exc:
            raise StoreError(f"{self.path} is not a usable database: {exc}") from exc
        if self.path != ":memory:" and (row is None or str(row[0]).lower() != "wal"):
            logger.warning("%s: WAL journal mode unavailable, got %r", self.path, row)
        # NORMAL is durable in WAL mode except for the last commits on power loss.
        await self._db.execute("PRAGMA synchronous = NORMAL")
        await self._db.execute("PRAGMA foreign_keys = ON")
        # The CLI and the server share the file: wait up to 5 s for the other's commit.
        await self._db.execute("PRAGMA busy_timeout = 5000")

    async def _migrate(self) -> None:
        version = await self._pragma_int("PRAGMA user_version")
        if version > SCHEMA_VERSION:
            raise StoreError(
                f"{self.path} has schema version {version}, newer than this pbxtui "
                f"understands ({SCHEMA_VERSION}); upgrade pbxtui"
            )
        for step in range(version, SCHEMA_VERSION):
            try:
                async with self._transaction() as db:
                    for statement in MIGRATIONS[step]:
                        await db.execute(statement)
            except sqlite3.Error as exc:
                raise StoreError(
                    f"{self.path}: upgrading the schema to version {step + 1} failed, "
                    f"nothing was changed: {exc}"
                ) from exc
            logger.info("%s: schema upgraded to version %d", self.path, step + 1)
        self.schema_version = await self._pragma_int("PRAGMA user_version")

    async def close(self) -> None:
        """Stop the watchers, commit what the writer still holds, and close the file.
        Calling it again does nothing."""
        if self._closed:
            return
        self._closed = True
        for task in list(self._watch_tasks):
            task.cancel()
        for task in list(self._watch_tasks):
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self.flush()
        self._closing = True
        if self._writer_task is not None:
            self._writer_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._writer_task
            self._writer_task = None
        await self._db.close()

    async def __aenter__(self) -> Store:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    @contextlib.asynccontextmanager
    async def _transaction(self) -> AsyncIterator[aiosqlite.Connection]:
        # IMMEDIATE takes the write lock up front, so a concurrent CLI write makes us wait
        # (busy_timeout) instead of failing half-way through.
        async with self._transaction_lock:
            await self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
                await self._db.execute("COMMIT")
            except BaseException:
                if self._db.in_transaction:
                    await self._db.execute("ROLLBACK")
                raise

    async def _pragma_int(self, statement: str) -> int:
        async with self._db.execute(statement) as cursor:
            row = await cursor.fetchone()
        return int(row[0]) if row else 0

    async def journal_mode(self) -> str:
        async with self._db.execute("PRAGMA journal_mode") as cursor:
            row = await cursor.fetchone()
        return str(row[0]) if row else ""

    # -- change watch

    async def data_version(self) -> int:
        """SQLite's counter of commits made by *other* connections to this file."""
        return await self._pragma_int("PRAGMA data_version")

    async def changed_elsewhere(self) -> bool:
        """True once for each time another connection committed since the last check."""
        current = await self.data_version()
        changed = current != self._data_version_seen
        self._data_version_seen = current
        return changed

    def watch_changes(
        self, callback: Callable[[], Awaitable[None]], interval: float = 1.0
    ) -> asyncio.Task[None]:
        """Start a task that awaits `callback()` after another process changed the database.

        The baseline is taken when the store opened, so a change made between opening and
        calling this (e.g. while the server loaded its tables) still triggers one callback.
        Cancelled by `close()`.
        """
        task = asyncio.create_task(self._watch(callback, interval), name="store-watch-changes")
        self._watch_tasks.add(task)
        task.add_done_callback(self._watch_tasks.discard)
        return task

    async def _watch(self, callback: Callable[[], Awaitable[None]], interval: float) -> None:
        while True:
            try:
                changed = await self.changed_elsewhere()
            except sqlite3.Error:
                logger.exception("%s: reading data_version failed", self.path)
                changed = False
            if changed:
                try:
                    await callback()
                except Exception:
                    logger.exception("%s: change callback failed", self.path)
            await asyncio.sleep(interval)

    # -- writer task

    def start_writer(self) -> asyncio.Task[None]:
        """Start the task that commits submitted ops in batches; idempotent."""
        if self._writer_task is None or self._writer_task.done():
            self._writer_task = asyncio.create_task(self._write_loop(), name="store-writer")
        return self._writer_task

    def submit(self, op: WriteOp) -> bool:
        """Queue a write without waiting. False (and counted) when the queue is full."""
        if self._closing:
            self._dropped_writes += 1
            return False
        try:
            self._write_queue.put_nowait(op)
        except asyncio.QueueFull:
            self._dropped_writes += 1
            return False
        return True

    async def flush(self) -> None:
        """Wait until every op submitted so far is committed (or failed and counted)."""
        if self._writer_task is None or self._writer_task.done():
            batch = self._drain_queue()
            if batch:
                try:
                    await self._apply_writes(batch)
                finally:
                    for _ in batch:
                        self._write_queue.task_done()
            return
        self._writer_wake.set()
        await self._write_queue.join()

    @property
    def writer_stats(self) -> WriterStats:
        return WriterStats(
            pending=self._write_queue.qsize(),
            committed=self._committed_writes,
            dropped=self._dropped_writes,
            failed=self._failed_writes,
        )

    def _drain_queue(self) -> list[WriteOp]:
        batch: list[WriteOp] = []
        while True:
            try:
                batch.append(self._write_queue.get_nowait())
            except asyncio.QueueEmpty:
                return batch

    async def _write_loop(self) -> None:
        while True:
            first = await self._write_queue.get()
            self._writer_wake.clear()
            batch = [first, *self._drain_queue()]
            try:
                await self._apply_writes(batch)
            except Exception:
                # Not an SQLite refusal (those are counted inside): a bug. Keep writing.
                logger.exception("%s: writer failed on a batch of %d", self.path, len(batch))
                self._failed_writes += len(batch)
            finally:
                for _ in batch:
                    self._write_queue.task_done()
            # Let ops accumulate for one interval: one commit per interval at most, while
            # the first op after a quiet spell is still written at once. flush() cuts it short.
            # asyncio.timeout, not wait_for: 3.11's wait_for can swallow a cancel that races
            # with the wake-up, and close() would then wait forever.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._batch_interval):
                    await self._writer_wake.wait()

    async def _apply_writes(self, batch: Sequence[WriteOp]) -> None:
        try:
            async with self._transaction() as db:
                failed = 0
                for statement, rows in _group_by_statement(batch):
                    failed += await _execute_group(db, statement, rows)
        except sqlite3.Error:
            logger.exception("%s: writer lost a batch of %d writes", self.path, len(batch))
            self._failed_writes += len(batch)
            return
        self._failed_writes += failed
        self._committed_writes += len(batch) - failed

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
                                   created_at)
                VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
                """,
                [_user_params(user) for user in users],
            )

    async def update_user(self, user: User) -> None:
        """Replace every column of an existing user; `NotFoundError` if there is none."""
        async with self._transaction() as db:
            cursor = await db.execute(
                """
                UPDATE users SET realm = ?, ha1_md5 = ?, ha1_sha256 = ?, display_name = ?,
                                 enabled = ?, outbound_policy = ?, allow_prefixes = ?,
                                 deny_prefixes = ?, max_concurrent_calls = ?,
                                 max_calls_per_hour = ?, caller_id = ?, created_at = ?
                WHERE username = ?
                """,
                (*_user_params(user)[1:], user.username),
            )
            if cursor.rowcount == 0:
                raise NotFoundError(f"no user {user.username!r}")

    async def delete_user(self, username: str) -> bool:
        """Delete a user and its DIDs (they would point nowhere). False if there was none."""
        async with self._transaction() as db:
            cursor = await db.execute("DELETE FROM users WHERE username = ?", (username,))
            return cursor.rowcount > 0

    async def get_user(self, username: str) -> User | None:
        rows = await self._db.execute_fetchall(
            """
            SELECT username, realm, ha1_md5, ha1_sha256, display_name, enabled,
                   outbound_policy, allow_prefixes, deny_prefixes, max_concurrent_calls,
                   max_calls_per_hour, caller_id, created_at
            FROM users WHERE username = ?
            """,
            (username,),
        )
        return _user_from_row(next(iter(rows))) if rows else None

    async def list_users(self) -> list[User]:
        rows = await self._db.execute_fetchall(
            """
            SELECT username, realm, ha1_md5, ha1_sha256, display_name, enabled,
                   outbound_policy, allow_prefixes, deny_prefixes, max_concurrent_calls,
                   max_calls_per_hour, caller_id, created_at
            FROM users ORDER BY username
            """
        )
        return [_user_from_row(row) for row in rows]

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
                    _carrier_params(carrier),
                )
        except sqlite3.IntegrityError as exc:
            raise DuplicateError(f"carrier {carrier.name!r} already exists") from exc

    async def update_carrier(self, carrier: CarrierRow) -> None:
        async with self._transaction() as db:
            cursor = await db.execute(
                """
                UPDATE carriers SET addresses = ?, port = ?, transport = ?, gateway = ?,
                                    username = ?, password = ?, priority = ?, enabled = ?
                WHERE name = ?
                """,
                (*_carrier_params(carrier)[1:], carrier.name),
            )
            if cursor.rowcount == 0:
                raise NotFoundError(f"no carrier {carrier.name!r}")

    async def delete_carrier(self, name: str) -> bool:
        async with self._transaction() as db:
            cursor = await db.execute("DELETE FROM carriers WHERE name = ?", (name,))
            return cursor.rowcount > 0

    async def get_carrier(self, name: str) -> CarrierRow | None:
        rows = await self._db.execute_fetchall(
            """
            SELECT name, addresses, port, transport, gateway, username, password, priority,
                   enabled
            FROM carriers WHERE name = ?
            """,
            (name,),
        )
        return _carrier_from_row(next(iter(rows))) if rows else None

    async def list_carriers(self) -> list[CarrierRow]:
        """Carriers in the order outbound routing should try them."""
        rows = await self._db.execute_fetchall(
            """
            SELECT name, addresses, port, transport, gateway, username, password, priority,
                   enabled
            FROM carriers ORDER BY priority, name
            """
        )
        return [_carrier_from_row(row) for row in rows]

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
        async with self._transaction() as db:
            cursor = await db.execute("DELETE FROM dids WHERE number = ?", (number,))
            return cursor.rowcount > 0

    async def list_dids(self) -> list[DidRow]:
        rows = await self._db.execute_fetchall("SELECT number, username FROM dids ORDER BY number")
        return [DidRow(number=row[0], username=row[1]) for row in rows]

    # -- bans

    async def upsert_ban(self, ban: BanRow) -> None:
        async with self._transaction() as db:
            op = UpsertBan(ban)
            await db.execute(op.SQL, op.params())

    async def delete_ban(self, ip: str) -> bool:
        async with self._transaction() as db:
            cursor = await db.execute(DeleteBan.SQL, (ip,))
            return cursor.rowcount > 0

    async def get_ban(self, ip: str) -> BanRow | None:
        rows = await self._db.execute_fetchall(
            "SELECT ip, until, reason, count, created_at FROM bans WHERE ip = ?", (ip,)
        )
        return BanRow(*next(iter(rows))) if rows else None

    async def list_bans(self, active_at: float | None = None) -> list[BanRow]:
        """Every ban, or only those still in force at `active_at`."""
        if active_at is None:
            rows = await self._db.execute_fetchall(
                "SELECT ip, until, reason, count, created_at FROM bans ORDER BY created_at, ip"
            )
        else:
            rows = await self._db.execute_fetchall(
                """
                SELECT ip, until, reason, count, created_at FROM bans
                WHERE until IS NULL OR until > ? ORDER BY created_at, ip
                """,
                (active_at,),
            )
        return [BanRow(*row) for row in rows]

    # -- CDRs

    async def insert_cdr(self, cdr: CdrRow) -> int:
        """Store one CDR now and return its id (the hot path uses `submit(InsertCdr(...))`)."""
        async with self._transaction() as db:
            cursor = await db.execute(InsertCdr.SQL, _cdr_params(cdr))
            return int(cursor.lastrowid or 0)

    async def list_cdrs(self, limit: int = 100, offset: int = 0) -> list[CdrRow]:
        """Newest first."""
        rows = await self._db.execute_fetchall(
            """
            SELECT call_id, caller, callee, source_ip, direction, started_at, answered_at,
                   ended_at, status, reason, duration, id
            FROM cdrs ORDER BY id DESC LIMIT ? OFFSET ?
            """,
            (limit, offset),
        )
        return [CdrRow(*row) for row in rows]

    async def count_cdrs(self) -> int:
        return await self._scalar_int("SELECT count(*) FROM cdrs")

    async def export_cdrs(self, chunk_size: int = 1_000) -> AsyncIterator[CdrRow]:
        """Every CDR, oldest first, read in chunks so an export never loads the whole table."""
        last_id = 0
        while True:
            rows = await self._db.execute_fetchall(
                """
                SELECT call_id, caller, callee, source_ip, direction, started_at, answered_at,
                       ended_at, status, reason, duration, id
                FROM cdrs WHERE id > ? ORDER BY id LIMIT ?
                """,
                (last_id, chunk_size),
            )
            if not rows:
                return
            for row in rows:
                cdr = CdrRow(*row)
                last_id = cdr.id or last_id
                yield cdr

    # -- admin

    async def get_admin_hash(self) -> str | None:
        rows = await self._db.execute_fetchall("SELECT bcrypt_hash FROM admin WHERE id = 1")
        return str(next(iter(rows))[0]) if rows else None

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
        rows = await self._db.execute_fetchall("SELECT value FROM settings WHERE key = ?", (key,))
        return str(next(iter(rows))[0]) if rows else None

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
        return [_binding_from_row(row) for row in rows]

    async def replace_bindings(self, bindings: Iterable[BindingRow]) -> None:
        """Make the location table exactly `bindings` (a snapshot of the registrar)."""
        async with self._transaction() as db:
            await db.execute("DELETE FROM location")
            await db.executemany(UpsertBinding.SQL, [_binding_params(b) for b in bindings])

    # -- helpers

    async def _scalar_int(self, statement: str) -> int:
        rows = await self._db.execute_fetchall(statement)
        return int(next(iter(rows))[0]) if rows else 0


# --- row mapping --------------------------------------------------------------------------


def _create_private_file(path: Path) -> None:
    """Create the database file owner-only before SQLite does: it holds HA1s and carrier
    passwords. SQLite gives the -wal and -shm files the same permissions."""
    try:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        if not path.exists():
            # O_EXCL | O_NOFOLLOW: a dangling symlink planted at the name is not followed.
            flags = os.O_CREAT | os.O_EXCL | os.O_WRONLY | os.O_NOFOLLOW
            os.close(os.open(path, flags, 0o600))
    except OSError as exc:
        raise StoreError(f"cannot create database {path}: {exc.strerror}") from exc


def _group_by_statement(batch: Sequence[WriteOp]) -> list[tuple[str, list[tuple[object, ...]]]]:
    """Turn a batch into as few executemany calls as order allows.

    Each call to SQLite is a hop to aiosqlite's thread (~100 µs), so runs of the same
    statement are sent together. Order matters only within a table (an upsert then a delete of
    the same binding), so ops are first split by table, keeping their order inside each.
    """
    groups_by_table: dict[str, list[tuple[str, list[tuple[object, ...]]]]] = {}
    for op in batch:
        groups = groups_by_table.setdefault(op.TABLE, [])
        if groups and groups[-1][0] is op.SQL:
            groups[-1][1].append(op.params())
        else:
            groups.append((op.SQL, [op.params()]))
    return [group for groups in groups_by_table.values() for group in groups]


async def _execute_group(
    db: aiosqlite.Connection, statement: str, rows: list[tuple[object, ...]]
) -> int:
    """Run one group inside a savepoint; if it fails, retry row by row so one bad op costs
    only itself. Returns how many rows failed."""
    await db.execute("SAVEPOINT writer_group")
    try:
        await db.executemany(statement, rows)
    except sqlite3.Error:
        await db.execute("ROLLBACK TO writer_group")
        await db.execute("RELEASE writer_group")
    else:
        await db.execute("RELEASE writer_group")
        return 0
    failed = 0
    for params in rows:
        try:
            await db.execute(statement, params)
        except sqlite3.Error as exc:
            failed += 1
            logger.warning("writer: %s failed: %s", " ".join(statement.split()[:3]), exc)
    return failed


def _user_params(user: User) -> tuple[object, ...]:
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
    )


def _user_from_row(row: Sequence[Any]) -> User:
    # Column order of the SELECTs matches the dataclass field order.
    return User(  # type: ignore[call-arg]  # mypy cannot count a star-unpacked row
        *row[:5], bool(row[5]), row[6], _json_strings(row[7]), _json_strings(row[8]), *row[9:]
    )


def _carrier_params(carrier: CarrierRow) -> tuple[object, ...]:
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


def _carrier_from_row(row: Sequence[Any]) -> CarrierRow:
    # mypy cannot count a star-unpacked row
    return CarrierRow(row[0], _json_strings(row[1]), *row[2:8], bool(row[8]))  # type: ignore[call-arg]


def _cdr_params(cdr: CdrRow) -> tuple[object, ...]:
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
    )


def _binding_params(binding: BindingRow) -> tuple[object, ...]:
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


def _binding_from_row(row: Sequence[Any]) -> BindingRow:
    # Column order of the SELECT matches the dataclass field order.
    # mypy cannot count a star-unpacked row
    return BindingRow(*row[:11], bool(row[11]), *row[12:15], _json_strings(row[15]), row[16])  # type: ignore[call-arg]


def _json_strings(value: object) -> tuple[str, ...]:
    decoded = json.loads(str(value)) if value else []
    return tuple(str(item) for item in decoded)
