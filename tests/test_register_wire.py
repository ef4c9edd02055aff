"""Registration over real sockets: SIPp and a small test phone against an in-process Pbx."""

from __future__ import annotations

import asyncio
import re
from dataclasses import replace
from pathlib import Path

import pytest
from conftest import USERS, start_pbx
from support.client import UdpClient
from support.phone import Phone
from support.sipp import run_sipp, write_users_csv

from core.events import ContactRefreshed, ContactRegistered, ContactUnregistered
from core.pbx import Pbx
from core.settings import AuthSettings, RegistrarSettings
from core.sip.digest import build_authorization
from core.sip.fields import parse_auth
from core.sip.parser import parse_message


def _address(pbx: Pbx) -> tuple[str, int]:
    return pbx.listening[0].host, pbx.listening[0].port


def _feed(pbx: Pbx) -> list:
    events, _cursor, _missed = pbx.bus.feed.read_since(0)
    return events


@pytest.mark.parametrize("transport", ["udp", "tcp"])
async def test_sipp_register_with_digest(pbx: Pbx, tmp_path: Path, transport: str) -> None:
    host, port = _address(pbx)
    csv = write_users_csv(tmp_path / "users.csv", USERS)
    result = await run_sipp(
        "reg_auth.xml",
        host,
        port,
        transport=transport,
        calls=3,
        rate=10,
        inf=csv,
        keys={"domain": "pbx.test"},
        extra=["-auth_uri", "pbx.test"],
    )
    assert result.returncode == 0, str(result)
    now = pbx.clock()
    for user in USERS:
        bindings = pbx.location.lookup(user, now)
        assert len(bindings) == 1
        assert bindings[0].flow.transport == transport


async def test_sipp_wrong_password_is_challenged_again(pbx: Pbx, tmp_path: Path) -> None:
    host, port = _address(pbx)
    csv = write_users_csv(tmp_path / "bad.csv", {"alice": "not-her-password"})
    result = await run_sipp(
        "reg_wrong_password.xml",
        host,
        port,
        calls=1,
        inf=csv,
        keys={"domain": "pbx.test"},
        extra=["-auth_uri", "pbx.test"],
    )
    assert result.returncode == 0, str(result)
    assert pbx.location.lookup("alice", pbx.clock()) == []


def _normalised(data: bytes) -> str:
    """A response with everything that differs per request blanked out."""
    text = data.decode()
    text = re.sub(r'nonce="[^"]*"', 'nonce="N"', text)
    text = re.sub(r"tag=[^;\r\n]*", "tag=T", text)
    text = re.sub(r"branch=[^;\r\n]*", "branch=B", text)
    text = re.sub(r"(Call-ID|From|To|Via): [^\r\n]*", r"\1: X", text)
    return text


async def test_unknown_user_and_wrong_password_get_identical_answers(pbx: Pbx) -> None:
    answers = []
    for user, password in (("alice", "wrong-password"), ("nosuchuser", "whatever-pw")):
        async with UdpClient(_address(pbx)) as client:
            phone = Phone(client, user, password)
            first = await client.ask(phone.register_text())
            assert first is not None and first.status == 401
            client.send(phone.register_text())  # fresh challenge, answered wrongly below
            challenge = await client.response()
            assert challenge is not None
            final = await phone.answer(challenge)
            assert final is not None
            answers.append(final)
    wrong_password, unknown_user = answers
    assert wrong_password.status == unknown_user.status == 401
    assert _normalised(wrong_password.to_bytes()) == _normalised(unknown_user.to_bytes())


async def test_a_first_challenge_is_not_cached_but_a_failed_answer_is(pbx: Pbx) -> None:
    """A REGISTER without credentials gets a stateless 401 (its retransmission a new one);
    a wrong answer's 401 is cached, so its retransmission is answered without a second count
    against the source."""
    outbox = pbx.core.outbox
    async with UdpClient(_address(pbx)) as client:
        phone = Phone(client, "alice", "wrong-password")
        text = phone.register_text()
        first = await client.ask(text)
        again = await client.ask(text)  # a retransmission
        assert first is not None and again is not None
        assert first.status == again.status == 401
        assert outbox.reply_cache_bytes == 0
        [offered] = [parse_auth(value) for value in first.headers.get_all("WWW-Authenticate")]
        authorization = build_authorization(
            offered, "alice", "wrong-password", "REGISTER", f"sip:{phone.domain}"
        )
        answer = phone.register_text(authorization=authorization)
        wrong = await client.ask(answer)
        assert wrong is not None and wrong.status == 401
        cached = outbox.reply_cache_bytes
        assert cached > 0
        failures = pbx.security.stats.auth_failures
        repeated = await client.ask(answer)  # its retransmission: the same bytes again
        assert repeated is not None and repeated.to_bytes() == wrong.to_bytes()
        assert outbox.reply_cache_bytes == cached  # answered from the cache
        assert pbx.security.stats.auth_failures == failures  # and not counted again


