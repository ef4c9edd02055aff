"""Matching keys (§17.1.3, §17.2.3, §9.2) and the TransactionTable: routing, bound, timer heap."""

from __future__ import annotations

import random

import pytest

from core.net.flow import Flow
from core.sip import (
    Headers,
    Request,
    Response,
    SipParseError,
    make_response,
    new_branch,
    parse_message,
    parse_uri,
)
from core.sip.timers import TimerSettings
from core.sip.transaction import (
    Action,
    Deliver,
    Send,
    State,
    Terminated,
    Timeout,
    TransportError,
    Unmatched,
    cancel_target_key,
    client_key,
    server_key,
)
from core.sip.transaction_client import ClientInviteTransaction, make_cancel
from core.sip.transaction_server import ServerInviteTransaction, ServerNonInviteTransaction
from core.sip.transaction_table import TransactionTable, TransactionTableFull

UDP = Flow("udp", ("198.51.100.7", 5062), ("192.0.2.1", 5060))
TCP = Flow("tcp", ("198.51.100.7", 40000), ("192.0.2.1", 5060), connection_id=3)


def parse_request(text: str) -> Request:
    message = parse_message(text.replace("\n", "\r\n").encode())
    assert isinstance(message, Request)
    return message


def incoming(
    method: str = "INVITE",
    *,
    branch: str | None = "z9hG4bK-caller-1",
    sent_by: str = "198.51.100.7:5062",
    uri: str = "sip:bob@pbx.test",
    to_tag: str | None = None,
    cseq_number: int = 7,
    cseq_method: str | None = None,
    call_id: str = "c1@198.51.100.7",
) -> Request:
    """A request as a phone sends it to us."""
    branch_param = f";branch={branch}" if branch else ""
    to = f"<sip:bob@pbx.test>;tag={to_tag}" if to_tag else "<sip:bob@pbx.test>"
    return parse_request(
        f"{method} {uri} SIP/2.0\n"
        f"Via: SIP/2.0/UDP {sent_by}{branch_param};rport\n"
        "Max-Forwards: 70\n"
        "From: <sip:alice@pbx.test>;tag=a1\n"
        f"To: {to}\n"
        f"Call-ID: {call_id}\n"
        f"CSeq: {cseq_number} {cseq_method or method}\n"
        "Content-Length: 0\n\n"
    )


def outgoing(method: str = "INVITE", branch: str | None = None) -> Request:
    """A request as the proxy forwards it: our Via on top with a fresh branch."""
    return parse_request(
        f"{method} sip:bob@192.0.2.20:5070 SIP/2.0\n"
        f"Via: SIP/2.0/UDP 192.0.2.1:5060;branch={branch or new_branch()}\n"
        "Via: SIP/2.0/UDP 198.51.100.7:5062;branch=z9hG4bK-caller-1;rport=5062\n"
        "Max-Forwards: 69\n"
        "From: <sip:alice@pbx.test>;tag=a1\n"
        "To: <sip:bob@pbx.test>\n"
        "Call-ID: c1@198.51.100.7\n"
        f"CSeq: 7 {method}\n"
        "Content-Length: 0\n\n"
    )


def reply(req: Request, status: int, to_tag: str | None = "b1") -> Response:
    message = parse_message(make_response(req, status, to_tag=to_tag).to_bytes())
    assert isinstance(message, Response)
    return message


def drain(table: TransactionTable, until: float) -> list[tuple[float, Action]]:
    fired: list[tuple[float, Action]] = []
    while (deadline := table.next_deadline()) is not None and deadline <= until:
        actions = table.on_timer(deadline)
        assert actions, f"a timer was due at {deadline} but nothing fired"
        fired.extend((deadline, action) for action in actions)
    return fired


