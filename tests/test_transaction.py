"""The four RFC 3261 §17 machines on a fake clock: every timer, retransmission, ACK, 100 Trying.

Time only moves when a test says so (`run_timers` jumps from deadline to deadline), so a
32-second timer B costs microseconds.
"""

from __future__ import annotations

import pytest

from core.net.flow import Flow
from core.sip import Request, Response, make_response, parse_message
from core.sip.timers import TIMER_RULES, TimerSettings, duration_table, timer_duration
from core.sip.transaction import (
    TIMER_INPUTS,
    Action,
    Deliver,
    Send,
    State,
    Terminated,
    Timeout,
    Transaction,
    TransportError,
)
from core.sip.transaction_client import (
    ClientInviteTransaction,
    ClientNonInviteTransaction,
    ClientTransaction,
    make_ack,
    make_cancel,
    new_client_transaction,
)
from core.sip.transaction_server import (
    ServerInviteTransaction,
    ServerNonInviteTransaction,
    ServerTransaction,
    new_server_transaction,
)

UDP = Flow("udp", ("192.0.2.20", 5060), ("192.0.2.1", 5060))
TCP = Flow("tcp", ("192.0.2.20", 40123), ("192.0.2.1", 5060), connection_id=7)
TIMERS = TimerSettings()


def request(
    method: str = "INVITE",
    *,
    branch: str = "z9hG4bK-ours-1",
    uri: str = "sip:bob@192.0.2.20",
    extra: str = "",
) -> Request:
    text = (
        f"{method} {uri} SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP 192.0.2.1:5060;branch={branch};rport\r\n"
        "Via: SIP/2.0/UDP 198.51.100.7:5062;branch=z9hG4bK-caller;received=198.51.100.7\r\n"
        "Max-Forwards: 69\r\n"
        "Route: <sip:edge1.example;lr>\r\n"
        "Route: <sip:edge2.example;lr>\r\n"
        'From: "Alice" <sip:alice@pbx.test>;tag=a11ce\r\n'
        "To: <sip:bob@pbx.test>\r\n"
        "Call-ID: call-1@198.51.100.7\r\n"
        f"CSeq: 314 {method}\r\n"
        "Contact: <sip:alice@198.51.100.7:5062>\r\n"
        f"{extra}"
        "Content-Length: 0\r\n\r\n"
    )
    message = parse_message(text.encode())
    assert isinstance(message, Request)
    return message


def answer(req: Request, status: int, to_tag: str | None = "b0b") -> Response:
    """A response as the far end sends it (through the wire, so nothing is shared)."""
    message = parse_message(make_response(req, status, to_tag=to_tag).to_bytes())
    assert isinstance(message, Response)
    return message


def run_timers(machine: Transaction, until: float) -> list[tuple[float, Action]]:
    """Jump the clock from deadline to deadline up to `until`; what fired, and when."""
    fired: list[tuple[float, Action]] = []
    while (deadline := machine.next_deadline()) is not None and deadline <= until:
        actions = machine.on_timer(deadline)
        assert actions, f"a timer was due at {deadline} but nothing fired"
        fired.extend((deadline, action) for action in actions)
    return fired


def sends(actions: list[Action]) -> list[Send]:
    return [action for action in actions if isinstance(action, Send)]


def statuses(actions: list[Action]) -> list[int]:
    """The status of each response sent."""
    return [a.message.status for a in sends(actions) if isinstance(a.message, Response)]


def started_client(
    method: str = "INVITE", flow: Flow = UDP, reliable: bool | None = None
) -> ClientTransaction:
    transaction = new_client_transaction(request(method), flow, timers=TIMERS, reliable=reliable)
    transaction.start(0.0)
    return transaction


def started_server(
    method: str = "INVITE", flow: Flow = UDP, timers: TimerSettings = TIMERS
) -> ServerTransaction:
    transaction = new_server_transaction(request(method), flow, timers=timers)
    transaction.start(0.0)
    return transaction


