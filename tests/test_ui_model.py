"""The console's models, without a terminal: dialogs from raw traffic, filters, history
bounds, the collapsed security feed and the message rate."""

from __future__ import annotations

from core.events import SecurityEvent, SipTraffic, SourceBanned, SourceUnbanned
from screens.dialogs import DialogLog, TrafficFilter, export_text, summarise
from screens.state import RateMeter, SecurityFeed

PHONE = ("192.0.2.10", 5062)
SERVER = ("198.51.100.1", 5060)


def request(
    method: str,
    call_id: str,
    *,
    user: str = "alice",
    to: str = "bob",
    cseq: int = 1,
    compact: bool = False,
) -> bytes:
    names = ("i", "f", "t") if compact else ("Call-ID", "From", "To")
    return (
        f"{method} sip:{to}@pbx.test SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP 192.0.2.10:5062;branch=z9hG4bK{cseq}\r\n"
        f'{names[1]}: "Al" <sip:{user}@pbx.test>;tag=1\r\n{names[2]}: <sip:{to}@pbx.test>\r\n'
        f"{names[0]}: {call_id}\r\nCSeq: {cseq} {method}\r\nUser-Agent: deskphone\r\n"
        "Content-Length: 0\r\n\r\n"
    ).encode()


def response(status: str, method: str, call_id: str, cseq: int = 1) -> bytes:
    return (
        f"SIP/2.0 {status}\r\nVia: SIP/2.0/UDP 192.0.2.10:5062;branch=z9hG4bK{cseq}\r\n"
        "From: <sip:alice@pbx.test>;tag=1\r\nTo: <sip:bob@pbx.test>;tag=2\r\n"
        f"Call-ID: {call_id}\r\nCSeq: {cseq} {method}\r\nContent-Length: 0\r\n\r\n"
    ).encode()


def inbound(data: bytes, at: float = 100.0, remote: tuple[str, int] = PHONE) -> SipTraffic:
    return SipTraffic("in", "udp", remote, SERVER, data, at=at)


def outbound(data: bytes, at: float = 100.0) -> SipTraffic:
    return SipTraffic("out", "udp", PHONE, SERVER, data, at=at)


def test_summarise_reads_requests_responses_and_compact_headers() -> None:
    invite = summarise(inbound(request("INVITE", "c1", compact=True)))
    assert (invite.call_id, invite.method, invite.status, invite.label) == (
        "c1",
        "INVITE",
        0,
        "INVITE",
    )
    assert (invite.from_user, invite.to_user, invite.user_agent) == ("alice", "bob", "deskphone")
    assert invite.source == PHONE and invite.destination == SERVER
    ringing = summarise(outbound(response("180 Ringing", "INVITE", "c1")))
    assert (ringing.method, ringing.status, ringing.label) == ("INVITE", 180, "180 Ringing")
    assert ringing.source == SERVER and ringing.destination == PHONE


def test_garbage_groups_by_source_as_unparseable() -> None:
    log = DialogLog()
    log.add([inbound(b"\x00\x01garbage", remote=("203.0.113.9", 1)) for _ in range(3)])
    (dialog,) = list(log)
    assert dialog.call_id == "unparsed 203.0.113.9:1"
    assert dialog.state == "UNPARSEABLE" and dialog.message_count == 3
    assert dialog.messages[0].label == "(unparseable)"


def test_invite_dialog_states_follow_the_call() -> None:
    log = DialogLog()
    steps = [
        (inbound(request("INVITE", "c1")), "CALL SETUP"),
        (outbound(response("407 Proxy Authentication Required", "INVITE", "c1")), "CHALLENGED"),
        (inbound(request("INVITE", "c1", cseq=2)), "CALL SETUP"),
        (outbound(response("180 Ringing", "INVITE", "c1", 2)), "RINGING"),
        (outbound(response("200 OK", "INVITE", "c1", 2)), "IN CALL"),
        (inbound(request("ACK", "c1", cseq=2)), "IN CALL"),
        (inbound(request("BYE", "c1", cseq=3)), "COMPLETED"),
        (outbound(response("200 OK", "BYE", "c1", 3)), "COMPLETED"),
    ]
    for event, state in steps:
        log.add([event])
        assert log.get("c1").state == state  # type: ignore[union-attr]
    dialog = log.get("c1")
    assert dialog is not None
    assert (dialog.method, dialog.from_user, dialog.to_user, dialog.message_count) == (
        "INVITE",
        "alice",
        "bob",
        8,
    )
    assert dialog.source == "192.0.2.10:5062"


def test_rejected_cancelled_and_non_invite_states() -> None:
    log = DialogLog()
    log.add(
        [inbound(request("INVITE", "busy")), outbound(response("486 Busy Here", "INVITE", "busy"))]
    )
    log.add([inbound(request("INVITE", "gone")), inbound(request("CANCEL", "gone"))])
    log.add(
        [
            inbound(request("REGISTER", "reg")),
            outbound(response("401 Unauthorized", "REGISTER", "reg")),
        ]
    )
    log.add([inbound(request("OPTIONS", "opt"))])
    states = {dialog.call_id: dialog.state for dialog in log}
    assert states == {"busy": "BUSY", "gone": "CANCELLED", "reg": "401 Unauthorized", "opt": "SENT"}