# -- keys (pure functions) ----------------------------------------------------------------
def test_client_key_is_branch_and_cseq_method() -> None:
    invite = outgoing("INVITE", branch="z9hG4bK-x")
    assert client_key(invite) == ("z9hG4bK-x", "INVITE")
    assert client_key(reply(invite, 487)) == ("z9hG4bK-x", "INVITE")
    cancel = make_cancel(invite)
    assert client_key(reply(cancel, 200)) == ("z9hG4bK-x", "CANCEL")
    no_branch = parse_request(
        "OPTIONS sip:a@b SIP/2.0\nVia: SIP/2.0/UDP h\nCSeq: 1 OPTIONS\nContent-Length: 0\n\n"
    )
    assert client_key(no_branch) is None


def test_server_key_rfc3261_is_branch_sent_by_and_method() -> None:
    invite = incoming()
    assert server_key(invite) == ("z9hG4bK-caller-1", "198.51.100.7", 5062, "INVITE")
    # An ACK counts as the INVITE it acknowledges; a CANCEL is its own transaction.
    assert server_key(incoming("ACK")) == server_key(invite)
    assert server_key(incoming("CANCEL")) != server_key(invite)
    assert cancel_target_key(incoming("CANCEL")) == server_key(invite)
    # Same branch from another sent-by is another transaction; host case does not matter.
    assert server_key(incoming(sent_by="198.51.100.8:5062")) != server_key(invite)
    assert server_key(incoming(sent_by="PHONE.example:5062")) == server_key(
        incoming(sent_by="phone.example:5062")
    )


def test_server_key_rfc2543_fallback_uses_the_dialog_fields() -> None:
    old = incoming(branch=None)
    assert len(server_key(old)) == 6
    assert server_key(incoming(branch=None)) == server_key(old)  # a retransmission
    assert server_key(incoming("ACK", branch=None, to_tag="t")) == server_key(old)
    assert server_key(incoming(branch="1234")) != server_key(old)  # top Via differs
    assert server_key(incoming(branch=None, cseq_number=8)) != server_key(old)
    assert server_key(incoming(branch=None, uri="sip:carol@pbx.test")) != server_key(old)
    assert server_key(incoming(branch=None, call_id="other")) != server_key(old)


def test_server_key_needs_via_and_cseq() -> None:
    with pytest.raises(SipParseError):
        server_key(parse_request("OPTIONS sip:a@b SIP/2.0\nCSeq: 1 OPTIONS\n\n"))
    with pytest.raises(SipParseError):
        server_key(parse_request("OPTIONS sip:a@b SIP/2.0\nVia: SIP/2.0/UDP h;branch=z9hG4bKx\n\n"))


# -- routing ------------------------------------------------------------------------------
def test_new_request_is_unmatched_then_retransmissions_reach_the_transaction() -> None:
    table = TransactionTable()
    invite = incoming()
    assert table.receive_request(invite, UDP, 0.0) == [Unmatched(invite, UDP)]
    transaction, actions = table.new_server(invite, UDP, 0.0, user_data="call-1")
    assert isinstance(transaction, ServerInviteTransaction) and actions == []
    assert transaction.user_data == "call-1" and transaction.flow is UDP
    ringing = make_response(invite, 180, to_tag="b1")
    sent = table.respond(transaction, ringing, 0.1)
    again = table.receive_request(incoming(), UDP, 0.6)
    assert again == [Send(transaction, ringing, sent[0].data, retransmission=True)]  # type: ignore[union-attr]
    assert table.match_request(incoming()) is transaction
    with pytest.raises(ValueError):
        table.new_server(incoming(), UDP, 0.7)  # the route must not create it twice
    with pytest.raises(ValueError):
        table.new_server(incoming("ACK"), UDP, 0.7)


