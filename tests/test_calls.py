"""The call table and the CDRs it leaves behind (states, events, bounds, rows in SQLite), and
what the proxy learns of each call's dialog (core/proxy/dialogs.py)."""

from __future__ import annotations

from pathlib import Path

from core.accounting.cdrs import CdrWriter, cdr_for
from core.events import CallEvent, EventBus
from core.net.flow import Flow
from core.proxy.calls import Call, CallTable
from core.proxy.dialogs import bye_for, call_for_invite, follow_request, learn_answer
from core.sip.message import Request, Response
from core.sip.parser import parse_message
from core.store.database import Store

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


def parsed(text: str) -> Request | Response:
    message = parse_message(("\r\n".join(text.strip().splitlines()) + "\r\n\r\n").encode())
    assert isinstance(message, Request | Response)
    return message


INVITE = parsed("""
INVITE sip:bob@pbx.test SIP/2.0
Via: SIP/2.0/UDP 203.0.113.7:5062;branch=z9hG4bKa
From: "Alice" <sip:alice@pbx.test>;tag=atag
To: <sip:bob@pbx.test>
Call-ID: c1
CSeq: 7 INVITE
Contact: <sip:alice@203.0.113.7:5062>
Content-Length: 0
""")
ANSWER = parsed("""
SIP/2.0 200 OK
Via: SIP/2.0/UDP 203.0.113.7:5062;branch=z9hG4bKa
Record-Route: <sip:edge.example;lr>, <sip:192.0.2.10:5060;lr;pbx=x>
From: "Alice" <sip:alice@pbx.test>;tag=atag
To: <sip:bob@pbx.test>;tag=btag
Call-ID: c1
CSeq: 7 INVITE
Contact: <sip:bob@198.51.100.9:5070;transport=tcp>
Content-Length: 0
""")
CALLEE_FLOW = Flow("tcp", ("198.51.100.9", 40000), ("192.0.2.10", 5060), connection_id=3)


def answered_call() -> Call:
    assert isinstance(INVITE, Request) and isinstance(ANSWER, Response)
    call = call_for_invite(INVITE, "alice", "bob", CALLER_FLOW, T0, "internal")
    call.state = "answered"
    learn_answer(call, ANSWER, CALLEE_FLOW)
    return call


def test_the_dialog_learnt_from_the_invite_and_its_answer() -> None:
    call = answered_call()
    assert (call.caller_tag, call.caller_cseq, call.callee_tag) == ("atag", 7, "btag")
    assert call.callee_flow is CALLEE_FLOW and call.caller_flow is CALLER_FLOW
    assert call.record_route == ("<sip:edge.example;lr>", "<sip:192.0.2.10:5060;lr;pbx=x>")


def test_bye_in_the_name_of_each_side() -> None:
    call = answered_call()
    call.callee_cseq = 3
    to_callee = bye_for(call, towards_callee=True, route=("<sip:edge.example;lr>",))
    assert to_callee is not None
    assert str(to_callee.uri) == "sip:bob@198.51.100.9:5070;transport=tcp"
    assert (to_callee.from_tag, to_callee.to_tag) == ("atag", "btag")
    assert str(to_callee.cseq) == "8 BYE"
    assert to_callee.headers.values("route") == ["<sip:edge.example;lr>"]
    to_caller = bye_for(call, towards_callee=False, route=())
    assert to_caller is not None
    assert str(to_caller.uri) == "sip:alice@203.0.113.7:5062"
    assert (to_caller.from_tag, to_caller.to_tag, str(to_caller.cseq)) == ("btag", "atag", "4 BYE")
    assert to_caller.headers.get("route") is None
    call.callee_contact = ""
    assert bye_for(call, towards_callee=True, route=()) is None


def in_dialog(method: str, from_tag: str, to_tag: str, cseq: int) -> Request:
    request = parsed(f"""
{method} sip:x@198.51.100.9 SIP/2.0
Via: SIP/2.0/UDP 203.0.113.7:5062;branch=z9hG4bK{method}{cseq}
From: <sip:a@pbx.test>;tag={from_tag}
To: <sip:b@pbx.test>;tag={to_tag}
Call-ID: c1
CSeq: {cseq} {method}
Content-Length: 0
""")
    assert isinstance(request, Request)
    return request


def test_following_the_dialog_keeps_cseqs_and_spots_the_hang_up() -> None:
    call = answered_call()
    call.callee_flows["other"] = CALLEE_FLOW
    assert follow_request(call, in_dialog("INVITE", "atag", "btag", 9)) is None
    assert follow_request(call, in_dialog("INFO", "btag", "atag", 2)) is None
    assert (call.caller_cseq, call.callee_cseq) == (9, 2)
    # The BYE of another fork's dialog only forgets that dialog.
    assert follow_request(call, in_dialog("BYE", "atag", "other", 10)) is None
    assert "other" not in call.callee_flows
    assert follow_request(call, in_dialog("BYE", "btag", "atag", 3)) == "callee hung up"
