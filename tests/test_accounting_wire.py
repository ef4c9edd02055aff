"""Accounting against hostile or repeated input on the wire (a listener playing the gateway),
and the meter's arithmetic without sockets."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from conftest import start_pbx
from test_trunks import CARRIER_IP, Caller, Peer, ack_for, grant_outbound

from core.accounting.cdrs import MAX_CONTACT_CHARS, _contact_uri
from core.accounting.limits import SpendLedger, SpendLimit
from core.accounting.meter import Meter, RunningCall
from core.accounting.rates import Rate
from core.pbx import Pbx
from core.settings import DialplanSettings
from core.sip.message import Request, make_response
from core.store.accounting import CdrFilter
from core.store.rows import CdrRow


@pytest.fixture
async def pbx(tmp_path: Path) -> AsyncIterator[Pbx]:
    server = await start_pbx(tmp_path, dialplan=DialplanSettings(country_code="44"))
    try:
        yield server
    finally:
        await server.stop()


async def test_a_retransmitted_refused_invite_leaves_one_cdr(pbx: Pbx) -> None:
    await grant_outbound(pbx, deny_prefixes=("01632",))
    async with Peer(pbx, user="alice") as alice, Peer(pbx, CARRIER_IP, "gw") as gateway:
        await pbx.admin.add_carrier(
            "acme", [f"{CARRIER_IP}/32"], gateway=f"{CARRIER_IP}:{gateway.port}"
        )
        call_id, invite = await Caller(alice).call("01632960555")
        refused = await alice.expect(403)
        for _ in range(3):  # the phone did not hear the 403: it sends the INVITE again
            alice.send(invite)
        await asyncio.sleep(0.3)
        alice.send(ack_for(invite, refused))
        assert not gateway.received("INVITE")
    await pbx.store.flush()
    cdrs = await pbx.store.query_cdrs(CdrFilter(), limit=10)
    assert [(c.call_id, c.disposition, c.status, c.hangup_side) for c in cdrs] == [
        (call_id, "refused by policy", 403, "pbx")
    ]
    assert (cdrs[0].dialled, cdrs[0].number) == ("01632960555", "441632960555")
    assert "denied prefix" in cdrs[0].reason


async def test_a_gateways_hostile_contact_is_bounded_in_the_cdr(pbx: Pbx) -> None:
    await grant_outbound(pbx)
    async with Peer(pbx, user="alice") as alice, Peer(pbx, CARRIER_IP, "gw") as gateway:
        await pbx.admin.add_carrier(
            "acme", [f"{CARRIER_IP}/32"], gateway=f"{CARRIER_IP}:{gateway.port}"
        )
        call_id, _invite = await Caller(alice).call("01632960555")
        sent = await gateway.expect("INVITE")
        assert isinstance(sent, Request)
        hostile = "<sip:" + "=cmd|'/c calc'!A0" + "x" * 5_000 + f"@{CARRIER_IP}>"
        record_route = [("Record-Route", v) for v in sent.headers.get_all("record-route")]
        gateway.send(
            make_response(sent, 200, to_tag="gw1", extra=[("Contact", hostile), *record_route])
        )
        await alice.expect(200, where=lambda m: m.call_id == call_id)
        # The gateway hangs up at once (its BYE goes to alice; we only need the CDR).
        branch = "z9hG4bK" + secrets.token_hex(6)
        gateway.send(
            "\r\n".join(
                [
                    f"BYE sip:alice@127.0.0.1:{alice.port} SIP/2.0",
                    f"Via: SIP/2.0/UDP {CARRIER_IP}:{gateway.port};branch={branch}",
                    "Max-Forwards: 70",
                    f"From: {sent.headers.get('to')};tag=gw1",
                    f"To: {sent.headers.get('from')}",
                    f"Call-ID: {call_id}",
                    "CSeq: 1 BYE",
                    "Content-Length: 0",
                    "",
                    "",
                ]
            )
        )
        bye = await alice.expect("BYE")
        alice.respond(bye, 200)
        await asyncio.sleep(0.2)
    await pbx.store.flush()
    [cdr] = await pbx.store.query_cdrs(CdrFilter(), limit=10)
    assert cdr.disposition == "answered" and cdr.hangup_side == "callee"
    assert len(cdr.contact) == MAX_CONTACT_CHARS and cdr.contact.startswith("sip:=cmd")


def test_contact_uri_forms() -> None:
    assert _contact_uri('"Bob" <sip:bob@host:5060;ob>;expires=60') == "sip:bob@host:5060;ob"
    assert _contact_uri("sip:bob@host;expires=60") == "sip:bob@host"
    assert _contact_uri("<sip:unterminated@host") == "sip:unterminated@host"
    assert _contact_uri("") == ""
    assert len(_contact_uri("<" + "a" * 10_000 + ">")) == MAX_CONTACT_CHARS


# -- the meter ------------------------------------------------------------------------------
def outbound_cdr(answered_after: float | None, talk: float) -> CdrRow:
    start = 1_772_445_600.0
    answered = None if answered_after is None else start + answered_after
    ended = (answered or start) + talk
    return CdrRow(
        "c", "alice", "+441632960555", "127.0.0.1", "outbound", start, answered, ended, 200,
        carrier="acme", number="441632960555",
    )  # fmt: skip


def test_meter_bills_outbound_carrier_cdrs_only() -> None:
    meter = Meter("EUR", SpendLedger())
    meter.load_rates({"acme": ("GBP", [Rate("44", 30_000, 60, 60, 10_000)])})
    cdr = meter.bill(outbound_cdr(2.0, 61.0))
    assert (cdr.rate_prefix, cdr.rate_increments, cdr.billable_seconds) == ("44", "60/60", 120)
    assert (cdr.cost, cdr.currency) == (70_000, "GBP")
    assert meter.ledger.day_by_user == {"alice": 70_000}
    unanswered = meter.bill(outbound_cdr(None, 0.0))
    assert (unanswered.cost, unanswered.billable_seconds) == (0, 0)
    internal = outbound_cdr(2.0, 61.0)
    internal.direction = "internal"
    assert meter.bill(internal).cost == 0 and internal.rate_prefix == ""
    elsewhere = outbound_cdr(2.0, 61.0)
    elsewhere.number = "33123456789"
    assert meter.bill(elsewhere).cost == 0 and meter.unrated == 1


def test_meter_ends_the_calls_that_cross_a_limit() -> None:
    meter = Meter("EUR", SpendLedger(user_default=SpendLimit(per_day=100_000)))
    meter.load_rates({"acme": ("EUR", [Rate("44", 30_000, 60, 60, 0)])})
    now = 1_772_445_600.0
    meter.load_spend(now, {"alice": 40_000}, {"alice": 40_000}, {})
    calls = [RunningCall("a", "alice", "acme", "441632960555", now - 30)]
    assert meter.calls_to_end(calls, now) == []  # 0.04 + 0.03 (first minute) ≤ 0.10
    calls = [RunningCall("a", "alice", "acme", "441632960555", now - 121)]
    [(call_id, breach)] = meter.calls_to_end(calls, now)  # 0.04 + 0.09 > 0.10
    assert call_id == "a" and breach.spent == 130_000 and breach.limit == 100_000
    unrated = [RunningCall("b", "alice", "acme", "33123", now - 999)]
    assert meter.calls_to_end(unrated, now) == []