def test_ack_for_non_2xx_reaches_the_invite_and_ack_for_2xx_is_unmatched() -> None:
    table = TransactionTable()
    rejected, _ = table.new_server(incoming(branch="z9hG4bK-r"), UDP, 0.0)
    table.respond(rejected, make_response(rejected.request, 486, to_tag="b1"), 0.1)
    assert table.receive_request(incoming("ACK", branch="z9hG4bK-r", to_tag="b1"), UDP, 0.2) == []
    assert rejected.state is State.CONFIRMED

    answered, _ = table.new_server(incoming(branch="z9hG4bK-a", call_id="c2"), UDP, 0.0)
    table.respond(answered, make_response(answered.request, 200, to_tag="b2"), 0.1)
    # §13.2.2.4: the ACK to a 2xx is a new transaction with its own branch.
    ack = incoming("ACK", branch="z9hG4bK-ack2xx", call_id="c2", to_tag="b2")
    assert table.receive_request(ack, UDP, 0.2) == [Unmatched(ack, UDP)]


def test_rfc2543_ack_must_carry_our_response_tag() -> None:
    table = TransactionTable()
    transaction, _ = table.new_server(incoming(branch=None), UDP, 0.0)
    table.respond(transaction, make_response(transaction.request, 404, to_tag="ours"), 0.1)
    stray = incoming("ACK", branch=None, to_tag="someone-else")
    assert table.receive_request(stray, UDP, 0.2) == [Unmatched(stray, UDP)]
    assert table.receive_request(incoming("ACK", branch=None, to_tag="ours"), UDP, 0.3) == []
    assert transaction.state is State.CONFIRMED
    # And a retransmitted 2543 INVITE reached it too (absorbed in Confirmed).
    assert table.receive_request(incoming(branch=None), UDP, 0.4) == []


def test_cancel_finds_the_invite_server_transaction_and_gets_its_own() -> None:
    table = TransactionTable(TimerSettings(trying_delay=0))
    invite_tx, first = table.new_server(incoming(), UDP, 0.0)
    assert [type(a) for a in first] == [Send]  # proxy mode: 100 Trying at once
    cancel = incoming("CANCEL")
    assert table.receive_request(cancel, UDP, 1.0) == [Unmatched(cancel, UDP)]
    assert table.match_cancel(cancel) is invite_tx
    cancel_tx, _ = table.new_server(cancel, UDP, 1.0)
    assert isinstance(cancel_tx, ServerNonInviteTransaction) and cancel_tx is not invite_tx
    table.respond(cancel_tx, make_response(cancel, 200, to_tag="b1"), 1.0)
    terminated = table.respond(invite_tx, make_response(invite_tx.request, 487, to_tag="b1"), 1.0)
    assert [type(a) for a in terminated] == [Send]
    # The CANCEL of another call (other branch) or from another sent-by matches nothing.
    assert table.match_cancel(incoming("CANCEL", branch="z9hG4bK-other")) is None
    assert table.match_cancel(incoming("CANCEL", sent_by="198.51.100.9:5062")) is None


def test_responses_route_by_branch_and_method() -> None:
    table = TransactionTable()
    invite = outgoing("INVITE")
    invite_tx, actions = table.new_client(invite, UDP, 0.0, user_data="leg-1")
    assert isinstance(invite_tx, ClientInviteTransaction)
    assert actions == [Send(invite_tx, invite, invite.to_bytes())]
    cancel = make_cancel(invite)
    cancel_tx, _ = table.new_client(cancel, UDP, 1.0)
    ok = reply(cancel, 200)
    assert table.receive_response(ok, UDP, 1.1) == [Deliver(cancel_tx, ok)]
    terminated = reply(invite, 487)
    acted = table.receive_response(terminated, UDP, 1.2)
    assert [(type(a), a.transaction) for a in acted] == [(Send, invite_tx), (Deliver, invite_tx)]
    assert acted[0].message.headers.get("cseq") == "7 ACK"  # type: ignore[union-attr]
    stray = reply(outgoing("INVITE"), 200)  # a branch we never used
    assert table.receive_response(stray, UDP, 1.3) == [Unmatched(stray, UDP)]
    with pytest.raises(ValueError):
        table.new_client(invite, UDP, 2.0)  # branch in use


