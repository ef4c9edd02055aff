"""Accounting over real sockets: each outcome of a call leaves exactly one CDR with the right
disposition, side and cost, and spend limits refuse or end calls.

alice's phone is SIPp (call_*.xml, answering our 407); the carrier's gateway is a SIPp UAS on
127.0.0.2. The Pbx runs on a clock the test holds (`HeldClock`): it moves only when the test
moves it, so "61 seconds after the answer" is exact without waiting 61 seconds, and the
billing increments are checked to the second on a real call.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from pathlib import Path

import pytest
from conftest import USERS, make_settings, start_pbx
from support.ports import free_port
from support.sipp import SippResult, run_sipp
from test_trunks_sipp import register_port, start_uas

from core.accounting.rates import parse_money
from core.events import SecurityEvent, SipTraffic
from core.pbx import Pbx
from core.proxy.calls import ANSWERED, RINGING
from core.settings import AccountingSettings, DialplanSettings, ProxySettings
from core.sip.message import Response
from core.sip.parser import parse_message
from core.store.accounting import CdrFilter
from core.store.ops import InsertCdr
from core.store.rows import CdrRow

pytestmark = pytest.mark.sipp

DOMAIN = "pbx.test"
CARRIER_IP = "127.0.0.2"
NUMBER = "01632960555"  # national, dialled with the trunk prefix
CANONICAL = "441632960555"
DAY = 86_400
RATES = "prefix,per_minute,first_increment,increment,connection\n"


class HeldClock:
    """Wall-clock time that stands still until `advance` (the Pbx's `clock`)."""

    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@dataclass
class Setup:
    pbx: Pbx
    clock: HeldClock
    gateway_port: int
    tmp_path: Path

    @property
    def server(self) -> tuple[str, int]:
        bound = self.pbx.listening[0]
        return bound.host, bound.port


async def start(
    tmp_path: Path, accounting: AccountingSettings | None = None, **changes: object
) -> Setup:
    clock = HeldClock()
    settings = make_settings(
        tmp_path / "pbx.db", free_port(), dialplan=DialplanSettings(country_code="44"), **changes
    )
    if accounting is not None:
        settings = replace(settings, accounting=accounting)
    pbx = Pbx(settings, clock=clock)
    await pbx.start()
    for username, password in USERS.items():
        await pbx.admin.add_user(username, password)
    await pbx.admin.update_user("alice", outbound_policy="national")
    gateway_port = free_port(CARRIER_IP)
    await pbx.admin.add_carrier(
        "acme", [f"{CARRIER_IP}/32"], gateway=f"{CARRIER_IP}:{gateway_port}"
    )
    return Setup(pbx, clock, gateway_port, tmp_path)


@pytest.fixture
async def setup(tmp_path: Path) -> AsyncIterator[Setup]:
    running = await start(tmp_path)
    try:
        yield running
    finally:
        await running.pbx.stop()


async def import_rates(setup: Setup, lines: str) -> None:
    await setup.pbx.admin.accounting.import_rates("acme", RATES + lines, "EUR")


async def alice_dials(
    setup: Setup, scenario: str, callee: str = NUMBER, pause_ms: int = 100
) -> SippResult:
    host, port = setup.server
    csv = setup.tmp_path / "alice.csv"
    csv.write_text(f"SEQUENTIAL\nalice;[authentication username=alice password={USERS['alice']}]\n")
    return await run_sipp(
        scenario,
        host,
        port,
        inf=csv,
        local_port=free_port(),
        keys={"domain": DOMAIN, "callee": callee},
        extra=["-auth_uri", f"{callee}@{DOMAIN}", "-d", str(pause_ms)],
        timeout=15,
    )


async def when_answered(setup: Setup, timeout: float = 10.0) -> None:
    """Wait until a call is answered, then let the ACK through."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while loop.time() < deadline:
        if any(info.state == ANSWERED for info in setup.pbx.proxy.calls.snapshot()):
            await asyncio.sleep(0.2)
            return
        await asyncio.sleep(0.01)
    raise AssertionError("no call was answered")


async def the_cdrs(setup: Setup) -> list[CdrRow]:
    await setup.pbx.store.flush()
    return await setup.pbx.store.query_cdrs(CdrFilter(), limit=100)


def statuses_to(setup: Setup, ip: str) -> list[int]:
    events, _cursor, _missed = setup.pbx.bus.traffic.read_since(0)
    return [
        message.status
        for event in events
        if isinstance(event, SipTraffic) and event.direction == "out" and event.remote[0] == ip
        for message in [parse_message(event.data)]
        if isinstance(message, Response)
    ]


def toll_fraud_events(setup: Setup) -> list[SecurityEvent]:
    events, _cursor, _missed = setup.pbx.bus.feed.read_since(0)
    return [e for e in events if isinstance(e, SecurityEvent) and e.action == "toll-fraud"]


# -- answered calls: the increments on the wire -----------------------------------------------
@pytest.mark.parametrize(
    ("increments", "billable", "cost"),
    [
        ("60,60", 120, parse_money("0.06") + parse_money("0.01")),  # two minutes + connection
        ("1,1", 61, parse_money("0.0305") + parse_money("0.01")),  # 61 s at 0.03 a minute
    ],
)
async def test_a_61_second_outbound_call_is_billed_by_its_increments(
    setup: Setup, increments: str, billable: int, cost: int
) -> None:
    await import_rates(setup, f"4417,0.50,60,60,0\n44,0.03,{increments},0.01\n33,0.10,1,1,0\n")
    gateway = await start_uas(setup.pbx, "uas_answer.xml", CARRIER_IP, setup.gateway_port)
    caller = asyncio.create_task(alice_dials(setup, "call_basic.xml", pause_ms=1_500))
    await when_answered(setup)
    setup.clock.advance(61.0)
    result, gateway_result = await caller, await gateway
    assert result.returncode == 0, str(result)
    assert gateway_result.returncode == 0, str(gateway_result)
    [cdr] = await the_cdrs(setup)
    assert (cdr.disposition, cdr.hangup_side, cdr.status) == ("answered", "caller", 200)
    assert cdr.duration == 61.0
    assert (cdr.carrier, cdr.gateway) == ("acme", f"{CARRIER_IP}:{setup.gateway_port}")
    assert (cdr.dialled, cdr.number) == (NUMBER, CANONICAL)
    assert cdr.contact == f"sip:callee@{CARRIER_IP}:{setup.gateway_port};transport=UDP"
    assert (cdr.rate_prefix, cdr.rate_per_minute) == ("44", 30_000)
    assert (cdr.billable_seconds, cdr.cost, cdr.currency) == (billable, cost, "EUR")


async def test_longest_prefix_prices_the_call(setup: Setup) -> None:
    await import_rates(setup, "44,0.03,60,60,0\n441632,0.60,60,60,0\n")
    gateway = await start_uas(setup.pbx, "uas_answer.xml", CARRIER_IP, setup.gateway_port)
    caller = asyncio.create_task(alice_dials(setup, "call_basic.xml", pause_ms=1_500))
    await when_answered(setup)
    setup.clock.advance(30.0)
    assert (await caller).returncode == 0 and (await gateway).returncode == 0
    [cdr] = await the_cdrs(setup)
    assert (cdr.rate_prefix, cdr.rate_per_minute, cdr.rate_increments) == (
        "441632",
        600_000,
        "60/60",
    )
    assert (cdr.billable_seconds, cdr.cost) == (60, 600_000)


async def test_callee_hangs_up(setup: Setup) -> None:
    await import_rates(setup, "44,0.03,1,1,0\n")
    gateway = await start_uas(setup.pbx, "uas_hangup.xml", CARRIER_IP, setup.gateway_port)
    result = await alice_dials(setup, "call_wait_bye.xml")
    assert result.returncode == 0, str(result)
    assert (await gateway).returncode == 0
    [cdr] = await the_cdrs(setup)
    assert (cdr.disposition, cdr.hangup_side, cdr.carrier) == ("answered", "callee", "acme")
    # The held clock did not move: an answered call pays its first increment, 1 s.
    assert (cdr.billable_seconds, cdr.cost) == (1, 500)


async def test_busy_gateway(setup: Setup) -> None:
    await import_rates(setup, "44,0.03,60,60,0.01\n")
    gateway = await start_uas(setup.pbx, "uas_busy.xml", CARRIER_IP, setup.gateway_port)
    result = await alice_dials(setup, "call_rejected.xml")
    assert result.returncode == 0, str(result)
    assert (await gateway).returncode == 0
    assert 486 in statuses_to(setup, "127.0.0.1")
    [cdr] = await the_cdrs(setup)
    assert (cdr.disposition, cdr.hangup_side, cdr.status) == ("busy", "callee", 486)
    assert (cdr.carrier, cdr.billable_seconds, cdr.cost) == ("acme", 0, 0)
    assert cdr.rate_prefix == "44"  # matched, but an unanswered call costs nothing


async def test_caller_cancels(setup: Setup) -> None:
    await import_rates(setup, "44,0.03,60,60,0.01\n")
    gateway = await start_uas(setup.pbx, "uas_ring.xml", CARRIER_IP, setup.gateway_port)
    result = await alice_dials(setup, "call_cancel.xml", pause_ms=300)
    assert result.returncode == 0, str(result)
    await gateway
    [cdr] = await the_cdrs(setup)
    assert (cdr.disposition, cdr.hangup_side, cdr.status, cdr.cost) == (
        "cancelled",
        "caller",
        487,
        0,
    )


async def test_no_answer(tmp_path: Path) -> None:
    setup = await start(tmp_path, proxy=ProxySettings(invite_timeout=0.5))
    try:
        await import_rates(setup, "44,0.03,60,60,0.01\n")
        gateway = await start_uas(setup.pbx, "uas_ring.xml", CARRIER_IP, setup.gateway_port)
        caller = asyncio.create_task(alice_dials(setup, "call_rejected.xml"))
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 10
        while not any(i.state == RINGING for i in setup.pbx.proxy.calls.snapshot()):
            assert loop.time() < deadline, "the call never rang"
            await asyncio.sleep(0.01)
        setup.clock.advance(1.0)  # past the ringing timeout
        assert (await caller).returncode == 0 and (await gateway).returncode == 0
        assert statuses_to(setup, "127.0.0.1")[-1] == 408
        [cdr] = await the_cdrs(setup)
        assert (cdr.disposition, cdr.hangup_side, cdr.status, cdr.cost) == (
            "no answer",
            "pbx",
            408,
            0,
        )
    finally:
        await setup.pbx.stop()


async def test_a_forked_call_leaves_one_cdr_naming_the_phone_that_answered(setup: Setup) -> None:
    ringing_port, answering_port = free_port(), free_port()
    await register_port(setup.pbx, setup.tmp_path, "bob", ringing_port)
    await register_port(setup.pbx, setup.tmp_path, "bob", answering_port)
    ringer = await start_uas(setup.pbx, "uas_ring.xml", "127.0.0.1", ringing_port)
    answerer = await start_uas(setup.pbx, "uas_answer.xml", "127.0.0.1", answering_port)
    result = await alice_dials(setup, "call_basic.xml", callee="bob")
    assert result.returncode == 0, str(result)
    assert (await answerer).returncode == 0 and (await ringer).returncode == 0
    [cdr] = await the_cdrs(setup)
    assert (cdr.disposition, cdr.hangup_side) == ("answered", "caller")
    assert cdr.contact == f"sip:callee@127.0.0.1:{answering_port};transport=UDP"


async def test_an_inbound_call_names_its_carrier_and_costs_nothing(setup: Setup) -> None:
    await import_rates(setup, "44,0.03,60,60,0.01\n")  # would match the DID: outbound only
    await setup.pbx.admin.add_did("01632 960001", "alice")
    alice_port = free_port()
    await register_port(setup.pbx, setup.tmp_path, "alice", alice_port)
    phone = await start_uas(setup.pbx, "uas_answer.xml", "127.0.0.1", alice_port)
    host, port = setup.server
    result = await run_sipp(
        "carrier_invite.xml",
        host,
        port,
        local_ip=CARRIER_IP,
        keys={"did": "+441632960001", "from_user": "+442079460000", "from_host": "carrier"},
        extra=["-d", "100"],
        timeout=15,
    )
    assert result.returncode == 0, str(result)
    assert (await phone).returncode == 0
    [cdr] = await the_cdrs(setup)
    assert (cdr.direction, cdr.callee, cdr.carrier) == ("inbound", "alice", "acme")
    assert (cdr.dialled, cdr.number) == ("+441632960001", "441632960001")
    assert (cdr.disposition, cdr.hangup_side, cdr.cost, cdr.rate_prefix) == (
        "answered",
        "caller",
        0,
        "",
    )


async def test_internal_call_costs_nothing(setup: Setup) -> None:
    await import_rates(setup, "44,0.03,60,60,0.01\n")
    bob_port = free_port()
    await register_port(setup.pbx, setup.tmp_path, "bob", bob_port)
    phone = await start_uas(setup.pbx, "uas_answer.xml", "127.0.0.1", bob_port)
    result = await alice_dials(setup, "call_basic.xml", callee="bob")
    assert result.returncode == 0 and (await phone).returncode == 0
    [cdr] = await the_cdrs(setup)
    assert (cdr.direction, cdr.disposition, cdr.carrier, cdr.cost) == (
        "internal",
        "answered",
        "",
        0,
    )
    assert cdr.contact == f"sip:callee@127.0.0.1:{bob_port};transport=UDP"


# -- spend limits ---------------------------------------------------------------------------
async def test_spend_limit_refuses_the_next_call(setup: Setup) -> None:
    await import_rates(setup, "44,0.03,60,60,0\n")
    await setup.pbx.admin.accounting.set_spend_limit("alice", "0.06", "")
    gateway = await start_uas(setup.pbx, "uas_answer.xml", CARRIER_IP, setup.gateway_port)
    caller = asyncio.create_task(alice_dials(setup, "call_basic.xml", pause_ms=1_500))
    await when_answered(setup)
    setup.clock.advance(90.0)  # two minutes: 0.06, the whole day's limit
    assert (await caller).returncode == 0 and (await gateway).returncode == 0
    await setup.pbx.store.flush()
    refused = await alice_dials(setup, "call_rejected.xml")
    assert refused.returncode == 0, str(refused)
    assert statuses_to(setup, "127.0.0.1")[-1] == 403
    cdrs = await the_cdrs(setup)
    assert [cdr.disposition for cdr in cdrs] == ["refused by policy", "answered"]
    newest = cdrs[0]
    assert (newest.status, newest.hangup_side, newest.cost) == (403, "pbx", 0)
    assert "spent 0.06 of a daily limit of 0.06" in newest.reason
    assert any("daily limit" in event.detail for event in toll_fraud_events(setup))
    # The gateway never heard of the refused call.
    invites = [
        event
        for event in setup.pbx.bus.traffic.read_since(0)[0]
        if isinstance(event, SipTraffic)
        and event.direction == "out"
        and event.remote[0] == CARRIER_IP
        and event.data.startswith(b"INVITE")
    ]
    assert len(invites) == 1


async def test_a_running_call_crossing_a_hard_limit_is_ended_on_both_sides(setup: Setup) -> None:
    await import_rates(setup, "44,0.03,60,60,0\n")
    await setup.pbx.admin.accounting.set_spend_limit("alice", "0.05", "")
    # The gateway (uas_answer) and alice (call_wait_bye) both wait for a BYE: ours.
    gateway = await start_uas(setup.pbx, "uas_answer.xml", CARRIER_IP, setup.gateway_port)
    caller = asyncio.create_task(alice_dials(setup, "call_wait_bye.xml"))
    await when_answered(setup)
    await asyncio.sleep(1.5)  # a housekeeping pass: 0.03 so far, under the limit
    assert len(setup.pbx.proxy.calls) == 1
    setup.clock.advance(61.0)  # now 0.06: past 0.05
    result, gateway_result = await caller, await gateway
    assert result.returncode == 0, str(result)
    assert gateway_result.returncode == 0, str(gateway_result)
    [cdr] = await the_cdrs(setup)
    assert (cdr.disposition, cdr.hangup_side) == ("answered", "pbx")
    assert cdr.reason.startswith("spend limit: user alice spent 0.06 of a daily limit of 0.05")
    assert (cdr.billable_seconds, cdr.cost) == (120, 60_000)
    assert any("ended" in event.detail for event in toll_fraud_events(setup))


async def test_global_limit_refuses_everyone(tmp_path: Path) -> None:
    setup = await start(tmp_path, AccountingSettings(day_limit="0.05"))
    try:
        await import_rates(setup, "44,0.03,60,60,0\n")
        # bob spent 0.05 earlier today (read at start): the PBX is at its limit.
        spent = CdrRow("earlier", "bob", "+441632960001", "127.0.0.1", "outbound", setup.clock())
        spent.cost, spent.carrier = 50_000, "acme"
        await setup.pbx.store.insert_cdr(spent)
        await setup.pbx.books.load_spend(setup.pbx.store, setup.clock())
        refused = await alice_dials(setup, "call_rejected.xml")
        assert refused.returncode == 0, str(refused)
        assert statuses_to(setup, "127.0.0.1")[-1] == 403
        cdrs = await the_cdrs(setup)
        assert [cdr.disposition for cdr in cdrs] == ["refused by policy", ""]
        assert "the PBX spent 0.05 of a daily limit of 0.05" in cdrs[0].reason
    finally:
        await setup.pbx.stop()


# -- retention ------------------------------------------------------------------------------
async def test_retention_purges_old_cdrs_while_calls_go_on(tmp_path: Path) -> None:
    """1,500 CDRs past keep_days go in batches of the writer while ten calls are set up;
    the CDRs inside the period, and the new calls' ones, all stay."""
    pbx = await start_pbx(tmp_path, accounting=AccountingSettings(keep_days=30))
    try:
        now = time.time()
        old = [
            CdrRow(f"old-{i}", "carol", "bob", "127.0.0.1", "internal", now - 31 * DAY - i)
            for i in range(1_500)
        ]
        kept = [
            CdrRow(f"kept-{i}", "carol", "bob", "127.0.0.1", "internal", now - 29 * DAY - i)
            for i in range(20)
        ]
        for row in [*old, *kept]:
            pbx.store.submit(InsertCdr(row))
        await pbx.store.flush()
        bob_port = free_port()
        await register_port(pbx, tmp_path, "bob", bob_port)
        host, port = pbx.listening[0].host, pbx.listening[0].port
        phone = asyncio.create_task(
            run_sipp("uas_answer.xml", host, port, local_port=bob_port, calls=10, timeout=20)
        )
        await asyncio.sleep(0.2)
        csv = tmp_path / "alice.csv"
        csv.write_text(
            f"SEQUENTIAL\nalice;[authentication username=alice password={USERS['alice']}]\n"
        )
        calls = await run_sipp(
            "call_basic.xml",
            host,
            port,
            inf=csv,
            calls=10,
            rate=2,
            keys={"domain": DOMAIN, "callee": "bob"},
            extra=["-auth_uri", f"bob@{DOMAIN}", "-d", "200"],
            timeout=20,
        )
        assert calls.returncode == 0 and calls.successful == 10, str(calls)
        assert (await phone).returncode == 0
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 10
        while await pbx.store.count_cdrs_before(now - 30 * DAY):
            assert loop.time() < deadline, "old CDRs were not purged"
            await asyncio.sleep(0.2)
        await pbx.store.flush()
        rows = await pbx.store.query_cdrs(CdrFilter(), limit=10_000)
        assert sorted({row.call_id.split("-")[0] for row in rows if row.caller == "carol"}) == [
            "kept"
        ]
        assert len([row for row in rows if row.caller == "carol"]) == 20
        assert len([row for row in rows if row.caller == "alice"]) == 10
        assert pbx.books.retention_batches >= 2
        assert pbx.store.writer_stats.failed == 0
    finally:
        await pbx.stop()
