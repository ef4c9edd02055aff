"""The call table and the CDRs it leaves behind: states, events, bounds, rows in SQLite."""

from __future__ import annotations

from pathlib import Path

from core.accounting import CdrWriter, cdr_for
from core.calls import Call, CallTable
from core.events import CallEvent, EventBus
from core.flow import Flow
from core.store import Store

T0 = 1_700_000_000.0
CALLER_FLOW = Flow("udp", ("203.0.113.7", 5062), ("192.0.2.10", 5060))


class Finished:
    """A CallSink that keeps what it was told, in order."""

    def __init__(self) -> None:
        self.calls: list[Call] = []

    def call_finished(self, call: Call) -> None:
        self.calls.append(call)


def new_call(call_id: str = "c1", started_at: float = T0) -> Call:
    return Call(
        call_id=call_id,
        caller="alice",
        callee="bob",
        source=CALLER_FLOW.remote,
        started_at=started_at,
        caller_flow=CALLER_FLOW,
        caller_tag="atag",
    )


def events(bus: EventBus) -> list[CallEvent]:
    feed, _cursor, _missed = bus.feed.read_since(0)
    return [event for event in feed if isinstance(event, CallEvent)]


def test_an_answered_call_goes_through_every_state_once() -> None:
    bus, sink = EventBus(), Finished()
    table = CallTable(bus, capacity=10, sink=sink)
    call = new_call()
    assert table.start(call)
    table.ringing(call, T0 + 1)
    table.ringing(call, T0 + 1.5)  # a second 180 changes nothing
    table.answered(call, T0 + 3)
    assert table.answered_count == 1 and len(table) == 1
    table.ended(call, T0 + 63, "caller hung up")
    table.ended(call, T0 + 64, "again")  # already finished: ignored
    published = events(bus)
    assert [(e.state, e.status, e.at) for e in published] == [
        ("trying", 0, T0),
        ("ringing", 0, T0 + 1),
        ("answered", 200, T0 + 3),
        ("ended", 200, T0 + 63),
    ]
    assert published[-1].reason == "caller hung up"
    assert published[0].source == "203.0.113.7:5062"
    assert sink.calls == [call]
    assert len(table) == 0 and table.answered_count == 0


def test_a_failed_call_keeps_its_status_and_has_no_duration() -> None:
    bus, sink = EventBus(), Finished()
    table = CallTable(bus, capacity=10, sink=sink)
    call = new_call()
    table.start(call)
    table.failed(call, T0 + 2, 486, "Busy Here")
    cdr = cdr_for(sink.calls[0])
    assert (cdr.status, cdr.reason, cdr.answered_at, cdr.duration) == (486, "Busy Here", None, 0.0)
    assert (cdr.caller, cdr.callee, cdr.source_ip, cdr.direction) == (
        "alice",
        "bob",
        "203.0.113.7",
        "internal",
    )
    assert cdr.ended_at == T0 + 2


def test_the_table_is_bounded_and_refuses_a_taken_call_id() -> None:
    table = CallTable(EventBus(), capacity=2)
    assert table.start(new_call("a"))
    assert not table.start(new_call("a"))
    assert table.start(new_call("b"))
    assert table.full
    assert not table.start(new_call("c"))
    assert [info.call_id for info in table.snapshot()] == ["a", "b"]


def test_oldest_call_first_and_snapshot_rows() -> None:
    table = CallTable(EventBus(), capacity=10)
    first, second = new_call("a", T0), new_call("b", T0 + 5)
    table.start(first)
    table.start(second)
    table.answered(second, T0 + 7)
    assert table.oldest() is first
    table.failed(first, T0 + 8, 487, "cancelled by caller")
    assert table.oldest() is second
    [row] = table.snapshot()
    assert (row.call_id, row.caller, row.callee, row.source, row.state) == (
        "b",
        "alice",
        "bob",
        "203.0.113.7:5062",
        "answered",
    )
    assert (row.started_at, row.answered_at) == (T0 + 5, T0 + 7)


def test_peer_flow_follows_the_direction_of_the_request() -> None:
    call = new_call()
    callee_flow = Flow("tcp", ("198.51.100.9", 40000), ("192.0.2.10", 5060), connection_id=7)
    call.callee_flows["btag"] = callee_flow
    assert call.peer_flow("atag", "btag") is callee_flow  # caller → callee
    assert call.peer_flow("btag", "atag") is CALLER_FLOW  # callee → caller
    assert call.peer_flow("atag", "other-fork") is None
    assert call.peer_flow("stranger", "nobody") is None


async def test_cdr_writer_puts_rows_in_the_store(tmp_path: Path) -> None:
    store = await Store.open(tmp_path / "cdr.db")
    try:
        writer = CdrWriter(store)
        table = CallTable(EventBus(), capacity=10, sink=writer)
        call = new_call()
        table.start(call)
        table.answered(call, T0 + 2)
        table.ended(call, T0 + 12.5, "callee hung up")
        await store.flush()
        [row] = await store.list_cdrs()
        assert (row.call_id, row.status, row.reason, row.duration) == (
            "c1",
            200,
            "callee hung up",
            10.5,
        )
        assert (row.started_at, row.answered_at, row.ended_at) == (T0, T0 + 2, T0 + 12.5)
        assert writer.queued == 1 and writer.dropped == 0
    finally:
        await store.close()
