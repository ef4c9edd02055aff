"""Worker processes (`[server] workers = 2`) end to end: SIPp against real processes.

The main process runs in the test's event loop; the two workers are real `python -m
pbxtui.worker` processes reading the same UDP socket. Every check looks at main, as the
console would: its location table, feed, calls, figures and database.
"""

from __future__ import annotations

import asyncio
import os
import re
import secrets
import signal
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path

import pytest
from conftest import USERS, start_pbx
from support.client import UdpClient, request_text
from support.phone import Phone
from support.ports import free_port
from support.sipp import SippResult, run_sipp, write_users_csv
from test_proxy_sipp import call, call_events, invite_answers, register_port, start_callee
from test_trunks_sipp import CARRIER_IP, wait_until_bound

from core.cluster.affinity import owner_of
from core.cluster.main import MainDuties
from core.events import ContactRegistered, SecurityEvent, ServerEvent, SourceBanned
from core.pbx import Pbx
from core.settings import AuthSettings, DialplanSettings, RegistrarSettings, SecuritySettings
from core.sip.digest import build_authorization
from core.sip.fields import parse_auth
from core.store.database import Store
from core.users import make_user

pytestmark = pytest.mark.sipp

DOMAIN = "pbx.test"
MANY_USERS = {f"user{number:03d}": f"secret-{number:03d}-x" for number in range(60)}


@pytest.fixture
async def pbx(tmp_path: Path) -> AsyncIterator[Pbx]:
    """Main and two workers, users alice, bob and carol, MD5 only for SIPp's sake."""
    server = await start_pbx(tmp_path, workers=2, auth=AuthSettings(algorithms=("MD5",)))
    try:
        yield server
    finally:
        await server.stop()


def cluster_of(pbx: Pbx) -> MainDuties:
    assert isinstance(pbx.duties, MainDuties)
    return pbx.duties


def feed(pbx: Pbx) -> list:
    events, _cursor, _missed = pbx.bus.feed.read_since(0)
    return events