def test_terminated_transactions_leave_the_table() -> None:
    table = TransactionTable()
    server, _ = table.new_server(incoming("OPTIONS"), TCP, 0.0)
    client, _ = table.new_client(outgoing("OPTIONS"), TCP, 0.0)
    assert (table.server_count, table.client_count, len(table)) == (1, 1, 2)
    assert [type(a) for a in table.respond(server, make_response(server.request, 200), 0.1)] == [
        Send,
        Terminated,
    ]
    assert table.match_request(incoming("OPTIONS")) is None
    assert table.terminate(client) == [Terminated(client)]
    assert len(table) == 0 and table.next_deadline() is None
    assert table.on_timer(1_000.0) == []


def test_transport_error_goes_through_the_table() -> None:
    table = TransactionTable()
    client, _ = table.new_client(outgoing("INVITE"), TCP, 0.0)
    assert table.transport_error(client, 0.1) == [TransportError(client), Terminated(client)]
    assert len(table) == 0 and table.next_deadline() is None


# -- bound ----------------------------------------------------------------------------------
def test_table_refuses_servers_past_the_bound_but_keeps_room_for_clients() -> None:
    table = TransactionTable(max_transactions=10, client_reserve=2)
    servers = [
        table.new_server(incoming("OPTIONS", branch=f"z9hG4bK-{n}"), UDP, 0.0)[0] for n in range(8)
    ]
    with pytest.raises(TransactionTableFull) as refused:
        table.new_server(incoming("OPTIONS", branch="z9hG4bK-9"), UDP, 0.0)
    assert (refused.value.status, refused.value.reason) == (503, "Service Unavailable")
    # Calls already admitted can still be forwarded: the reserve is for client transactions.
    table.new_client(outgoing("OPTIONS"), UDP, 1.0)
    table.new_client(outgoing("OPTIONS"), UDP, 1.0)
    with pytest.raises(TransactionTableFull):
        table.new_client(outgoing("OPTIONS"), UDP, 1.0)
    assert table.refused == 2 and len(table) == 10
    # A finished transaction frees its slot (timer J on UDP; the clients' F runs to 33 s).
    table.respond(servers[0], make_response(servers[0].request, 200), 0.0)
    drain(table, until=32.0)
    assert len(table) == 9
    with pytest.raises(TransactionTableFull):  # client transactions count against servers too
        table.new_server(incoming("OPTIONS", branch="z9hG4bK-9"), UDP, 32.0)
    drain(table, until=40.0)
    assert (table.server_count, table.client_count) == (7, 0)
    table.new_server(incoming("OPTIONS", branch="z9hG4bK-9"), UDP, 40.0)
    assert table.refused == 3


def test_table_bound_settings_are_checked() -> None:
    with pytest.raises(ValueError):
        TransactionTable(max_transactions=0)
    with pytest.raises(ValueError):
        TransactionTable(max_transactions=4, client_reserve=4)


# -- the timer heap ---------------------------------------------------------------------------
def test_table_fires_every_transactions_timers_in_order() -> None:
    table = TransactionTable()
    first, _ = table.new_client(outgoing("INVITE"), UDP, 0.0)
    second, _ = table.new_client(outgoing("OPTIONS"), UDP, 0.25)
    assert table.next_deadline() == 0.5
    fired = drain(table, until=3_600.0)
    times = [at for at, _ in fired]
    assert times == sorted(times)
    timeouts = [(at, a.transaction, a.timer) for at, a in fired if isinstance(a, Timeout)]
    assert timeouts == [(32.0, first, "B"), (32.25, second, "F")]
    assert len(table) == 0 and table.next_deadline() is None


