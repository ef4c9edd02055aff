"""The SQLite connection under the store: opening, migrating, transactions, the change watch.

One SQLite file in WAL mode, so the CLI can write while the server reads. Changes made by
another process are noticed by polling `PRAGMA data_version` (`watch_changes`), which only
moves when *another* connection commits.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import sqlite3
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import aiosqlite

from core.store import schema
from core.store.backup import pre_migration_path, vacuum_into
from core.store.errors import MissingDatabaseError, StoreError
from core.store.rows import CdrRow

logger = logging.getLogger(__name__)

PAGE_CACHE_KIB = 512


async def connect(
    path: str | os.PathLike[str], *, create: bool = True
) -> tuple[aiosqlite.Connection, str]:
    """Open the file (creating it mode 0600, its directory 0700, unless `create` is False)
    in autocommit mode; the connection and the path it was opened at. `StoreError` when SQLite
    cannot open it, or when it does not exist and may not be created."""
    location = os.fspath(path)
    if location != ":memory:":
        file = Path(location).expanduser()
        if not create and not file.is_file():
            raise MissingDatabaseError(f"no database at {file}")
        _create_private_file(file)
        location = os.fspath(file)
    try:
        db = await aiosqlite.connect(location, isolation_level=None)
    except sqlite3.Error as exc:
        raise StoreError(f"cannot open database {location}: {exc}") from exc
    return db, location


class Connection:
    """The store's one connection: configured, migrated, one transaction at a time."""

    def __init__(self, db: aiosqlite.Connection, path: str) -> None:
        self._db = db
        self.path = path
        # One transaction at a time on the shared connection: the writer task and the
        # direct methods would otherwise interleave BEGINs.
        self._transaction_lock = asyncio.Lock()
        self._watch_tasks: set[asyncio.Task[None]] = set()
        self._closed = False
        self._data_version_seen = 0
        self.schema_version = 0

    async def _prepare(self) -> None:
        """Configure and migrate a freshly opened file; on any failure the connection is
        closed and the error raised (a `StoreError` when the file is not a usable pbxtui
        database)."""
        try:
            await self._configure()
            await self._migrate()
            self._data_version_seen = await self.data_version()
        except BaseException:
            await self._db.close()
            raise

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
        # SQLite's own page cache: nothing on the SIP path waits on a read, and the kernel
        # caches the file anyway; the default 2 MiB stayed full in every process after the
        # users were read at start.
        await self._db.execute(f"PRAGMA cache_size = -{PAGE_CACHE_KIB}")

    async def _migrate(self) -> None:
        version = await self._pragma_int("PRAGMA user_version")
        if version > schema.SCHEMA_VERSION:
            raise StoreError(
                f"{self.path} has schema version {version}, newer than this pbxtui "
                f"understands ({schema.SCHEMA_VERSION}); upgrade pbxtui"
            )
        if 0 < version < schema.SCHEMA_VERSION and self.path != ":memory:":
            copy = await vacuum_into(self._db, pre_migration_path(Path(self.path), version))
            logger.warning("%s: copied to %s before the schema upgrade", self.path, copy)
        for step in range(version, schema.SCHEMA_VERSION):
            try:
                async with self._transaction() as db:
                    for statement in schema.MIGRATIONS[step]:
                        await db.execute(statement)
            except sqlite3.Error as exc:
                raise StoreError(
                    f"{self.path}: upgrading the schema to version {step + 1} failed, "
                    f"nothing was changed: {exc}"
                ) from exc
            logger.info("%s: schema upgraded to version %d", self.path, step + 1)
        self.schema_version = await self._pragma_int("PRAGMA user_version")

    async def backup(self, target: Path) -> Path:
        """A consistent copy of the database at `target` (core/store/backup.py)."""
        return await vacuum_into(self._db, target)

    async def _stop_watching(self) -> None:
        for task in list(self._watch_tasks):
            task.cancel()
        for task in list(self._watch_tasks):
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def close(self) -> None:
        """Stop the watchers and close the file. Calling it again does nothing."""
        if self._closed:
            return
        self._closed = True
        await self._stop_watching()
        await self._db.close()

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

    async def _scalar_int(self, statement: str) -> int:
        row = await self._first_row(statement)
        return int(row[0]) if row else 0

    async def _first_row(self, statement: str, params: tuple[object, ...] = ()) -> Any:
        """The first row `statement` selects, or None when it selects none."""
        rows = await self._db.execute_fetchall(statement, params)
        return next(iter(rows)) if rows else None

    async def _rows_changed(self, statement: str, params: tuple[object, ...]) -> int:
        """Run one UPDATE or DELETE in its own transaction; how many rows it changed."""
        async with self._transaction() as db:
            cursor = await db.execute(statement, params)
            return cursor.rowcount

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

    async def _cdrs_by_id(
        self, sql: str, params: tuple[object, ...], chunk_size: int
    ) -> AsyncIterator[CdrRow]:
        """The CDRs `sql` selects, oldest first, `chunk_size` at a time, so an export never
        loads the whole table. `sql` takes (last id seen, *`params`, chunk size) and orders
        by id."""
        last_id = 0
        while True:
            rows = await self._db.execute_fetchall(sql, (last_id, *params, chunk_size))
            if not rows:
                return
            for row in rows:
                cdr = CdrRow(*row)
                last_id = cdr.id or last_id
                yield cdr

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