async def eventually(check, timeout: float = 5.0) -> None:
    """Until `check()` is true: what a worker did reaches main a moment later."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not check():
        if loop.time() > deadline:
            raise AssertionError(f"still false after {timeout} s: {check}")
        await asyncio.sleep(0.05)


async def register_many(pbx: Pbx, tmp_path: Path, users: dict[str, str]) -> None:
    host, port = pbx.listening[0].host, pbx.listening[0].port
    csv = write_users_csv(tmp_path / "many.csv", users)
    result = await run_sipp(
        "reg_auth.xml",
        host,
        port,
        calls=len(users),
        rate=200,
        inf=csv,
        keys={"domain": DOMAIN},
        extra=["-auth_uri", DOMAIN],
    )
    assert result.returncode == 0, str(result)


async def test_both_workers_serve_registrations_and_main_holds_every_binding(
    tmp_path: Path,
) -> None:
    pbx = await start_pbx(
        tmp_path, users=MANY_USERS, workers=2, auth=AuthSettings(algorithms=("MD5",))
    )
    try:
        cluster = cluster_of(pbx)
        assert cluster.pool.alive == 2
        await register_many(pbx, tmp_path, MANY_USERS)
        await eventually(lambda: pbx.location.contact_count == len(MANY_USERS))
        registered = {e.user for e in feed(pbx) if isinstance(e, ContactRegistered)}
        assert registered == set(MANY_USERS)
        # Each worker reported handling part of the load (figures arrive once a second).
        await eventually(lambda: len(cluster.figures) == 2, timeout=3)
        await eventually(
            lambda: all(f.messages_in > 0 for f in cluster.figures.values()), timeout=3
        )
        # Two REGISTERs each (challenged, then with credentials), in and out; with two
        # readers and two owners, some were read by the worker that does not own them.
        stats = pbx.stats()
        assert stats.messages_in >= 2 * len(MANY_USERS) <= stats.messages_out
        assert cluster.totals().forwarded > 0
        # Main wrote every binding to the database: a restart would find them.
        await eventually(lambda: cluster.pool.alive == 2)
        await pbx.store.flush()
        rows = await pbx.store.load_bindings(pbx.clock())
        assert {row.aor for row in rows} == set(MANY_USERS)
    finally:
        await pbx.stop()
    assert cluster.pool.alive == 0


@pytest.mark.parametrize("transport", ["udp", "tcp"])
async def test_call_between_phones_through_the_workers(
    pbx: Pbx, tmp_path: Path, transport: str
) -> None:
    callee_port, caller_port = free_port(), free_port()
    await register_port_eventually(pbx, tmp_path, "bob", callee_port)
    callee = await start_callee(pbx, "uas_answer.xml", callee_port)
    result = await call(pbx, tmp_path, "call_basic.xml", port=caller_port, transport=transport)
    callee_result = await callee
    assert result.returncode == 0, str(result)
    assert callee_result.returncode == 0, str(callee_result)

    await eventually(lambda: [e.state for e in call_events(pbx)][-1:] == ["ended"])
    events = call_events(pbx)
    assert [event.state for event in events] == ["trying", "ringing", "answered", "ended"]
    assert pbx.calls() == [] and pbx.stats().calls_up == 0
    # The worker's CDR was written by main.
    await asyncio.sleep(0.2)
    await pbx.store.flush()
    [cdr] = await pbx.store.list_cdrs()
    assert (cdr.caller, cdr.callee, cdr.status) == ("alice", "bob", 200)


async def register_port_eventually(pbx: Pbx, tmp_path: Path, user: str, port: int) -> None:
    """`register_port`, which checks main's location at once: the worker's binding reaches
    main a moment after the 200, so the check waits for it."""
    try:
        await register_port(pbx, tmp_path, user, port)
    except AssertionError:
        await eventually(
            lambda: port in [b.flow.port for b in pbx.location.lookup(user, pbx.clock())]
        )


async def test_active_calls_show_in_main_while_they_last(pbx: Pbx, tmp_path: Path) -> None:
    callee_port, caller_port = free_port(), free_port()
    await register_port_eventually(pbx, tmp_path, "bob", callee_port)
    callee = await start_callee(pbx, "uas_answer.xml", callee_port)
    caller = asyncio.create_task(
        call(pbx, tmp_path, "call_basic.xml", port=caller_port, pause_ms=1500)
    )
    await eventually(lambda: [c.state for c in pbx.calls()] == ["answered"])
    [info] = pbx.calls()
    assert (info.caller, info.callee) == ("alice", "bob") and info.answered_at is not None
    assert pbx.stats().calls_up == 1
    assert (await caller).returncode == 0
    assert (await callee).returncode == 0
    await eventually(lambda: pbx.calls() == [])


async def test_a_user_added_in_main_can_register_at_once(pbx: Pbx, tmp_path: Path) -> None:
    await pbx.admin.add_user("dave", "dave-secret-4444")
    await asyncio.sleep(0.3)  # the workers read the users table again
    await register_many(pbx, tmp_path, {"dave": "dave-secret-4444"})
    await eventually(lambda: len(pbx.location.lookup("dave", pbx.clock())) == 1)


async def test_unregistering_in_main_reaches_the_workers(pbx: Pbx, tmp_path: Path) -> None:
    callee_port, caller_port = free_port(), free_port()
    await register_port_eventually(pbx, tmp_path, "bob", callee_port)
    [binding] = pbx.location.lookup("bob", pbx.clock())
    await pbx.admin.unregister("bob", binding.contact)
    await asyncio.sleep(0.3)
    # The worker that takes the call no longer knows a contact for bob: 480.
    result = await call(pbx, tmp_path, "call_rejected.xml", port=caller_port)
    assert result.returncode == 0, str(result)
    # The console's traffic shows the workers' messages too.
    await eventually(lambda: invite_answers(pbx, caller_port) == [407, 480])


def call_id_owned_by(worker: int, workers: int = 2) -> str:
    """A fresh Call-ID that `worker` owns (core/cluster/affinity.py)."""
    for _ in range(1000):
        call_id = secrets.token_hex(8)
        head = f"REGISTER sip:{DOMAIN} SIP/2.0\r\nCall-ID: {call_id}\r\n\r\n"
        if owner_of(head.encode(), workers) == worker:
            return call_id
    raise AssertionError(f"no Call-ID for worker {worker} in 1000 tries")


async def test_a_captured_register_replayed_to_the_other_worker_does_not_pass(
    pbx: Pbx,
) -> None:
    """Each worker keeps its own nonce counts. An attacker who captured alice's REGISTER
    sends it again with her Contact swapped for his and a Call-ID the other worker owns:
    that worker never saw the nonce, but the nonce names the worker that issued it, so the
    answer is a fresh challenge (stale=true) and alice's binding stays hers."""
    server = pbx.listening[0].host, pbx.listening[0].port
    async with UdpClient(server) as client:
        phone = Phone(client, "alice", USERS["alice"])
        phone.call_id = call_id_owned_by(1)
        challenge = await client.ask(phone.register_text())
        assert challenge is not None and challenge.status == 401
        [offered] = [parse_auth(v) for v in challenge.headers.get_all("WWW-Authenticate")]
        authorization = build_authorization(
            offered, "alice", USERS["alice"], "REGISTER", f"sip:{DOMAIN}"
        )
        captured = phone.register_text(authorization=authorization)
        ok = await client.ask(captured)
        assert ok is not None and ok.status == 200
        await eventually(lambda: len(pbx.location.lookup("alice", pbx.clock())) == 1)

        async with UdpClient(server) as attacker:
            # A new branch too, or it is a retransmission, answered from the reply cache.
            hijack = re.sub(r"branch=z9hG4bK\w+", "branch=z9hG4bKreplayed", captured).replace(
                f"<sip:alice@{client.local[0]}:{client.local[1]}>",
                f"<sip:alice@{attacker.local[0]}:{attacker.local[1]}>",
            )
            # Sent again as it was, to the worker that issued the nonce: a replayed count.
            again = await attacker.ask(hijack)
            assert again is not None and again.status == 401
            assert "stale" not in again.headers.get("WWW-Authenticate", "")
            # Under a Call-ID the other worker owns: that worker did not issue the nonce.
            moved = hijack.replace(phone.call_id, call_id_owned_by(2))
            answer = await attacker.ask(moved)
            assert answer is not None and answer.status == 401
            assert "stale=true" in answer.headers.get("WWW-Authenticate", "")
    await asyncio.sleep(0.3)  # what a worker binds reaches main a moment later
    [binding] = pbx.location.lookup("alice", pbx.clock())
    assert binding.contact == f"sip:alice@{client.local[0]}:{client.local[1]}"