def test_heap_deadline_stays_correct_through_many_adds_and_removes() -> None:
    rng = random.Random(3261)
    table = TransactionTable(max_transactions=100_000)
    live = []
    now = 0.0
    for step in range(4_000):
        now += rng.random() * 0.01
        roll = rng.random()
        flow = UDP if rng.random() < 0.7 else TCP
        if roll < 0.45 or not live:
            if rng.random() < 0.5:
                transaction, _ = table.new_client(
                    outgoing(rng.choice(["INVITE", "BYE"])), flow, now
                )
            else:
                req = incoming(rng.choice(["INVITE", "REGISTER"]), branch=f"z9hG4bK-{step}")
                transaction, _ = table.new_server(req, flow, now)
            live.append(transaction)
        elif roll < 0.75:
            transaction = live[rng.randrange(len(live))]
            if isinstance(transaction, ClientInviteTransaction):
                table.receive_response(
                    reply(transaction.request, rng.choice([180, 200, 486])), flow, now
                )
            elif not transaction.is_client:
                status = rng.choice([100, 180, 200, 404]) if transaction.method == "INVITE" else 200
                table.respond(
                    transaction, make_response(transaction.request, status, to_tag="t"), now
                )  # type: ignore[arg-type]
            else:
                table.receive_response(reply(transaction.request, 200), flow, now)
        elif roll < 0.85:
            table.terminate(live[rng.randrange(len(live))])
        else:
            table.on_timer(now)
        if step % 97 == 0:
            live = [t for t in live if not t.terminated]
            deadlines = [d for t in live if (d := t.next_deadline()) is not None]
            assert table.next_deadline() == (min(deadlines) if deadlines else None)
            assert len(table) == len(live)
            assert len(table._heap) <= 2 * len(table) + 1_025  # stale entries get compacted
    drain(table, until=now + 3_600.0)
    live = [t for t in live if not t.terminated]
    # What is left waits on its TU (a server not yet answered, an INVITE that got a 1xx).
    assert table.next_deadline() is None and len(table) == len(live) > 0
    assert all(t.next_deadline() is None and not t.terminated for t in live)
    waiting = {(t.is_client, t.state) for t in live}
    assert waiting <= {(False, State.PROCEEDING), (False, State.TRYING), (True, State.PROCEEDING)}


def test_ten_thousand_transactions_run_their_timers_on_a_fake_clock() -> None:
    table = TransactionTable(max_transactions=20_000)
    created = []
    for n in range(10_000):
        headers = Headers(
            [("Via", f"SIP/2.0/TCP 192.0.2.1;branch=z9hG4bK-{n}"), ("CSeq", f"{n} OPTIONS")]
        )
        request = Request("OPTIONS", parse_uri("sip:192.0.2.20"), headers)
        created.append(table.new_client(request, TCP, n * 0.001)[0])
    # The TU gives up on every third one; every fourth hears a 100 (F keeps running).
    for transaction in created[::3]:
        table.terminate(transaction)
    for transaction in created[::4]:
        table.receive_response(reply(transaction.request, 100, to_tag=None), TCP, 1.0)
    fired = drain(table, until=3_600.0)
    survivors = [t for n, t in enumerate(created) if n % 3]
    timeouts = [(at, action.transaction) for at, action in fired if isinstance(action, Timeout)]
    assert timeouts == [(32.0 + n * 0.001, t) for n, t in enumerate(created) if n % 3]
    assert sum(isinstance(action, Terminated) for _, action in fired) == len(survivors)
    assert len(table) == 0 and table.next_deadline() is None


def _general_match(
    transactions: list[ClientInviteTransaction], response: Response
) -> ClientInviteTransaction | None:
    """What §17.1.3 matching finds by parsing the response's top Via (`client_key`)."""
    key = client_key(response)
    return next((tx for tx in transactions if tx.key == key), None)


def _with_vias(original: Response, vias: list[str]) -> Response:
    """`original` with its Via lines replaced by `vias` (raw header lines)."""
    text = original.to_bytes().decode()
    head = text.partition("\r\n\r\n")[0]
    lines = [line for line in head.split("\r\n") if not line.lower().startswith("via:")]
    message = parse_message(("\r\n".join([lines[0], *vias, *lines[1:]]) + "\r\n\r\n").encode())
    assert isinstance(message, Response)
    return message


