"""The batching writer: the SIP hot path's writes reach the disk without the hot path waiting.

`Writer.submit(op)` puts an op into a bounded list (`PendingWrites`, compiled: core/store/
pending.py) that one task commits in batches about every 100 ms; a commit per row costs
300-800 µs, a batched row ~10 µs. When the list is full the op is dropped and counted, never
awaited.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
from collections.abc import Callable, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass

import aiosqlite

from core.store.ops import WriteOp
from core.store.pending import PendingWrites

logger = logging.getLogger(__name__)

DEFAULT_WRITE_QUEUE_SIZE = 10_000
DEFAULT_BATCH_INTERVAL = 0.1  # seconds between writer commits

Transaction = Callable[[], AbstractAsyncContextManager[aiosqlite.Connection]]


@dataclass(frozen=True, slots=True)
class WriterStats:
    """Counters for the console's health view."""

    pending: int
    committed: int
    dropped: int  # queue was full (or the store closing): the op never reached the disk
    failed: int  # SQLite refused it; logged


class Writer:
    """One task committing queued ops, each batch in one transaction of the store's connection.

    `transaction` is the store's own (one transaction at a time on the shared connection), so
    the writer and the store's direct methods never interleave BEGINs.
    """

    def __init__(
        self, transaction: Transaction, path: str, queue_size: int, batch_interval: float
    ) -> None:
        self._transaction = transaction
        self._path = path
        self._batch_interval = batch_interval
        # What the SIP path submits to (Store.submit goes straight to it).
        self.pending = PendingWrites(queue_size)
        self._ready = asyncio.Event()  # an op arrived while the task waited for one
        self._wake = asyncio.Event()  # flush: cut the interval between batches short
        self._progress = asyncio.Event()  # a batch finished (flush counts them)
        self._task: asyncio.Task[None] | None = None
        self._committed = 0
        self._failed = 0
        self._done = 0  # ops taken and finished (committed, failed or lost with their batch)

    def start(self) -> asyncio.Task[None]:
        """Start the task that commits submitted ops in batches; idempotent."""
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._write_loop(), name="store-writer")
        return self._task

    def submit(self, op: WriteOp) -> bool:
        """Queue a write without waiting. False (and counted) when the queue is full."""
        return self.pending.submit(op)

    async def flush(self) -> None:
        """Wait until every op submitted so far is committed (or failed and counted)."""
        target = self.pending.accepted
        if self._task is None or self._task.done():
            batch = self.pending.take()
            if batch:
                try:
                    await self._apply(batch)
                finally:
                    self._done += len(batch)
            return
        while self._done < target:
            self._progress.clear()
            self._wake.set()
            await self._progress.wait()

    async def close(self) -> None:
        """Commit what is queued, then refuse (and count) further ops and stop the task."""
        await self.flush()
        self.pending.closing = True
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    @property
    def stats(self) -> WriterStats:
        return WriterStats(
            pending=len(self.pending),
            committed=self._committed,
            dropped=self.pending.dropped,
            failed=self._failed,
        )

    async def _write_loop(self) -> None:
        pending = self.pending
        while True:
            while not len(pending):
                self._ready.clear()
                pending.wake_on_submit(self._ready.set)
                await self._ready.wait()
            self._wake.clear()
            batch = pending.take()
            try:
                await self._apply(batch)
            except Exception:
                # Not an SQLite refusal (those are counted inside): a bug. Keep writing.
                logger.exception("%s: writer failed on a batch of %d", self._path, len(batch))
                self._failed += len(batch)
            finally:
                self._done += len(batch)
                self._progress.set()
            # Not held while waiting for the next op: a batch can be the whole queue (10,000
            # bindings' rows after a burst of registrations).
            del batch
            # Let ops accumulate for one interval: one commit per interval at most, while
            # the first op after a quiet spell is still written at once. flush() cuts it short.
            # asyncio.timeout, not wait_for: 3.11's wait_for can swallow a cancel that races
            # with the wake-up, and close() would then wait forever.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._batch_interval):
                    await self._wake.wait()

    async def _apply(self, batch: Sequence[WriteOp]) -> None:
        try:
            async with self._transaction() as db:
                failed = 0
                for statement, rows in _group_by_statement(batch):
                    failed += await _execute_group(db, statement, rows)
        except sqlite3.Error:
            logger.exception("%s: writer lost a batch of %d writes", self._path, len(batch))
            self._failed += len(batch)
            return
        self._failed += failed
        self._committed += len(batch) - failed


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