async def test_refresh_and_unregister_one_contact_then_star(pbx: Pbx) -> None:
    async with UdpClient(_address(pbx)) as client:
        phone = Phone(client, "alice", USERS["alice"])
        ip, port = client.local
        first = await phone.register(contact=f"<sip:alice@{ip}:{port}>")
        assert first is not None and first.status == 200
        second = await phone.register(contact=f"<sip:alice@{ip}:{port + 1}>")
        assert second is not None and second.status == 200
        assert len(second.headers.values("Contact")) == 2  # the 200 lists every binding
        refreshed = await phone.register(contact=f"<sip:alice@{ip}:{port}>")
        assert refreshed is not None and refreshed.status == 200
        assert len(pbx.location.lookup("alice", pbx.clock())) == 2
        gone = await phone.register(contact=f"<sip:alice@{ip}:{port + 1}>", expires=0)
        assert gone is not None and gone.status == 200
        assert len(pbx.location.lookup("alice", pbx.clock())) == 1
        star = await phone.register(contact="*", expires=0)
        assert star is not None and star.status == 200
        assert pbx.location.lookup("alice", pbx.clock()) == []
    kinds = [type(event) for event in _feed(pbx)]
    assert ContactRegistered in kinds and ContactRefreshed in kinds
    assert kinds.count(ContactUnregistered) == 2


async def test_default_challenge_offers_md5_alone(tmp_path: Path) -> None:
    server = await start_pbx(tmp_path, auth=AuthSettings())
    try:
        async with UdpClient(_address(server)) as client:
            phone = Phone(client, "alice", USERS["alice"])
            challenge = await client.ask(phone.register_text())
            assert challenge is not None and challenge.status == 401
            [offer] = challenge.headers.get_all("WWW-Authenticate")
            assert "algorithm=MD5" in offer
            final = await phone.answer(challenge)
        assert final is not None and final.status == 200
    finally:
        await server.stop()


async def test_sha256_opt_in_is_offered_first_and_phones_use_it(tmp_path: Path) -> None:
    server = await start_pbx(tmp_path, auth=AuthSettings(algorithms=("SHA-256", "MD5")))
    try:
        async with UdpClient(_address(server)) as client:
            phone = Phone(client, "alice", USERS["alice"])
            challenge = await client.ask(phone.register_text())
            assert challenge is not None and challenge.status == 401
            offers = challenge.headers.get_all("WWW-Authenticate")
            assert ["SHA-256" in offers[0], "MD5" in offers[1]] == [True, True]
            final = await phone.answer(challenge)
        assert final is not None and final.status == 200
    finally:
        await server.stop()


async def test_interval_too_brief_gets_423_with_min_expires(pbx: Pbx) -> None:
    async with UdpClient(_address(pbx)) as client:
        phone = Phone(client, "bob", USERS["bob"])
        response = await phone.register(expires=5)
    assert response is not None and response.status == 423
    assert response.headers.get("Min-Expires") == "60"
    assert pbx.location.lookup("bob", pbx.clock()) == []


async def test_expired_nonce_gets_stale_then_success(tmp_path: Path) -> None:
    server = await start_pbx(tmp_path, auth=replace(AuthSettings(), nonce_lifetime=1.0))
    try:
        async with UdpClient(_address(server)) as client:
            phone = Phone(client, "carol", USERS["carol"])
            challenge = await client.ask(phone.register_text())
            assert challenge is not None and challenge.status == 401
            await asyncio.sleep(1.6)
            stale = await phone.answer(challenge)
            assert stale is not None and stale.status == 401
            assert "stale=true" in (stale.headers.get("WWW-Authenticate") or "").lower()
            final = await phone.answer(stale)
        assert final is not None and final.status == 200
    finally:
        await server.stop()


async def test_phone_behind_nat_is_reached_at_its_source_address(tmp_path: Path) -> None:
    server = await start_pbx(
        tmp_path, registrar=replace(RegistrarSettings(), nat_ping_interval=1.0)
    )
    try:
        async with UdpClient(_address(server)) as client:
            phone = Phone(client, "alice", USERS["alice"])
            # The phone believes it is 192.168.1.10; its packets arrive from 127.0.0.1:<port>.
            response = await phone.register(
                via_host="192.168.1.10:5060", contact="<sip:alice@192.168.1.10:5060>"
            )
            assert response is not None and response.status == 200
            binding = server.location.lookup("alice", server.clock())[0]
            assert binding.behind_nat
            assert binding.target().flow.remote == client.local
            # The NAT keep-alive OPTIONS reaches us through the "NAT", at our real address.
            ping = None
            for _ in range(10):
                data = await client.recv(1.0)
                if data is not None and data.startswith(b"OPTIONS "):
                    ping = parse_message(data)
                    break
            assert ping is not None, "no NAT keep-alive OPTIONS arrived"
    finally:
        await server.stop()