@pytest.mark.parametrize(
    "vias",
    [
        # As sent: the lines of the request (the fast path's case).
        ["Via: SIP/2.0/UDP 192.0.2.1:5060;branch={b}", "Via: {second}"],
        # The same Vias in other shapes: one line, compact form, odd spacing, case.
        ["Via: SIP/2.0/UDP 192.0.2.1:5060;branch={b}, {second}"],
        ["v: SIP/2.0/UDP 192.0.2.1:5060;branch={b}", "v: {second}"],
        ["Via: SIP/2.0/UDP 192.0.2.1:5060 ;branch={b}", "Via: {second}"],
        ["Via: SIP/2.0/UDP 192.0.2.1:5060;Branch={b}", "Via: {second}"],
        ["Via: sip/2.0/udp 192.0.2.1:5060;branch={b};received=192.0.2.9", "Via: {second}"],
        ['Via: SIP/2.0/UDP 192.0.2.1:5060;branch={b};x="a;branch=z9hG4bK-other"'],
        # Our top Via alone, or with another Via below it than the request had.
        ["Via: SIP/2.0/UDP 192.0.2.1:5060;branch={b}"],
        ["Via: SIP/2.0/UDP 192.0.2.1:5060;branch={b}", "Via: SIP/2.0/UDP [2001:db8::7]:5062"],
        # Another branch, a branch that is a prefix of ours, another client's branch on top.
        ["Via: SIP/2.0/UDP 192.0.2.1:5060;branch={b}x", "Via: {second}"],
        ["Via: SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bK", "Via: {second}"],
        ["Via: SIP/2.0/UDP 192.0.2.1:5060;branch={other}", "Via: {second}"],
        ["Via: SIP/2.0/UDP 192.0.2.1:5060", "Via: {second}"],
    ],
)
def test_responses_match_as_the_top_via_says_whatever_its_shape(vias: list[str]) -> None:
    """The match that compares the response's Via lines with the request's finds exactly
    what parsing the top Via finds, on every shape a phone may give them."""
    table = TransactionTable()
    sent = [outgoing("INVITE"), outgoing("INVITE")]
    transactions: list[ClientInviteTransaction] = []
    for request in sent:
        transaction, _ = table.new_client(request, UDP, 0.0)
        assert isinstance(transaction, ClientInviteTransaction)
        transactions.append(transaction)
    first = sent[0].headers.get_all("via")
    branch = transactions[0].key[0]
    other = transactions[1].key[0]
    assert isinstance(branch, str) and isinstance(other, str)
    lines = [v.format(b=branch, other=other, second=first[1]) for v in vias]
    response = _with_vias(reply(sent[0], 180), lines)
    assert table.match_response(response) is _general_match(transactions, response)


def test_responses_with_a_malformed_via_still_raise() -> None:
    """A Via that does not parse is refused as before, whichever Via it is."""
    table = TransactionTable()
    invite = outgoing("INVITE")
    table.new_client(invite, UDP, 0.0)
    top = invite.headers.get_all("via")[0]
    for lines in ([f"Via: {top}", "Via: SIP/2.0/UDP"], [f"Via: {top};=", "Via: x"]):
        response = _with_vias(reply(invite, 180), lines)
        with pytest.raises(SipParseError):
            table.match_response(response)


def test_a_response_with_the_requests_vias_matches_without_parsing_them() -> None:
    table = TransactionTable()
    invite = outgoing("INVITE")
    transaction, _ = table.new_client(invite, UDP, 0.0)
    response = reply(invite, 200)
    assert table.match_response(response) is transaction
    assert response.headers.cached_view("via") is None  # not one Via parsed
    assert response.headers.cached_view("cseq") is None  # nor the CSeq