def test_history_is_bounded_and_drops_are_counted() -> None:
    log = DialogLog(max_dialogs=3, max_messages=2)
    log.add([inbound(request("OPTIONS", f"c{i}")) for i in range(5)])
    assert [dialog.call_id for dialog in log] == ["c2", "c3", "c4"]
    assert log.dropped_dialogs == 2 and log.dropped_messages == 2
    log.add([inbound(request("OPTIONS", "c4", cseq=n)) for n in (2, 3)])
    dialog = log.get("c4")
    assert dialog is not None and len(dialog.messages) == 2 and dialog.message_count == 3
    assert log.dropped_messages == 3
    log.add([], missed=7)
    assert log.missed == 7 and log.total_messages == 7
    log.clear()
    assert len(log) == 0 and log.dropped_messages == log.missed == 0


def test_filter_parses_prefixes_and_matches_each_part() -> None:
    parsed = TrafficFilter.parse("m:invite u:ALICE a:192.0.2.10 Deskphone extra")
    assert parsed == TrafficFilter(
        text="deskphone extra", user="alice", address="192.0.2.10", method="INVITE"
    )
    assert TrafficFilter.parse("").empty and TrafficFilter.parse("u:").text == "u:"
    log = DialogLog()
    log.add(
        [
            inbound(request("INVITE", "c1")),
            inbound(request("REGISTER", "c2", user="carol", to="carol")),
        ]
    )
    log.add([inbound(request("OPTIONS", "c3"), remote=("203.0.113.7", 5060))])

    def listed(query: str) -> list[str]:
        wanted = TrafficFilter.parse(query)
        return [dialog.call_id for dialog in log if wanted.matches(dialog)]

    assert listed("m:INVITE") == ["c1"]
    assert listed("u:carol") == ["c2"]
    assert listed("a:203.0.113") == ["c3"]
    assert listed("REGISTER sip:carol") == ["c2"]
    assert listed("u:alice m:options") == ["c3"]
    assert listed("nothing-like-this") == []


def test_export_text_writes_each_message_with_its_route() -> None:
    log = DialogLog()
    log.add([inbound(request("OPTIONS", "c1")), outbound(response("200 OK", "OPTIONS", "c1"))])
    text = export_text(log.get("c1").messages)  # type: ignore[union-attr]
    assert "UDP 192.0.2.10:5062 -> 198.51.100.1:5060\nOPTIONS sip:bob@pbx.test SIP/2.0\n" in text
    assert "UDP 198.51.100.1:5060 -> 192.0.2.10:5062\nSIP/2.0 200 OK\n" in text
    assert "\r" not in text


def test_security_feed_collapses_repeats_and_ranks_offenders() -> None:
    feed = SecurityFeed(max_rows=3)
    feed.add([SecurityEvent("auth-failed", "203.0.113.9", "wrong password", user="alice", at=1.0)])
    feed.add([SecurityEvent("auth-failed", "203.0.113.9", "wrong password", user="alice", at=2.0)])
    feed.add(
        [
            SecurityEvent(
                "scanner-dropped",
                "198.51.100.66",
                "",
                user_agent="friendly-scanner",
                count=5,
                at=3.0,
            )
        ]
    )
    # A ban and an unban are security decisions like any other: one row each.
    feed.add(
        [SourceBanned("banned", "203.0.113.9", "brute force", until=999.0, reason="x", at=4.0)]
    )
    feed.add([SourceUnbanned("unbanned", "203.0.113.9", "admin", at=5.0)])
    keys = list(feed.rows)
    assert keys == ["scanner-dropped|198.51.100.66", "banned|203.0.113.9", "unbanned|203.0.113.9"]
    # The oldest row went (max_rows=3); its count lives on in the offender ranking.
    assert feed.top_offenders() == [("198.51.100.66", 5), ("203.0.113.9", 3)]
    assert "friendly-scanner" in feed.rows["scanner-dropped|198.51.100.66"].detail
    feed.add([SecurityEvent("scanner-dropped", "198.51.100.66", "", count=2, at=6.0)])
    row = feed.rows["scanner-dropped|198.51.100.66"]
    assert row.count == 7 and row.last_at == 6.0 and row.first_at == 3.0
    assert list(feed.rows)[-1] == row.key


def test_rate_meter_measures_over_a_second_and_keeps_history() -> None:
    meter = RateMeter(history_seconds=5)
    meter.sample(0, 10.0)
    meter.sample(50, 10.5)
    assert meter.rate == 100.0
    meter.sample(150, 11.0)
    assert meter.rate == 150.0
    meter.sample(150, 12.5)
    assert meter.rate == 0.0
    assert list(meter.history)[-2:] == [150.0, 0.0]


def test_summarise_reads_headers_in_any_case_and_spacing() -> None:
    data = (
        b"SIP/2.0 486 Busy Here\r\nvia: SIP/2.0/UDP 192.0.2.10:5062\r\n"
        b"FROM : <sip:carol@pbx.test>;tag=1\r\nt:<sip:dave@pbx.test>;tag=2\r\n"
        b"CALL-ID\t:  odd-case-1 \r\ncseq:   7   invite\r\nuser-agent: softphone\r\n\r\n"
    )
    message = summarise(inbound(data))
    assert (message.call_id, message.method, message.status) == ("odd-case-1", "INVITE", 486)
    users = (message.from_user, message.to_user, message.user_agent)
    assert users == ("carol", "dave", "softphone")
    # A header name inside a value or the body is not a header.
    tricky = request("OPTIONS", "real-id") + b"Call-ID: in-the-body\r\n"
    assert summarise(inbound(tricky)).call_id == "real-id"