async def options(client: UdpClient, *, user_agent: str = "pbxtui-tests", timeout: float = 2.0):
    """An OPTIONS to the server with a new Call-ID (so either worker may own it)."""
    text = request_text("OPTIONS", f"sip:{DOMAIN}", local=client.local, user_agent=user_agent)
    return await client.ask(text, timeout)


async def test_a_ban_made_in_main_is_enforced_by_the_workers(pbx: Pbx) -> None:
    server = pbx.listening[0].host, pbx.listening[0].port
    client = await UdpClient(server).open("127.0.0.2")
    try:
        for _ in range(4):
            assert (await options(client)).status == 200
        await pbx.admin.ban("127.0.0.2", 60, "test")
        await asyncio.sleep(0.3)
        for _ in range(4):
            assert await options(client, timeout=0.3) is None
        await pbx.admin.unban("127.0.0.2")
        await asyncio.sleep(0.3)
        for _ in range(4):
            assert (await options(client)).status == 200
    finally:
        client.close()


async def test_a_ban_made_by_a_worker_reaches_main_and_the_database(tmp_path: Path) -> None:
    security = SecuritySettings(scanner_ban_after=2)
    pbx = await start_pbx(tmp_path, workers=2, security=security)
    try:
        server = pbx.listening[0].host, pbx.listening[0].port
        client = await UdpClient(server).open("127.0.0.3")
        try:
            for _ in range(6):  # spread over both workers by Call-ID
                await options(client, timeout=0.1, user_agent="friendly-scanner")
        finally:
            client.close()
        await eventually(lambda: [b.ip for b in pbx.security.bans(pbx.clock())] == ["127.0.0.3"])
        assert any(isinstance(e, SourceBanned) for e in feed(pbx))
        await pbx.store.flush()
        assert [row.ip for row in await pbx.store.list_bans()] == ["127.0.0.3"]
    finally:
        await pbx.stop()