@pytest.mark.parametrize(
    "cseq", ["7 INVITE", "7  INVITE", "7 INVITE ", "8 INVITE", "7 invite", "7 CANCEL", "7", "x"]
)
def test_responses_match_as_their_cseq_says_whatever_its_shape(cseq: str) -> None:
    table = TransactionTable()
    invite = outgoing("INVITE")
    transaction, _ = table.new_client(invite, UDP, 0.0)
    assert isinstance(transaction, ClientInviteTransaction)
    cancel, _ = table.new_client(make_cancel(invite), UDP, 0.0)
    response = reply(invite, 180)
    response.headers.set("CSeq", cseq)
    try:
        expected = _general_match([transaction, cancel], response)  # type: ignore[list-item]
    except SipParseError:
        with pytest.raises(SipParseError):
            table.match_response(response)
        return
    assert table.match_response(response) is expected


# -- server matching: the branch look-up against the §17.2.3 key ------------------------
def _keyed_match(table: TransactionTable, request: Request) -> ServerInviteTransaction | object:
    """What match_request answered before it looked at branches first: the full §17.2.3
    key, then the ACK check. Raises what server_key raises."""
    transaction = table._servers.get(server_key(request))
    if transaction is None:
        return None
    if request.method == "ACK" and not (
        isinstance(transaction, ServerInviteTransaction) and transaction.acknowledged_by(request)
    ):
        return None
    return transaction


def _random_request(rng: random.Random) -> Request:
    """A request from a small space, so branches, sent-bys and methods often coincide."""
    method = rng.choice(["INVITE", "ACK", "CANCEL", "BYE", "OPTIONS", "REGISTER"])
    branch = rng.choice(
        ["z9hG4bK-a", "z9hG4bK-b", "z9hG4bK-A", "z9hG4bk-a", "old-2543", "z9hG4bK", None]
    )
    sent_by = rng.choice(
        ["198.51.100.7:5062", "198.51.100.7", "PHONE.test:5062", "phone.test:5062"]
    )
    cseq_method = method if rng.random() < 0.9 else rng.choice(["INVITE", "BYE"])
    return incoming(
        method,
        branch=branch,
        sent_by=sent_by,
        uri=rng.choice(["sip:bob@pbx.test", "sip:carol@pbx.test"]),
        to_tag=rng.choice([None, "b1", "zz"]),
        cseq_number=rng.choice([7, 8]),
        cseq_method=cseq_method,
        call_id=rng.choice(["c1@198.51.100.7", "c2@198.51.100.7"]),
    )


def test_server_matching_by_branch_agrees_with_the_full_key() -> None:
    """Every request, retransmission, ACK, CANCEL or fresh one, matches exactly what its
    full key matches, while transactions come and go (so branches are counted right)."""
    rng = random.Random(2161)
    table = TransactionTable()
    now = 0.0
    live: list[ServerInviteTransaction | object] = []
    matched = 0
    for _ in range(4_000):
        now += 0.01
        request = _random_request(rng)
        expected = _keyed_match(table, request)
        assert table.match_request(request) is expected
        matched += expected is not None
        roll = rng.random()
        if expected is None and request.method != "ACK" and roll < 0.4:
            transaction, _ = table.new_server(request, UDP, now)
            live.append(transaction)
            # Created under the key it arrived with, and found again by it.
            assert transaction.key == server_key(request)
            assert table.match_request(request) is transaction
        elif live and roll > 0.9:
            table.terminate(live.pop(rng.randrange(len(live))))  # type: ignore[arg-type]
        counted: dict[object, int] = {}
        for key in table._servers:
            if len(key) == 4:
                counted[key[0]] = counted.get(key[0], 0) + 1
        assert table._branches == counted
    assert matched > 200  # the space is small enough for many retransmissions and ACKs


def test_server_matching_by_branch_raises_as_the_full_key_does() -> None:
    table = TransactionTable()
    table.new_server(incoming(branch="z9hG4bK-live"), UDP, 0.0)
    for branch in ("z9hG4bK-fresh", "z9hG4bK-live", "rfc2543", None):
        request = incoming(branch=branch)
        request.headers.set("CSeq", "seven INVITE")
        with pytest.raises(SipParseError):
            server_key(request)
        with pytest.raises(SipParseError):
            table.match_request(request)
        request = incoming(branch=branch)
        request.headers.remove("CSeq")
        with pytest.raises(SipParseError, match="CSeq"):
            table.match_request(request)
        request = incoming(branch=branch)
        request.headers.remove("Via")
        with pytest.raises(SipParseError, match="Via"):
            table.match_request(request)


