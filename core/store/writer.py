"""The batching writer: the SIP hot path's writes reach the disk without the hot path waiting.

`Writer.submit(op)` puts an op into a bounded queue that one task commits in batches about
every 100 ms; a commit per row costs 300-800 µs, a batched row ~10 µs. When the queue is full
the op is dropped and counted, never awaited.
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
        self._queue: asyncio.Queue[WriteOp] = asyncio.Queue(maxsize=queue_size)
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._closing = False
        self._committed = 0
        self._dropped = 0
        self._failed = 0

    def start(self) -> asyncio.Task[None]:
        """Start the task that commits submitted ops in batches; idempotent."""
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._write_loop(), name="store-writer")
        return self._task

    def submit(self, op: WriteOp) -> bool:
        """Queue a write without waiting. False (and counted) when the queue is full."""
        if self._closing:
            self._dropped += 1
            return False
        try:
            self._queue.put_nowait(op)
        except asyncio.QueueFull:
            self._dropped += 1
            return False
        return True

    async def flush(self) -> None:
        """Wait until every op submitted so far is committed (or failed and counted)."""
        if self._task is None or self._task.done():
            batch = self._drain_queue()
            if batch:
                try:
                    await self._apply(batch)
                finally:
                    for _ in batch:
                        self._queue.task_done()
            return
        self._wake.set()
        await self._queue.join()

    async def close(self) -> None:
        """Commit what is queued, then refuse (and count) further ops and stop the task."""
        await self.flush()
        self._closing = True
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    @property
    def stats(self) -> WriterStats:
        return WriterStats(
            pending=self._queue.qsize(),
            committed=self._committed,
            dropped=self._dropped,
            failed=self._failed,
        )

    def _drain_queue(self) -> list[WriteOp]:
        batch: list[WriteOp] = []
        while True:
            try:
                batch.append(self._queue.get_nowait())
            except asyncio.QueueEmpty:
                return batch

    async def _write_loop(self) -> None:
        while True:
            first = await self._queue.get()
            self._wake.clear()
            batch = [first, *self._drain_queue()]
            try:
                await self._apply(batch)
            except Exception:
                # Not an SQLite refusal (those are counted inside): a bug. Keep writing.
                logger.exception("%s: writer failed on a batch of %d", self._path, len(batch))
                self._failed += len(batch)
            finally:
                for _ in batch:
                    self._queue.task_done()
            # Not held while waiting for the next op: a batch can be the whole queue (10,000
            # bindings' rows after a burst of registrations).
            del first, batch
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
