"""The database: one SQLite file holding users, carriers, DIDs, bindings, bans and CDRs.

Two ways in:

* `await store.add_user(...)`-style methods (`core.store.queries`), for the CLI, the console
  forms and start-up loading. Each write is its own short transaction.
* `store.submit(op)` with an op of `core.store.ops`, for the SIP hot path, which must never
  wait on disk: the batching writer (`core.store.writer`) commits them.

The package's other modules: `schema` (the migrations), `connection` (opening, transactions,
the change watch), `rows` and `ops` (what the hot path imports, without aiosqlite), `errors`.
"""

from __future__ import annotations

import asyncio
import os

import aiosqlite

from core.store.accounting import AccountingQueries
from core.store.connection import connect
from core.store.ops import WriteOp
from core.store.queries import Queries
from core.store.writer import (
    DEFAULT_BATCH_INTERVAL,
    DEFAULT_WRITE_QUEUE_SIZE,
    Writer,
    WriterStats,
)


class Store(Queries, AccountingQueries):
    """The pbxtui database. Create with `await Store.open(path)`; end with `await close()`."""

    def __init__(
        self,
        db: aiosqlite.Connection,
        path: str,
        write_queue_size: int,
        batch_interval: float,
    ) -> None:
        super().__init__(db, path)
        self._writer = Writer(self._transaction, path, write_queue_size, batch_interval)

    @classmethod
    async def open(
        cls,
        path: str | os.PathLike[str],
        *,
        write_queue_size: int = DEFAULT_WRITE_QUEUE_SIZE,
        batch_interval: float = DEFAULT_BATCH_INTERVAL,
        create: bool = True,
    ) -> Store:
        """Open (creating if needed, mode 0600, parent directory 0700) and migrate the file.

        Raises `StoreError` when the file is not a usable pbxtui database, and
        `MissingDatabaseError` when it does not exist and `create` is False.
        """
        db, location = await connect(path, create=create)
        store = cls(db, location, write_queue_size, batch_interval)
        await store._prepare()
        return store

    async def close(self) -> None:
        """Stop the watchers, commit what the writer still holds, and close the file.
        Calling it again does nothing."""
        if self._closed:
            return
        await self._stop_watching()
        await self._writer.close()
        await super().close()

    async def __aenter__(self) -> Store:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    # -- the writer task

    def start_writer(self) -> asyncio.Task[None]:
        """Start the task that commits submitted ops in batches; idempotent."""
        return self._writer.start()

    def submit(self, op: WriteOp) -> bool:
        """Queue a write without waiting. False (and counted) when the queue is full or the
        store is closing. (Straight to the writer's compiled list: one interpreted frame.)"""
        return self._writer.pending.submit(op)

    async def flush(self) -> None:
        """Wait until every op submitted so far is committed (or failed and counted)."""
        await self._writer.flush()

    @property
    def writer_stats(self) -> WriterStats:
        return self._writer.stats