# -- timers as data -------------------------------------------------------------------------
def test_every_timer_letter_has_a_rule_and_the_rfc_values() -> None:
    assert set(TIMER_RULES) == set(TIMER_INPUTS)
    udp = {letter: timer_duration(letter, TIMERS, reliable=False) for letter in TIMER_RULES}
    tcp = {letter: timer_duration(letter, TIMERS, reliable=True) for letter in TIMER_RULES}
    assert udp == {
        "A": 0.5, "B": 32.0, "D": 32.0, "E": 0.5, "F": 32.0, "G": 0.5, "H": 32.0,
        "I": 5.0, "J": 32.0, "K": 5.0, "L": 32.0, "M": 32.0, "Trying": 0.2,
    }  # fmt: skip
    assert tcp == {
        "A": None, "B": 32.0, "D": 0.0, "E": None, "F": 32.0, "G": None, "H": 32.0,
        "I": 0.0, "J": 0.0, "K": 0.0, "L": 32.0, "M": 32.0, "Trying": 0.2,
    }  # fmt: skip


@pytest.mark.parametrize(
    "kwargs",
    [{"t1": 0}, {"t1": 5.0, "t2": 4.0}, {"t4": 0}, {"timer_d": -1}, {"trying_delay": -0.1}],
)
def test_timer_settings_reject_nonsense(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        TimerSettings(**kwargs)


# -- client INVITE (§17.1.1) --------------------------------------------------------------
def test_client_invite_udp_timer_a_doubles_past_t2_until_timer_b() -> None:
    transaction = new_client_transaction(request(), UDP, timers=TIMERS)
    first = transaction.start(0.0)
    assert [type(a) for a in first] == [Send]
    assert first[0].data.startswith(b"INVITE sip:bob@192.0.2.20 SIP/2.0\r\n")
    assert not first[0].retransmission

    fired = run_timers(transaction, until=3600.0)
    resent = [(at, a) for at, a in fired if isinstance(a, Send)]
    # A starts at T1 and doubles without a cap (8 s and 16 s exceed T2): 6 retransmissions.
    assert [at for at, _ in resent] == [0.5, 1.5, 3.5, 7.5, 15.5, 31.5]
    assert all(a.retransmission and a.data == first[0].data for _, a in resent)
    tail = [(at, type(a)) for at, a in fired if not isinstance(a, Send)]
    assert tail == [(32.0, Timeout), (32.0, Terminated)]
    timeout = next(a for _, a in fired if isinstance(a, Timeout))
    assert timeout.timer == "B" and timeout.transaction is transaction
    assert transaction.state is State.TERMINATED and transaction.next_deadline() is None


def test_client_invite_tcp_never_retransmits_but_still_times_out() -> None:
    transaction = started_client(flow=TCP)
    fired = run_timers(transaction, until=3600.0)
    assert [(at, type(a)) for at, a in fired] == [(32.0, Timeout), (32.0, Terminated)]


def test_reliable_flag_at_creation_overrides_the_flow() -> None:
    transaction = started_client(flow=UDP, reliable=True)
    assert sends([a for _, a in run_timers(transaction, until=100.0)]) == []


def test_client_invite_timers_follow_the_settings() -> None:
    fast = TimerSettings(t1=0.1, t2=1.0)
    transaction = new_client_transaction(request(), UDP, timers=fast)
    transaction.start(10.0)
    fired = run_timers(transaction, until=100.0)
    assert [at for at, a in fired if isinstance(a, Send)] == pytest.approx(
        [10.1, 10.3, 10.7, 11.5, 13.1, 16.3]
    )
    assert [at for at, a in fired if isinstance(a, Timeout)] == pytest.approx([16.4])


def test_client_invite_provisional_stops_a_and_b() -> None:
    transaction = started_client()
    run_timers(transaction, until=0.5)  # one retransmission
    ringing = answer(transaction.request, 180)
    actions = transaction.receive_response(ringing, 0.7)
    assert actions == [Deliver(transaction, ringing)]
    assert transaction.state is State.PROCEEDING
    assert transaction.next_deadline() is None  # timer C is the proxy's, not ours
    assert run_timers(transaction, until=3600.0) == []


def test_client_invite_non_2xx_final_sends_the_ack_itself() -> None:
    invite = request()
    transaction = ClientInviteTransaction(invite, UDP, timers=TIMERS)
    transaction.start(0.0)
    busy = answer(invite, 486, to_tag="busy-tag")
    actions = transaction.receive_response(busy, 2.0)
    assert [type(a) for a in actions] == [Send, Deliver]
    ack_send, delivered = actions
    assert isinstance(ack_send, Send) and delivered == Deliver(transaction, busy)
    assert transaction.state is State.COMPLETED

    ack = parse_message(ack_send.data)
    assert isinstance(ack, Request)
    assert ack.method == "ACK" and str(ack.uri) == "sip:bob@192.0.2.20"
    # §17.1.1.3: one Via, the INVITE's top one, so the branch matches the server transaction.
    assert ack.headers.values("via") == ["SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bK-ours-1;rport"]
    assert ack.call_id == invite.call_id
    assert ack.headers.get("from") == invite.headers.get("from")
    assert ack.to_tag == "busy-tag"  # To from the response
    assert str(ack.cseq) == "314 ACK"
    assert ack.headers.get_all("route") == ["<sip:edge1.example;lr>", "<sip:edge2.example;lr>"]
    assert ack.headers.get("max-forwards") == "69"
    assert ack.body == b"" and ack.headers.get("content-length") == "0"
    assert "contact" not in ack.headers

    # A retransmitted final gets the same ACK again and is not passed up twice.
    again = transaction.receive_response(answer(invite, 486, to_tag="busy-tag"), 3.0)
    assert again == [Send(transaction, ack_send.message, ack_send.data, retransmission=True)]
    # Timer A stopped; timer D (32 s on UDP) ends the transaction.
    fired = run_timers(transaction, until=3600.0)
    assert [(at, type(a)) for at, a in fired] == [(34.0, Terminated)]


def test_client_invite_tcp_non_2xx_final_terminates_at_once() -> None:
    transaction = started_client(flow=TCP)
    actions = transaction.receive_response(answer(transaction.request, 404), 1.0)
    assert [type(a) for a in actions] == [Send, Deliver, Terminated]  # timer D is zero on TCP
    assert transaction.state is State.TERMINATED


def test_client_invite_2xx_goes_to_accepted_without_an_ack() -> None:
    transaction = started_client()
    ok = answer(transaction.request, 200, to_tag="fork-1")
    assert transaction.receive_response(ok, 1.0) == [Deliver(transaction, ok)]
    assert transaction.state is State.ACCEPTED
    # RFC 6026: further 2xx (retransmissions, other forks) still go up; others don't.
    second_fork = answer(transaction.request, 200, to_tag="fork-2")
    assert transaction.receive_response(second_fork, 2.0) == [Deliver(transaction, second_fork)]
    assert transaction.receive_response(answer(transaction.request, 486), 2.5) == []
    assert transaction.receive_response(answer(transaction.request, 180), 2.6) == []
    fired = run_timers(transaction, until=3600.0)
    assert [(at, type(a)) for at, a in fired] == [(33.0, Terminated)]  # timer M = 64*T1


def test_client_invite_transport_error_while_calling() -> None:
    transaction = started_client()
    actions = transaction.on_transport_error(0.1)
    assert actions == [TransportError(transaction), Terminated(transaction)]
    assert transaction.on_timer(100.0) == []


def test_late_timer_call_fires_the_end_timer_and_skips_the_missed_retransmissions() -> None:
    transaction = started_client()
    actions = transaction.on_timer(100.0)
    assert [type(a) for a in actions] == [Timeout, Terminated]


def test_late_timer_call_retransmits_once_and_reschedules_from_now() -> None:
    transaction = started_client()
    actions = transaction.on_timer(2.0)  # A was due at 0.5; 1.5 was missed
    assert [a.retransmission for a in sends(actions)] == [True]
    assert transaction.next_deadline() == 3.0  # now + the doubled interval


def test_client_transaction_needs_our_branch_and_is_no_ack() -> None:
    with pytest.raises(ValueError):
        new_client_transaction(request(branch="1234"), UDP, timers=TIMERS)
    with pytest.raises(ValueError):
        new_client_transaction(request("ACK"), UDP, timers=TIMERS)


def test_make_cancel_copies_the_invite_path() -> None:
    invite = request(extra="Content-Type: application/sdp\r\n")
    cancel = make_cancel(invite)
    parsed = parse_message(cancel.to_bytes())
    assert isinstance(parsed, Request)
    assert parsed.method == "CANCEL" and parsed.uri == invite.uri
    assert parsed.headers.values("via") == invite.headers.values("via")[:1]
    assert parsed.headers.get("to") == "<sip:bob@pbx.test>" and parsed.to_tag is None
    assert str(parsed.cseq) == "314 CANCEL"
    assert parsed.headers.get_all("route") == invite.headers.get_all("route")
    assert "content-type" not in parsed.headers


def test_make_ack_defaults_max_forwards() -> None:
    invite = request()
    invite.headers.remove("Max-Forwards")
    ack = make_ack(invite, answer(invite, 503))
    assert ack.headers.get("max-forwards") == "70"


# -- client non-INVITE (§17.1.2) ----------------------------------------------------------
def test_client_non_invite_udp_timer_e_caps_at_t2_until_timer_f() -> None:
    transaction = started_client("OPTIONS")
    assert isinstance(transaction, ClientNonInviteTransaction)
    fired = run_timers(transaction, until=3600.0)
    resent = [at for at, a in fired if isinstance(a, Send)]
    assert resent == [0.5, 1.5, 3.5, 7.5, 11.5, 15.5, 19.5, 23.5, 27.5, 31.5]
    assert [(at, type(a)) for at, a in fired if not isinstance(a, Send)] == [
        (32.0, Timeout),
        (32.0, Terminated),
    ]
    assert next(a for _, a in fired if isinstance(a, Timeout)).timer == "F"


def test_client_non_invite_proceeding_retransmits_every_t2_and_keeps_f() -> None:
    transaction = started_client("BYE")
    run_timers(transaction, until=0.5)  # E at 0.5; next due at 1.5
    trying = answer(transaction.request, 100, to_tag=None)
    assert transaction.receive_response(trying, 0.7) == [Deliver(transaction, trying)]
    assert transaction.state is State.PROCEEDING
    fired = run_timers(transaction, until=3600.0)
    assert [at for at, a in fired if isinstance(a, Send)] == [
        1.5,
        5.5,
        9.5,
        13.5,
        17.5,
        21.5,
        25.5,
        29.5,
    ]
    assert [(at, type(a)) for at, a in fired if not isinstance(a, Send)] == [
        (32.0, Timeout),
        (32.0, Terminated),
    ]


def test_client_non_invite_final_then_timer_k_absorbs_retransmissions() -> None:
    transaction = started_client("REGISTER")
    ok = answer(transaction.request, 200)
    assert transaction.receive_response(ok, 1.0) == [Deliver(transaction, ok)]
    assert transaction.state is State.COMPLETED
    assert transaction.receive_response(answer(transaction.request, 200), 2.0) == []
    fired = run_timers(transaction, until=3600.0)
    assert [(at, type(a)) for at, a in fired] == [(6.0, Terminated)]  # K = T4 on UDP


def test_client_non_invite_tcp_no_e_and_k_is_zero() -> None:
    transaction = started_client("OPTIONS", flow=TCP)
    assert transaction.next_deadline() == 32.0  # F only
    actions = transaction.receive_response(answer(transaction.request, 404), 1.0)
    assert [type(a) for a in actions] == [Deliver, Terminated]


def test_client_non_invite_transport_error_in_proceeding() -> None:
    transaction = started_client("OPTIONS")
    transaction.receive_response(answer(transaction.request, 100, to_tag=None), 0.1)
    assert [type(a) for a in transaction.on_transport_error(0.2)] == [TransportError, Terminated]


# -- server INVITE (§17.2.1, RFC 6026) --------------------------------------------------------
def test_server_invite_sends_100_trying_after_200_ms_of_tu_silence() -> None:
    transaction = new_server_transaction(request(extra="Timestamp: 54\r\n"), UDP, timers=TIMERS)
    assert transaction.start(0.0) == []
    fired = run_timers(transaction, until=0.19)
    assert fired == []
    fired = run_timers(transaction, until=1.0)
    assert [(at, type(a)) for at, a in fired] == [(0.2, Send)]
    (trying_send,) = sends([action for _, action in fired])
    trying = parse_message(trying_send.data)
    assert isinstance(trying, Response) and trying.status == 100
    assert trying.to_tag is None  # §8.2.6.2: no tag on a 100
    assert trying.headers.get_all("timestamp") == ["54"]  # §8.2.6.1, and only once
    assert trying.headers.values("via") == transaction.request.headers.values("via")
    assert str(trying.cseq) == "314 INVITE"
    assert transaction.next_deadline() is None  # sent once


def test_server_invite_tu_answering_in_time_suppresses_the_100() -> None:
    transaction = started_server()
    ringing = make_response(transaction.request, 180, to_tag="t1")
    actions = transaction.respond(ringing, 0.05)
    assert [a.message for a in sends(actions)] == [ringing]
    assert run_timers(transaction, until=3600.0) == []


def test_server_invite_proxy_mode_sends_100_at_once() -> None:
    transaction = new_server_transaction(request(), UDP, timers=TimerSettings(trying_delay=0))
    actions = transaction.start(0.0)
    assert len(actions) == 1 and isinstance(actions[0], Send)
    assert statuses(actions) == [100]
    assert transaction.next_deadline() is None


def test_server_invite_without_trying() -> None:
    transaction = started_server(timers=TimerSettings(trying_delay=None))
    assert transaction.next_deadline() is None
    assert transaction.receive_request(request(), 1.0) == []


def test_server_invite_retransmission_gets_the_latest_provisional_again() -> None:
    transaction = started_server()
    # Before any provisional: the caller is already retransmitting, so 100 Trying goes now.
    early = transaction.receive_request(request(), 0.1)
    assert statuses(early) == [100]
    assert transaction.next_deadline() is None
    ringing = make_response(transaction.request, 180, to_tag="t1")
    sent = sends(transaction.respond(ringing, 1.0))
    again = transaction.receive_request(request(), 1.5)
    assert again == [Send(transaction, ringing, sent[0].data, retransmission=True)]


def test_server_invite_udp_non_2xx_g_doubles_to_t2_until_h() -> None:
    transaction = started_server()
    busy = make_response(transaction.request, 486, to_tag="t1")
    first = sends(transaction.respond(busy, 0.0))
    assert transaction.state is State.COMPLETED
    fired = run_timers(transaction, until=3600.0)
    resent = [(at, a) for at, a in fired if isinstance(a, Send)]
    assert [at for at, _ in resent] == [0.5, 1.5, 3.5, 7.5, 11.5, 15.5, 19.5, 23.5, 27.5, 31.5]
    assert all(a.data == first[0].data and a.retransmission for _, a in resent)
    assert [(at, type(a)) for at, a in fired if not isinstance(a, Send)] == [
        (32.0, Timeout),
        (32.0, Terminated),
    ]
    assert next(a for _, a in fired if isinstance(a, Timeout)).timer == "H"


def test_server_invite_completed_resends_final_for_a_retransmitted_invite() -> None:
    transaction = started_server()
    busy = make_response(transaction.request, 486, to_tag="t1")
    first = sends(transaction.respond(busy, 0.0))
    again = transaction.receive_request(request(), 0.3)
    assert again == [Send(transaction, busy, first[0].data, retransmission=True)]


def test_server_invite_ack_confirms_then_timer_i() -> None:
    transaction = started_server()
    transaction.respond(make_response(transaction.request, 404, to_tag="t1"), 0.0)
    run_timers(transaction, until=0.5)  # one G retransmission
    assert transaction.receive_request(request("ACK"), 0.8) == []
    assert transaction.state is State.CONFIRMED
    # ACK and INVITE retransmissions are absorbed; G and H are off; I = T4 on UDP.
    assert transaction.receive_request(request("ACK"), 1.0) == []
    assert transaction.receive_request(request(), 1.1) == []
    fired = run_timers(transaction, until=3600.0)
    assert [(at, type(a)) for at, a in fired] == [(5.8, Terminated)]


def test_server_invite_tcp_no_g_and_ack_terminates_at_once() -> None:
    transaction = started_server(flow=TCP)
    transaction.respond(make_response(transaction.request, 404, to_tag="t1"), 0.0)
    assert transaction.next_deadline() == 32.0  # H only
    assert transaction.receive_request(request("ACK"), 0.8) == [Terminated(transaction)]


def test_server_invite_2xx_accepted_absorbs_invites_and_passes_acks_up() -> None:
    transaction = started_server()
    ok = make_response(transaction.request, 200, to_tag="t1")
    assert [a.message for a in sends(transaction.respond(ok, 0.0))] == [ok]
    assert transaction.state is State.ACCEPTED
    assert transaction.receive_request(request(), 0.5) == []
    # The TU (a UAS core, or a proxy relaying the downstream UAS) retransmits the 2xx itself.
    assert [a.retransmission for a in sends(transaction.respond(ok, 0.5))] == [False]
    ack = request("ACK")
    assert transaction.receive_request(ack, 0.6) == [Deliver(transaction, ack)]
    assert transaction.respond(make_response(transaction.request, 486), 0.7) == []
    errors = transaction.on_transport_error(0.8)
    assert errors == [TransportError(transaction)] and transaction.state is State.ACCEPTED
    fired = run_timers(transaction, until=3600.0)
    assert [(at, type(a)) for at, a in fired] == [(32.0, Terminated)]  # timer L = 64*T1


def test_server_invite_transport_error_while_proceeding() -> None:
    transaction = started_server()
    transaction.respond(make_response(transaction.request, 180, to_tag="t"), 0.0)
    assert transaction.on_transport_error(0.1) == [
        TransportError(transaction),
        Terminated(transaction),
    ]
    assert transaction.respond(make_response(transaction.request, 200), 0.2) == []


def test_terminate_by_the_tu() -> None:
    transaction = started_server()
    assert transaction.terminate() == [Terminated(transaction)]
    assert transaction.terminate() == []
    assert transaction.next_deadline() is None


# -- server non-INVITE (§17.2.2) ----------------------------------------------------------
def test_server_non_invite_absorbs_until_answered_then_resends_final_until_j() -> None:
    transaction = started_server("REGISTER")
    assert isinstance(transaction, ServerNonInviteTransaction)
    assert transaction.next_deadline() is None  # no 100 Trying for non-INVITE
    assert transaction.receive_request(request("REGISTER"), 0.2) == []
    ok = make_response(transaction.request, 200, to_tag="r1")
    first = sends(transaction.respond(ok, 0.3))
    assert transaction.state is State.COMPLETED
    again = transaction.receive_request(request("REGISTER"), 1.0)
    assert again == [Send(transaction, ok, first[0].data, retransmission=True)]
    # §17.2.2: other finals from the TU are discarded.
    assert transaction.respond(make_response(transaction.request, 500), 1.1) == []
    assert transaction.last_response is ok
    fired = run_timers(transaction, until=3600.0)
    assert [(at, type(a)) for at, a in fired] == [(32.3, Terminated)]  # J = 64*T1 on UDP


def test_server_non_invite_provisional_is_resent_for_retransmissions() -> None:
    transaction = started_server("SUBSCRIBE")
    trying = make_response(transaction.request, 100)
    sent = sends(transaction.respond(trying, 0.0))
    assert transaction.state is State.PROCEEDING
    again = transaction.receive_request(request("SUBSCRIBE"), 0.5)
    assert again == [Send(transaction, trying, sent[0].data, retransmission=True)]


def test_server_non_invite_tcp_j_is_zero() -> None:
    transaction = started_server("OPTIONS", flow=TCP)
    actions = transaction.respond(make_response(transaction.request, 200), 0.0)
    assert [type(a) for a in actions] == [Send, Terminated]


def test_server_transaction_is_never_made_for_an_ack() -> None:
    with pytest.raises(ValueError):
        new_server_transaction(request("ACK"), UDP, timers=TIMERS)
    assert isinstance(started_server(), ServerInviteTransaction)


def test_send_names_its_flow_and_transaction() -> None:
    transaction = started_server("OPTIONS", flow=TCP)
    (send,) = sends(transaction.respond(make_response(transaction.request, 200), 0.0))
    assert send.transaction is transaction and send.flow is TCP


@pytest.mark.parametrize(
    "lines",
    [
        "",
        "Timestamp: 54 0.2\r\n",
        "v: SIP/2.0/UDP 203.0.113.5;branch=z9hG4bK-third, SIP/2.0/TCP [2001:db8::5]:5070\r\n",
        "Timestamp: 1\r\nVia: SIP/2.0/UDP 203.0.113.5:5060;branch=z9hG4bK-x\r\nSubject: hi\r\n",
        "To: <sip:carol@pbx.test>;tag=already\r\n",
        "t: <sip:bob@pbx.test>\r\ni: second-call-id\r\nf: <sip:eve@pbx.test>;tag=e\r\n",
    ],
)
def test_our_100_trying_is_the_response_make_response_prints(lines: str) -> None:
    """The 100 goes out as the Response the transaction keeps (and resends) prints, which
    is the 100 make_response builds: its lines once each (Timestamp once)."""
    incoming = request(extra=lines)
    transaction = new_server_transaction(incoming, UDP, timers=TimerSettings(trying_delay=0.0))
    (trying,) = sends(transaction.start(0.0))
    assert isinstance(trying.message, Response) and trying.message.status == 100
    assert trying.data == trying.message.to_bytes()
    assert trying.data == make_response(incoming, 100).to_bytes()
    assert transaction.last_response is trying.message
    # A retransmitted INVITE gets the very same bytes again.
    (again,) = sends(transaction.receive_request(request(extra=lines), 0.1))
    assert again.data == trying.data and again.retransmission


def test_duration_tables_say_what_timer_duration_says() -> None:
    """Transactions read their timers from a table made once per settings object: every
    letter, both kinds of transport, for settings that differ and settings that are equal."""
    settings = [
        TimerSettings(),
        TimerSettings(),  # equal, another object
        TimerSettings(t1=0.1, t2=0.4, t4=1.0, timer_d=0.0, trying_delay=None),
        TimerSettings(t1=2.0, t2=8.0, trying_delay=0.0),
    ]
    for _ in range(2):  # built, then found again
        for timers in settings:
            for reliable in (False, True):
                table = duration_table(timers, reliable)
                assert table == {
                    letter: timer_duration(letter, timers, reliable) for letter in TIMER_RULES
                }
    fast = TimerSettings(t1=0.1, t2=0.4)
    transaction = new_client_transaction(request("OPTIONS"), UDP, timers=fast)
    transaction.start(0.0)
    assert transaction.next_deadline() == pytest.approx(0.1)  # timer E is fast's T1
    over_tcp = new_client_transaction(request("OPTIONS"), TCP, timers=fast)
    over_tcp.start(0.0)
    assert over_tcp.next_deadline() == pytest.approx(6.4)  # no E over TCP: F, 64 x T1