async def test_a_worker_that_dies_is_started_again(pbx: Pbx, tmp_path: Path) -> None:
    cluster = cluster_of(pbx)
    victim = cluster.pool.processes[1]
    os.kill(victim.pid, signal.SIGKILL)
    await eventually(
        lambda: any(
            isinstance(e, ServerEvent) and "worker process 1 started again" in e.message
            for e in feed(pbx)
        ),
        timeout=10,
    )
    assert cluster.pool.alive == 2 and cluster.pool.processes[1].pid != victim.pid
    assert any(
        isinstance(e, ServerEvent)
        and e.level == "error"
        and "worker process 1 stopped" in e.message
        for e in feed(pbx)
    )
    # Both workers serve again: every registration succeeds.
    await register_many(pbx, tmp_path, USERS)
    await eventually(lambda: pbx.location.user_count == len(USERS))


async def test_main_keeps_a_nat_binding_open_and_hears_the_answer(tmp_path: Path) -> None:
    """Main sends the keep-alive; the answer reaches a worker, which hands it to main."""
    pbx = await start_pbx(
        tmp_path,
        workers=2,
        registrar=replace(RegistrarSettings(), nat_ping_interval=1.0),
    )
    try:
        async with UdpClient((pbx.listening[0].host, pbx.listening[0].port)) as client:
            phone = Phone(client, "alice", USERS["alice"])
            response = await phone.register(
                via_host="192.168.1.10:5060", contact="<sip:alice@192.168.1.10:5060>"
            )
            assert response is not None and response.status == 200
            await eventually(lambda: len(pbx.location.lookup("alice", pbx.clock())) == 1)
            for _ in range(2):  # two pings, each answered
                data = await client.recv(3.0)
                while data is not None and not data.startswith(b"OPTIONS "):
                    data = await client.recv(3.0)
                assert data is not None, "no NAT keep-alive OPTIONS arrived"
                client.send(answer_ok(data))
            [binding] = pbx.location.lookup("alice", pbx.clock())
            await eventually(lambda: binding.last_pong is not None)
            assert binding.reachable and binding.ping_failures == 0
    finally:
        await pbx.stop()


def answer_ok(request: bytes) -> bytes:
    """A 200 to `request`, echoing the headers a response must copy (RFC 3261 §8.2.6.2)."""
    lines = request.decode().split("\r\n")
    copied = [
        line if not line.startswith("To:") else f"{line};tag=phone"
        for line in lines
        if line.split(":", 1)[0] in ("Via", "From", "To", "Call-ID", "CSeq")
    ]
    return ("SIP/2.0 200 OK\r\n" + "\r\n".join(copied) + "\r\nContent-Length: 0\r\n\r\n").encode()


async def test_a_user_added_from_the_cli_reaches_the_workers(pbx: Pbx, tmp_path: Path) -> None:
    """Another process (`pbxtui user add`) writes the database: main notices, and tells the
    workers to read their tables again."""
    async with await Store.open(pbx.settings.db_path) as cli_store:
        await cli_store.add_user(make_user("erin", "erin-secret-55", DOMAIN))
    await eventually(lambda: pbx.users.get("erin") is not None)
    await asyncio.sleep(0.3)  # the workers read the users table again
    await register_many(pbx, tmp_path, {"erin": "erin-secret-55"})
    await eventually(lambda: len(pbx.location.lookup("erin", pbx.clock())) == 1)