def test_a_request_is_keyed_as_it_arrived_even_if_the_route_changes_it() -> None:
    """new_server keys what match_request found unmatched from what it read then."""
    for branch in ("z9hG4bK-x", None):
        table = TransactionTable()
        request = incoming("OPTIONS", branch=branch)
        arrived = server_key(request)
        assert table.receive_retransmission(request, 0.0) is None
        request.uri = parse_uri("sip:did-target@pbx.test")
        transaction, _ = table.new_server(request, UDP, 0.0)
        assert transaction.key == arrived
        again = table.receive_retransmission(incoming("OPTIONS", branch=branch), 0.1)
        assert again == []  # absorbed by the transaction (Trying: nothing to resend)


def test_timers_fire_due_transactions_in_deadline_order_against_a_scan() -> None:
    """The deadline heap (floats, transactions queued per deadline) against a scan of every
    live transaction: at each on_timer exactly the transactions due fire, earliest first,
    and next_deadline is the scan's minimum; stale entries (Timer A stopped by a 1xx, a
    transaction terminated early) never fire anything."""
    rng = random.Random(17)
    table = TransactionTable(max_transactions=100_000)
    live: list = []
    now = 0.0
    for step in range(3_000):
        now += rng.choice([0.0, 0.0, 0.125, rng.random() * 2])
        roll = rng.random()
        if roll < 0.35 or not live:
            if rng.random() < 0.6:
                transaction, _ = table.new_client(outgoing(rng.choice(["INVITE", "BYE"])), UDP, now)
            else:
                req = incoming(rng.choice(["INVITE", "BYE"]), branch=f"z9hG4bK-t{step}")
                transaction, _ = table.new_server(req, UDP, now)
            live.append(transaction)
        elif roll < 0.6:
            transaction = live[rng.randrange(len(live))]
            if transaction.is_client:
                status = rng.choice([100, 180, 200, 486])
                table.receive_response(reply(transaction.request, status), UDP, now)
            else:
                status = rng.choice([180, 200, 404]) if transaction.method == "INVITE" else 200
                response = make_response(transaction.request, status, to_tag="t")
                table.respond(transaction, response, now)  # type: ignore[arg-type]
        elif roll < 0.7:
            table.terminate(live[rng.randrange(len(live))])
        else:
            live = [t for t in live if not t.terminated]
            due = {id(t): d for t in live if (d := t.next_deadline()) is not None and d <= now}
            fired = table.on_timer(now)
            order = []
            for action in fired:
                key = id(action.transaction)  # type: ignore[attr-defined]
                if not order or order[-1] != key:
                    order.append(key)
            assert set(order) == set(due)
            assert [due[key] for key in order] == sorted(due[key] for key in order)
            live = [t for t in live if not t.terminated]
            remaining = [t.next_deadline() for t in live]
            assert all(d is None or d > now for d in remaining)
        live = [t for t in live if not t.terminated]
        deadlines = [d for t in live if (d := t.next_deadline()) is not None]
        assert table.next_deadline() == (min(deadlines) if deadlines else None)


def test_timers_at_one_deadline_fire_in_the_order_they_were_queued() -> None:
    table = TransactionTable()
    first, _ = table.new_client(outgoing("BYE"), UDP, 0.0)
    second, _ = table.new_client(outgoing("BYE"), UDP, 0.0)
    third, _ = table.new_client(outgoing("BYE"), UDP, 0.0)
    assert table.next_deadline() == 0.5  # Timer E, once on the heap for all three
    table.terminate(second)
    fired = table.on_timer(0.5)
    assert [a.transaction for a in fired if isinstance(a, Send)] == [first, third]
    assert table.next_deadline() == 1.5  # E doubled: 0.5 + 1.0
