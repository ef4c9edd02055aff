"""The end of a call's CDR on its way to SQLite: the compiled pending list the writer takes
from (core/store/pending.py), the writer around it, and the CDR writer asking the meter only
about calls that have a price."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import random
import sqlite3
from pathlib import Path

from core.accounting.cdrs import CdrWriter, cdr_for
from core.accounting.meter import Meter
from core.accounting.rates import Rate
from core.events import EventBus
from core.proxy.calls import Call, CallTable
from core.store.database import Store
from core.store.ops import DeleteBan, InsertCdr, WriteOp
from core.store.pending import PendingWrites
from core.store.rows import cdr_params

T0 = 1_700_000_000.0


def test_the_list_is_bounded_counts_what_it_refuses_and_keeps_order() -> None:
    pending = PendingWrites(3)
    ops = [DeleteBan(f"192.0.2.{i}") for i in range(5)]
    assert [pending.submit(op) for op in ops] == [True, True, True, False, False]
    assert (len(pending), pending.accepted, pending.dropped) == (3, 3, 2)
    assert pending.take() == ops[:3]
    assert len(pending) == 0 and pending.take() == []
    assert pending.submit(ops[3]) is True  # room again once taken
    pending.closing = True
    assert pending.submit(ops[4]) is False
    assert (pending.accepted, pending.dropped) == (4, 3)


def test_no_capacity_means_no_bound() -> None:
    for capacity in (0, -1):
        pending = PendingWrites(capacity)
        assert all(pending.submit(DeleteBan("192.0.2.1")) for _ in range(1_000))
        assert (len(pending), pending.dropped) == (1_000, 0)


def test_the_writer_is_woken_once_at_the_next_accepted_op() -> None:
    pending = PendingWrites(1)
    wakes: list[int] = []
    pending.wake_on_submit(lambda: wakes.append(len(pending)))
    pending.submit(DeleteBan("192.0.2.1"))
    pending.submit(DeleteBan("192.0.2.2"))  # refused: full
    assert wakes == [1]
    pending.take()
    pending.submit(DeleteBan("192.0.2.3"))
    assert wakes == [1]  # not asked again: no second wake
    pending.take()
    pending.wake_on_submit(lambda: wakes.append(-1))
    pending.closing = True
    pending.submit(DeleteBan("192.0.2.4"))  # refused: a refusal wakes nobody
    assert wakes == [1]


def _call(index: int, rng: random.Random) -> Call:
    direction = rng.choice(("internal", "inbound", "outbound"))
    call = Call(
        f"c{index}@x",
        f"u{rng.randrange(5)}",
        "4420" + str(rng.randrange(10**6)),
        ("192.0.2.10", 5060),
        started_at=T0 + index,
        direction=direction,
        carrier=rng.choice(("", "uk", "unknown")),
        number="4420" + str(rng.randrange(10**6)) if rng.random() < 0.9 else "999",
    )
    if rng.random() < 0.7:
        call.answered_at = T0 + index + rng.uniform(0, 5)
        call.status = 200
        call.callee_contact = "<sip:bob@192.0.2.20;ob>;expires=60"
    else:
        call.status = rng.choice((486, 487, 603))
    call.ended_at = T0 + index + rng.uniform(5, 600)
    call.reason = rng.choice(("BYE from caller", "busy", "cancelled"))
    return call


def _meter() -> Meter:
    meter = Meter("EUR")
    meter.load_rates({"uk": ("GBP", [Rate("44", 12_000, 60, 60, 5_000), Rate("4420", 9_000)])})
    return meter


class _Ops:
    def __init__(self) -> None:
        self.ops: list[WriteOp] = []

    def submit(self, op: WriteOp) -> bool:
        self.ops.append(op)
        return True


def test_the_meter_is_asked_only_about_priced_calls_and_the_rows_are_as_before() -> None:
    """The old rule billed every row (`Meter.bill` returns any other row untouched): the rows,
    the counters and the spend are the same either way, over generated calls."""
    rng = random.Random(3)
    calls = [_call(i, rng) for i in range(400)]
    assert {c.direction for c in calls} == {"internal", "inbound", "outbound"}
    meter, store = _meter(), _Ops()
    writer = CdrWriter(store, meter)
    for call in calls:
        writer.call_finished(call)
    before = _meter()
    want = [before.bill(cdr_for(call)) for call in calls]
    got = [op.cdr for op in store.ops if isinstance(op, InsertCdr)]
    assert got == want
    assert any(row.cost for row in got)  # some were priced
    assert (meter.billed, meter.unrated) == (before.billed, before.unrated)
    assert meter.billed > 0 and meter.unrated > 0
    assert vars(meter.ledger) == vars(before.ledger)  # the same spend counted per user


async def test_a_full_writer_drops_and_counts_cdrs_and_stores_the_rest_as_they_were(
    tmp_path: Path,
) -> None:
    rng = random.Random(5)
    calls = [_call(i, rng) for i in range(12)]
    async with await Store.open(tmp_path / "pbx.db", write_queue_size=8) as store:
        writer = CdrWriter(store, _meter())
        for call in calls:
            writer.call_finished(call)
        assert (writer.queued, writer.dropped) == (8, 4)
        assert (store.writer_stats.pending, store.writer_stats.dropped) == (8, 4)
        await store.flush()
        assert store.writer_stats == type(store.writer_stats)(0, 8, 4, 0)
    want = [cdr_params(_meter().bill(cdr_for(call))) for call in calls[:8]]
    assert _stored(tmp_path / "pbx.db") == want


def _stored(path: Path) -> list[tuple[object, ...]]:
    """Every CDR as stored, in the columns (and order) InsertCdr writes."""
    columns = InsertCdr.SQL.split("(", 1)[1].split(")", 1)[0]
    with contextlib.closing(sqlite3.connect(path)) as db:
        return db.execute(f"SELECT {columns} FROM cdrs ORDER BY id").fetchall()


async def test_the_running_writer_commits_every_accepted_write_across_batches(
    tmp_path: Path,
) -> None:
    rng = random.Random(8)
    async with await Store.open(tmp_path / "pbx.db", batch_interval=0.01) as store:
        store.start_writer()
        table = CallTable(EventBus(), capacity=10_000, sink=CdrWriter(store))
        count = 0
        for burst in range(6):
            for _ in range(rng.randrange(1, 80)):
                call = _call(count, rng)
                call.direction = "internal"
                assert table.start(call)
                table.failed(call, call.ended_at or T0, 486, "busy")
                count += 1
            if burst % 2:
                await store.flush()  # while the task is between batches
                assert store.writer_stats.pending == 0
            else:
                await asyncio.sleep(0)  # let the task take what it has
        await store.flush()
        assert store.writer_stats.committed == count
        assert len(await store.list_cdrs(limit=10_000)) == count
    # Closed: refused and counted, as before.
    assert store.submit(DeleteBan("192.0.2.1")) is False
    assert store.writer_stats.dropped == 1


async def test_flush_without_a_task_commits_in_place_and_close_commits_the_rest(
    tmp_path: Path,
) -> None:
    store = await Store.open(tmp_path / "pbx.db")
    table = CallTable(EventBus(), capacity=100, sink=CdrWriter(store))
    for index, reason in zip(range(3), itertools.cycle(("busy", "cancelled")), strict=False):
        call = _call(index, random.Random(index))
        table.start(call)
        table.failed(call, T0 + index + 1, 486, reason)
    await store.flush()
    assert len(await store.list_cdrs()) == 3
    call = _call(9, random.Random(9))
    table.start(call)
    table.failed(call, T0 + 10, 486, "busy")
    await store.close()
    reopened = await Store.open(tmp_path / "pbx.db")
    try:
        assert len(await reopened.list_cdrs()) == 4
    finally:
        await reopened.close()