async def alice_dials(
    pbx: Pbx, tmp_path: Path, scenario: str, call_id: str, hold_ms: int = 100
) -> SippResult:
    """alice calls a national number out through the carrier, under a Call-ID of our choosing
    (so we know which worker takes it)."""
    host, port = pbx.listening[0].host, pbx.listening[0].port
    csv = tmp_path / f"caller-{call_id}.csv"
    password = USERS["alice"]
    csv.write_text(f"SEQUENTIAL\nalice;[authentication username=alice password={password}]\n")
    number = "01632960555"
    return await run_sipp(
        scenario,
        host,
        port,
        inf=csv,
        local_port=free_port(),
        keys={"domain": DOMAIN, "callee": number},
        extra=["-auth_uri", f"{number}@{DOMAIN}", "-d", str(hold_ms), "-cid_str", call_id],
        timeout=30,
    )


async def worker_started_again(pbx: Pbx, index: int, times: int) -> None:
    def restarted() -> int:
        text = f"worker process {index} started again"
        return sum(isinstance(e, ServerEvent) and text in e.message for e in feed(pbx))

    await eventually(lambda: restarted() >= times, timeout=15)


async def test_call_limits_hold_across_a_worker_that_dies(tmp_path: Path) -> None:
    """alice may have one outbound call up. A worker started again learns from main of the
    call another worker carries (486 for a second one); when the worker carrying it dies,
    main counts the call out everywhere, or alice could never call out again."""
    pbx = await start_pbx(
        tmp_path,
        workers=2,
        auth=AuthSettings(algorithms=("MD5",)),
        dialplan=DialplanSettings(country_code="44"),
    )
    try:
        await pbx.admin.update_user(
            "alice",
            outbound_policy="national",
            caller_id="+441632960100",
            max_concurrent_calls=1,
        )
        gateway_port = free_port(CARRIER_IP)
        await pbx.admin.add_carrier(
            "acme", [f"{CARRIER_IP}/32"], gateway=f"{CARRIER_IP}:{gateway_port}"
        )
        await asyncio.sleep(0.5)  # the workers read users and carriers again
        host, port = pbx.listening[0].host, pbx.listening[0].port
        gateway = asyncio.create_task(
            run_sipp(
                "uas_answer.xml",
                host,
                port,
                local_ip=CARRIER_IP,
                local_port=gateway_port,
                calls=2,
                timeout=40,
            )
        )
        await wait_until_bound(CARRIER_IP, gateway_port)
        limiter = pbx.trunks.limiter

        # Call 1, held, on worker 1.
        first_id = call_id_owned_by(1)
        first = asyncio.create_task(
            alice_dials(pbx, tmp_path, "call_basic.xml", first_id, hold_ms=12_000)
        )
        await eventually(lambda: limiter.active("alice") == 1)

        # Worker 2 dies and starts again: it must know of call 1 all the same.
        os.kill(cluster_of(pbx).pool.processes[2].pid, signal.SIGKILL)
        await worker_started_again(pbx, 2, times=1)
        second_id = call_id_owned_by(2)
        second = await alice_dials(pbx, tmp_path, "call_rejected.xml", second_id)
        assert second.returncode == 0, str(second)
        await eventually(
            lambda: any(
                isinstance(e, SecurityEvent)
                and e.action == "toll-fraud"
                and e.detail.startswith("486 Too many calls")
                for e in feed(pbx)
            )
        )

        # Worker 1 dies with call 1 counted in: main counts it out, and tells worker 2.
        await eventually(lambda: any(c.call_id == first_id for c in pbx.calls()))
        os.kill(cluster_of(pbx).pool.processes[1].pid, signal.SIGKILL)
        await eventually(lambda: limiter.active("alice") == 0)
        # Nobody follows call 1 any more: it gets its CDR and its end now.
        await pbx.store.flush()
        [lost] = [cdr for cdr in await pbx.store.list_cdrs() if cdr.call_id == first_id]
        assert (lost.status, lost.reason, lost.direction) == (
            200,
            "worker process stopped",
            "outbound",
        )
        assert not any(c.call_id == first_id for c in pbx.calls())
        await worker_started_again(pbx, 1, times=1)
        third = await alice_dials(pbx, tmp_path, "call_basic.xml", call_id_owned_by(2))
        assert third.returncode == 0, str(third)
        first.cancel()
        gateway.cancel()
        await asyncio.gather(first, gateway, return_exceptions=True)
    finally:
        await pbx.stop()