async def test_third_party_registration_is_reached_at_its_contact(pbx: Pbx) -> None:
    async with UdpClient(_address(pbx)) as client:
        phone = Phone(client, "bob", USERS["bob"])
        # Via matches the real source; the Contact names another (public) host.
        response = await phone.register(contact="<sip:bob@198.51.100.7:5070>")
        assert response is not None and response.status == 200
    binding = pbx.location.lookup("bob", pbx.clock())[0]
    assert not binding.behind_nat
    assert binding.target().flow.remote == ("198.51.100.7", 5070)


async def test_bindings_survive_a_restart(tmp_path: Path) -> None:
    server = await start_pbx(tmp_path)
    async with UdpClient(_address(server)) as client:
        response = await Phone(client, "alice", USERS["alice"]).register()
        assert response is not None and response.status == 200
        contact = server.location.lookup("alice", server.clock())[0].contact
    await server.stop()
    restarted = Pbx(server.settings)
    await restarted.start()
    try:
        bindings = restarted.location.lookup("alice", restarted.clock())
        assert [binding.contact for binding in bindings] == [contact]
    finally:
        await restarted.stop()


async def test_a_refresh_reaches_the_store_by_the_flush_and_survives_a_restart(
    tmp_path: Path,
) -> None:
    """A plain refresh changes the binding in place; its new expiry is written at the next
    flush (once a second) and, at the latest, when the server stops."""
    server = await start_pbx(tmp_path)
    async with UdpClient(_address(server)) as client:
        phone = Phone(client, "alice", USERS["alice"])
        first = await phone.register(expires=3600)
        assert first is not None and first.status == 200
        [binding] = server.location.lookup("alice", server.clock())
        refreshed = await phone.register(expires=120)
        assert refreshed is not None and refreshed.status == 200
        assert server.location.lookup("alice", server.clock()) == [binding]  # in place
        assert binding.expires_wall - server.clock() <= 120  # the console's figure at once
    await server.stop()
    restarted = Pbx(server.settings)
    await restarted.start()
    try:
        [restored] = restarted.location.lookup("alice", restarted.clock())
        assert restored.contact == binding.contact
        assert restored.expires_wall - restarted.clock() <= 120  # the refresh, not the 3600
        assert restored.cseq == binding.cseq
    finally:
        await restarted.stop()


async def test_user_agent_with_bytes_that_are_not_utf8_is_stored(tmp_path: Path) -> None:
    server = await start_pbx(tmp_path)
    async with UdpClient(_address(server)) as client:
        phone = Phone(client, "alice", USERS["alice"])
        phone.user_agent = "Phone \udcff\udcfe"  # two bytes that are not UTF-8
        final = await phone.register()
        assert final is not None and final.status == 200
    await server.stop()  # flushes the writer: the row must have been accepted by SQLite
    restarted = Pbx(server.settings)
    await restarted.start()
    try:
        assert len(restarted.location.lookup("alice", restarted.clock())) == 1
    finally:
        await restarted.stop()


async def test_a_refresh_answered_on_the_written_path_is_cached_for_its_retransmission(
    pbx: Pbx,
) -> None:
    """A plain refresh's 200 (written as bytes, without a Response) goes out and is kept for
    Timer J as any answer: its retransmission gets the same bytes, and is not handled twice."""
    outbox = pbx.core.outbox
    registrar = pbx.core.registrar
    async with UdpClient(_address(pbx)) as client:
        phone = Phone(client, "alice", USERS["alice"])
        first = await phone.register()
        assert first is not None and first.status == 200
        taken = registrar.fast_refreshes
        challenge = await client.ask(phone.register_text().encode())
        assert challenge is not None and challenge.status == 401
        [offered] = [parse_auth(v) for v in challenge.headers.get_all("WWW-Authenticate")]
        authorization = build_authorization(
            offered, "alice", USERS["alice"], "REGISTER", f"sip:{phone.domain}"
        )
        text = phone.register_text(authorization=authorization).encode()
        cached = outbox.reply_cache_bytes
        refreshed = await client.ask(text)
        assert refreshed is not None and refreshed.status == 200
        assert registrar.fast_refreshes == taken + 1  # the written path answered
        assert len(refreshed.headers.get_all("Contact")) == 1
        assert refreshed.headers.get("Date") is not None
        grown = outbox.reply_cache_bytes
        assert grown > cached
        repeated = await client.ask(text)  # its retransmission
        assert repeated is not None and repeated.to_bytes() == refreshed.to_bytes()
        assert outbox.reply_cache_bytes == grown  # answered from the cache
        assert registrar.fast_refreshes == taken + 1  # not processed again
