"""SIP over TLS on loopback: Python ssl clients against the real listener.

Certificates are real X.509 files from the openssl CLI (tests/support/certs.py); the phones
are Python's ssl module over real sockets; nothing is mocked.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import re
import secrets
import shutil
import socket
import ssl
from pathlib import Path

import pytest
from conftest import USERS, start_pbx
from support.certs import Pair, TestCa
from support.client import TcpClient, TlsClient, UdpClient, request_text
from support.phone import Phone

from core.control.rows import ContactRow
from core.events import SecurityEvent, ServerEvent
from core.net.tls import ServerCertificate, TlsError, server_context
from core.pbx import Pbx, StartError
from core.provisioning import phone_settings
from core.security.seclog import FAIL2BAN_FAILREGEX, format_log_line
from core.settings import ListenAddress, TlsSettings, TransportSettings
from core.sip.digest import build_authorization, pick_challenge
from core.sip.fields import parse_auth
from core.sip.parser import parse_message
from pbxtui.config import ConfigError, parse_listen, settings_from_mapping
from screens.registrations import binding_cells


@pytest.fixture(scope="module")
def ca(tmp_path_factory: pytest.TempPathFactory) -> TestCa:
    return TestCa(tmp_path_factory.mktemp("ca"))


@pytest.fixture(scope="module")
def server_pair(ca: TestCa) -> Pair:
    return ca.issue("pbx.test", alt_names=("DNS:pbx.test", "IP:127.0.0.1"))


def _copy_pair(pair: Pair, directory: Path) -> Pair:
    """The pair in files of the test's own, so a test can replace them."""
    directory.mkdir(parents=True, exist_ok=True)
    certificate, key = directory / "fullchain.pem", directory / "privkey.pem"
    shutil.copyfile(pair.certificate, certificate)
    shutil.copyfile(pair.key, key)
    return Pair(certificate, key)


async def _start(tmp_path: Path, pair: Pair, **tls: object) -> Pbx:
    settings = TlsSettings(certificate=str(pair.certificate), key=str(pair.key), **tls)  # type: ignore[arg-type]
    return await start_pbx(
        tmp_path,
        listen=(ListenAddress("udp", "127.0.0.1", 0), ListenAddress("tls", "127.0.0.1", 0)),
        tls=settings,
    )


def _tls_address(pbx: Pbx) -> tuple[str, int]:
    address = next(a for a in pbx.listening if a.transport == "tls")
    return address.host, address.port


def _client_context(ca: TestCa) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(ca.certificate))


def _feed(pbx: Pbx) -> list:
    events, _cursor, _missed = pbx.bus.feed.read_since(0)
    return events


async def _served_serial(pbx: Pbx, ca: TestCa) -> int:
    """The serial number of the certificate a new connection is served."""
    async with TlsClient(_tls_address(pbx), _client_context(ca)) as client:
        assert client.writer is not None
        der = client.writer.get_extra_info("ssl_object").getpeercert(binary_form=True)
    return int.from_bytes(_serial_of(der), "big")


def _serial_of(der: bytes) -> bytes:
    """The serialNumber field of a DER certificate (TBSCertificate's first INTEGER after the
    version): enough to tell two certificates of one CA apart without a parser library."""
    index = der.index(b"\x02", der.index(b"\xa0\x03\x02\x01\x02") + 5)
    length = der[index + 1]
    return der[index + 2 : index + 2 + length]


async def _register_over_tls(pbx: Pbx, ca: TestCa, user: str = "alice") -> int | None:
    """REGISTER on a new connection; the one Contact URI a phone keeps across reconnects."""
    async with TlsClient(_tls_address(pbx), _client_context(ca)) as client:
        phone = Phone(client, user, USERS[user])
        phone.transport = "TLS"
        response = await phone.register(contact=f"<sip:{user}@127.0.0.1:5999;transport=tls>")
        return None if response is None else response.status


# -- the listener ----------------------------------------------------------------------------
async def test_register_over_tls_binds_a_tls_contact(
    tmp_path: Path, ca: TestCa, server_pair: Pair
) -> None:
    pbx = await _start(tmp_path, server_pair)
    try:
        async with TlsClient(_tls_address(pbx), _client_context(ca)) as client:
            phone = Phone(client, "alice", USERS["alice"])
            phone.transport = "TLS"
            response = await phone.register()
            assert response is not None and response.status == 200
            assert response.headers.get("via").startswith("SIP/2.0/TLS")
            binding = pbx.location.lookup("alice", pbx.clock())[0]
            assert binding.flow.transport == "tls"
            row = ContactRow.of(binding)  # as the console sees it (core/control/view.py)
            assert binding_cells(row, pbx.clock())[3] == "TLS"  # the Registrations pane
            assert binding.flow.remote == tuple(client.local)
            # RFC 5626 §4.4.1: a CRLF CRLF ping over the flow gets a CRLF pong.
            await client.send(b"\r\n\r\n")
            assert client.reader is not None
            assert await asyncio.wait_for(client.reader.readexactly(2), 2) == b"\r\n"
    finally:
        await pbx.stop()


@pytest.mark.filterwarnings("ignore:ssl.TLSVersion:DeprecationWarning")
async def test_old_protocol_versions_are_refused(
    tmp_path: Path, ca: TestCa, server_pair: Pair
) -> None:
    pbx = await _start(tmp_path, server_pair)
    try:
        context = _client_context(ca)
        context.minimum_version = ssl.TLSVersion.TLSv1
        context.maximum_version = ssl.TLSVersion.TLSv1_1
        context.set_ciphers("DEFAULT:@SECLEVEL=0")
        with pytest.raises((ssl.SSLError, ConnectionError)):
            await TlsClient(_tls_address(pbx), context).open()
        assert await _register_over_tls(pbx, ca) == 200  # and the listener still serves
    finally:
        await pbx.stop()


async def test_garbage_instead_of_a_handshake_is_closed(
    tmp_path: Path, ca: TestCa, server_pair: Pair
) -> None:
    """Hostile bytes (a plain SIP request on the TLS port, then noise) close the connection;
    nothing is routed and the listener goes on serving."""
    pbx = await _start(tmp_path, server_pair)
    try:
        received = pbx.transport.received_messages
        async with TcpClient(_tls_address(pbx)) as raw:
            await raw.send(b"REGISTER sip:pbx.test SIP/2.0\r\n\r\n" + bytes(range(256)) * 8)
            assert await raw.closed_by_peer(3)
        assert pbx.transport.received_messages == received
        assert pbx.tls.handshake_failures >= 1
        assert await _register_over_tls(pbx, ca) == 200
    finally:
        await pbx.stop()


async def test_an_oversized_tls_record_is_closed_before_any_sip(
    tmp_path: Path, ca: TestCa, server_pair: Pair
) -> None:
    """A handshake record claiming 65,535 bytes (TLS allows 16 KiB plus expansion) followed by
    20 KB of filler: the handshake fails and the connection is closed, without waiting for
    the rest; nothing is routed, nothing stays under way, and the listener goes on serving."""
    pbx = await _start(tmp_path, server_pair, handshake_timeout=5.0)
    try:
        received = pbx.transport.received_messages
        failures = pbx.tls.handshake_failures
        async with TcpClient(_tls_address(pbx)) as raw:
            with contextlib.suppress(ConnectionError):
                await raw.send(b"\x16\x03\x01\xff\xff\x01" + b"\x00" * 20_000)
            loop = asyncio.get_running_loop()
            started = loop.time()
            assert await raw.closed_by_peer(4)
            assert loop.time() - started < 3  # refused, not left to the handshake timeout
        await asyncio.sleep(0.1)
        assert pbx.transport.received_messages == received
        assert pbx.tls.handshake_failures == failures + 1
        assert pbx.tls.handshake_timeouts == 0 and pbx.tls.gate.under_way == 0
        assert await _register_over_tls(pbx, ca) == 200
    finally:
        await pbx.stop()


async def test_a_stalled_handshake_is_closed_after_its_timeout(
    tmp_path: Path, ca: TestCa, server_pair: Pair
) -> None:
    pbx = await _start(tmp_path, server_pair, handshake_timeout=0.5)
    try:
        async with TcpClient(_tls_address(pbx)) as raw:
            await raw.send(b"\x16\x03\x01\x00\xc8\x01")  # the start of a ClientHello, then nothing
            loop = asyncio.get_running_loop()
            started = loop.time()
            assert await raw.closed_by_peer(5)
            assert loop.time() - started < 3
        assert pbx.tls.handshake_timeouts == 1
        assert pbx.tls.gate.under_way == 0
    finally:
        await pbx.stop()


async def test_half_open_handshakes_from_one_source_do_not_stop_another(
    tmp_path: Path, ca: TestCa, server_pair: Pair
) -> None:
    """1,000 connections from 127.0.0.2 that never finish their handshake (issue 19's figure)
    take that source's 16 slots; a phone on 127.0.0.1 still completes its handshake and
    registers, and once they are gone nothing of theirs is left under way."""
    pbx = await _start(tmp_path, server_pair, max_handshakes_per_source=16, max_handshakes=64)
    host, port = _tls_address(pbx)
    stalled: list[socket.socket] = []
    try:
        for index in range(1_000):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.setblocking(False)
            sock.bind(("127.0.0.2", 0))
            with contextlib.suppress(BlockingIOError):
                sock.connect((host, port))
            stalled.append(sock)
            if index % 100 == 99:
                await asyncio.sleep(0)  # let the server accept as they come
        for _ in range(50):  # let the server accept them all (bounded: 5 s)
            await asyncio.sleep(0.1)
            if pbx.tls.gate.refused >= 950:
                break
        assert pbx.tls.gate.under_way_from("127.0.0.2") <= 16
        assert pbx.tls.gate.refused >= 950
        assert await _register_over_tls(pbx, ca) == 200
        for sock in stalled:
            sock.close()
        stalled.clear()
        for _ in range(50):
            await asyncio.sleep(0.1)
            if pbx.tls.gate.under_way == 0:
                break
        assert pbx.tls.gate.under_way == 0
    finally:
        for sock in stalled:
            sock.close()
        await pbx.stop()


async def _tls_refused(pbx: Pbx, ca: TestCa, local_ip: str) -> bool:
    """Is a TLS connection from `local_ip` reset before (or instead of) being served?"""
    try:
        async with TlsClient(_tls_address(pbx), _client_context(ca), local_ip=local_ip) as client:
            return await client.closed_by_peer(1.0)
    except (ConnectionError, ssl.SSLError, OSError):
        return True


async def test_a_banned_source_is_reset_before_any_tls_work(
    tmp_path: Path, ca: TestCa, server_pair: Pair
) -> None:
    """The accept-time ban check applies to TLS as to TCP: a banned source gets no handshake
    (none is started or counted), its TLS connections up are closed by the ban, and other
    sources are served."""
    pbx = await _start(tmp_path, server_pair)
    try:
        async with TlsClient(_tls_address(pbx), _client_context(ca), local_ip="127.0.0.2") as up:
            phone = Phone(up, "alice", USERS["alice"])
            phone.transport = "TLS"
            response = await phone.register()
            assert response is not None and response.status == 200
            handshakes = pbx.tls.handshakes
            await pbx.admin.ban("127.0.0.2", 600.0)
            assert await up.closed_by_peer(2.0)  # the ban ends the connection already up
        refused = pbx.transport.refused_connections
        assert await _tls_refused(pbx, ca, "127.0.0.2")
        await asyncio.sleep(0.1)
        assert pbx.transport.refused_connections == refused + 1
        assert pbx.tls.handshakes == handshakes and pbx.tls.gate.under_way == 0
        assert pbx.tls.handshake_failures == 0  # reset at accept: no handshake was tried
        assert await _register_over_tls(pbx, ca) == 200  # 127.0.0.1 is not banned
    finally:
        await pbx.stop()


async def test_tls_connections_count_in_the_per_source_tcp_cap(
    tmp_path: Path, ca: TestCa, server_pair: Pair
) -> None:
    """One cap per source for TCP and TLS together, handshakes under way included: two TCP
    and one TLS connection from 127.0.0.2 fill a cap of 3, so its next TLS connection and
    its stalled handshakes are refused, while 127.0.0.1 registers over TLS."""
    pbx = await start_pbx(
        tmp_path,
        listen=(
            ListenAddress("udp", "127.0.0.1", 0),
            ListenAddress("tcp", "127.0.0.1", 0),
            ListenAddress("tls", "127.0.0.1", 0),
        ),
        tls=TlsSettings(certificate=str(server_pair.certificate), key=str(server_pair.key)),
        transport=dataclasses.replace(TransportSettings(), max_tcp_connections_per_source=3),
    )
    tcp = next(a for a in pbx.listening if a.transport == "tcp")
    streams = []
    stalled: list[socket.socket] = []
    try:
        for _ in range(2):
            streams.append(
                await asyncio.open_connection(tcp.host, tcp.port, local_addr=("127.0.0.2", 0))
            )
        async with TlsClient(_tls_address(pbx), _client_context(ca), local_ip="127.0.0.2") as up:
            phone = Phone(up, "alice", USERS["alice"])
            phone.transport = "TLS"
            response = await phone.register()
            assert response is not None and response.status == 200
            assert pbx.transport.connection_count == 3
            assert await _tls_refused(pbx, ca, "127.0.0.2")
            assert pbx.transport.connection_count == 3
        await asyncio.sleep(0.2)  # the TLS connection's close reaches the server
        # One slot free: of ten stalled handshakes from 127.0.0.2, one is under way.
        host, port = _tls_address(pbx)
        for _ in range(10):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.setblocking(False)
            sock.bind(("127.0.0.2", 0))
            with contextlib.suppress(BlockingIOError):
                sock.connect((host, port))
            stalled.append(sock)
        await asyncio.sleep(0.5)
        assert pbx.tls.gate.under_way_from("127.0.0.2") == 1
        assert await _register_over_tls(pbx, ca) == 200
    finally:
        for sock in stalled:
            sock.close()
        for _reader, writer in streams:
            writer.close()
        await pbx.stop()


# -- the certificate, reloaded -----------------------------------------------------------------
async def test_a_renewed_certificate_serves_new_connections_and_old_ones_keep_going(
    tmp_path: Path, ca: TestCa, server_pair: Pair
) -> None:
    pair = _copy_pair(server_pair, tmp_path / "live")
    pbx = await _start(tmp_path, pair, reload_check_seconds=0.1)
    try:
        first = await _served_serial(pbx, ca)
        async with TlsClient(_tls_address(pbx), _client_context(ca)) as kept:
            phone = Phone(kept, "alice", USERS["alice"])
            phone.transport = "TLS"
            assert (await phone.register()) is not None
            renewed = ca.issue("pbx.test", alt_names=("DNS:pbx.test", "IP:127.0.0.1"))
            _copy_pair(renewed, tmp_path / "live")  # as certbot's renewal hook leaves them
            for _ in range(50):
                await asyncio.sleep(0.1)
                if pbx.tls.certificate is not None and pbx.tls.certificate.loads == 2:
                    break
            assert await _served_serial(pbx, ca) != first
            # The connection opened before the renewal carries on.
            response = await phone.register()
            assert response is not None and response.status == 200
        messages = [e.message for e in _feed(pbx) if isinstance(e, ServerEvent)]
        assert any("TLS certificate reloaded" in message for message in messages)
    finally:
        await pbx.stop()


async def test_a_bad_new_certificate_leaves_the_old_one_serving(
    tmp_path: Path, ca: TestCa, server_pair: Pair
) -> None:
    pair = _copy_pair(server_pair, tmp_path / "live")
    pbx = await _start(tmp_path, pair, reload_check_seconds=0.1)
    try:
        first = await _served_serial(pbx, ca)
        pair.certificate.write_text("-----BEGIN CERTIFICATE-----\nnot base64\n")
        for _ in range(50):
            await asyncio.sleep(0.1)
            if any(isinstance(e, ServerEvent) and e.level == "error" for e in _feed(pbx)):
                break
        errors = [e for e in _feed(pbx) if isinstance(e, ServerEvent) and e.level == "error"]
        assert len(errors) == 1 and "old one serves on" in errors[0].message
        assert str(pair.certificate) in errors[0].message
        assert await _served_serial(pbx, ca) == first
        assert await _register_over_tls(pbx, ca) == 200
        # SIGHUP's path says the same, and changes nothing either.
        result = pbx.reload_certificate()
        assert result is not None and not result.ok
        assert await _served_serial(pbx, ca) == first
    finally:
        await pbx.stop()


async def test_reload_under_load_drops_no_registration(
    tmp_path: Path, ca: TestCa, server_pair: Pair
) -> None:
    """Phones register over new connections while the certificate is reloaded ten times."""
    pair = _copy_pair(server_pair, tmp_path / "live")
    pbx = await _start(tmp_path, pair)
    try:
        statuses: list[int | None] = []

        async def phones() -> None:
            for index in range(30):
                statuses.append(await _register_over_tls(pbx, ca, ("alice", "bob")[index % 2]))

        async def reloads() -> None:
            for _ in range(10):
                await asyncio.sleep(0.05)
                result = pbx.reload_certificate()
                assert result is not None and result.ok

        await asyncio.gather(phones(), reloads())
        assert statuses == [200] * 30
    finally:
        await pbx.stop()


def test_a_key_that_does_not_match_is_refused(ca: TestCa, server_pair: Pair) -> None:
    other = ca.issue("other.test")
    with pytest.raises(TlsError, match="not a usable certificate and key pair"):
        server_context(server_pair.certificate, other.key)
    certificate = ServerCertificate(server_pair.certificate, server_pair.key)
    certificate.load()
    certificate.key = other.key
    result = certificate.reload()
    assert not result.ok and certificate.loads == 1


# -- start-up and configuration --------------------------------------------------------------
async def test_a_tls_listener_needs_a_certificate(tmp_path: Path) -> None:
    with pytest.raises(StartError, match=r"\[tls\] certificate"):
        await start_pbx(tmp_path, listen=(ListenAddress("tls", "127.0.0.1", 0),))


async def test_a_missing_certificate_file_is_a_start_error(tmp_path: Path) -> None:
    settings = TlsSettings(certificate=str(tmp_path / "none.pem"), key=str(tmp_path / "k.pem"))
    with pytest.raises(StartError, match=r"none\.pem: no such file"):
        await start_pbx(tmp_path, listen=(ListenAddress("tls", "127.0.0.1", 0),), tls=settings)


def test_listen_tls_defaults_to_5061() -> None:
    assert parse_listen("tls:0.0.0.0") == ListenAddress("tls", "0.0.0.0", 5061)
    assert parse_listen("tls:[::1]:5062") == ListenAddress("tls", "::1", 5062)
    with pytest.raises(ValueError, match="tls:HOST:PORT"):
        parse_listen("dtls:0.0.0.0")


def test_tls_section_paths_are_relative_to_the_config(tmp_path: Path) -> None:
    settings = settings_from_mapping(
        {"tls": {"certificate": "fullchain.pem", "key": "/etc/privkey.pem"}},
        base_dir=tmp_path,
    )
    assert settings.tls.certificate == str(tmp_path / "fullchain.pem")
    assert settings.tls.key == "/etc/privkey.pem"
    with pytest.raises(ConfigError, match="needs a key"):
        settings_from_mapping({"tls": {"certificate": "a.pem"}})
    with pytest.raises(ConfigError, match="handshake_timeout"):
        settings_from_mapping({"tls": {"handshake_timeout": 0}})


def test_parse_message_of_a_tls_register_is_unchanged() -> None:
    """The Via transport is data to the parser: TLS needs nothing of its own there."""
    message = parse_message(
        b"OPTIONS sip:pbx.test SIP/2.0\r\nVia: SIP/2.0/TLS 192.0.2.1:5061;branch=z9hG4bKx\r\n"
        b"From: <sips:a@pbx.test>;tag=1\r\nTo: <sips:pbx.test>\r\nCall-ID: c\r\n"
        b"CSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n"
    )
    assert message.vias[0].transport == "TLS"


def test_register_over_tls_on_uvloop(tmp_path: Path, ca: TestCa, server_pair: Pair) -> None:
    """The service runs on uvloop (pbxtui/run.py), whose TLS is its own code: same test."""
    uvloop = pytest.importorskip("uvloop")

    async def scenario() -> tuple[int | None, int]:
        pbx = await _start(tmp_path, server_pair, handshake_timeout=0.5)
        try:
            status = await _register_over_tls(pbx, ca)
            async with TcpClient(_tls_address(pbx)) as raw:
                await raw.send(b"\x16\x03\x01\x00\xc8\x01")
                assert await raw.closed_by_peer(5)
            return status, pbx.tls.handshake_timeouts
        finally:
            await pbx.stop()

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        assert runner.run(scenario()) == (200, 1)


# -- policy ------------------------------------------------------------------------------------
async def test_tls_only_refuses_users_over_udp_before_any_challenge(
    tmp_path: Path, ca: TestCa, server_pair: Pair
) -> None:
    pbx = await _start(tmp_path, server_pair, tls_only=True)
    try:
        udp = next(a for a in pbx.listening if a.transport == "udp")
        async with UdpClient((udp.host, udp.port)) as client:
            response = await Phone(client, "alice", USERS["alice"]).register()
            assert response is not None and response.status == 403
            assert "TLS required" in response.reason
            assert response.headers.get("www-authenticate") is None
        assert await _register_over_tls(pbx, ca) == 200
    finally:
        await pbx.stop()


async def _start_with_a_tls_only_user(tmp_path: Path, pair: Pair, user: str = "alice") -> Pbx:
    """UDP, TCP and TLS listeners; `user` switched to TLS only as an admin would."""
    pbx = await start_pbx(
        tmp_path,
        listen=(
            ListenAddress("udp", "127.0.0.1", 0),
            ListenAddress("tcp", "127.0.0.1", 0),
            ListenAddress("tls", "127.0.0.1", 0),
        ),
        tls=TlsSettings(certificate=str(pair.certificate), key=str(pair.key)),
    )
    await pbx.admin.update_user(user, tls_only=True)
    return pbx


def _address(pbx: Pbx, transport: str) -> tuple[str, int]:
    address = next(a for a in pbx.listening if a.transport == transport)
    return address.host, address.port


def _tls_required_events(pbx: Pbx) -> list[SecurityEvent]:
    return [e for e in _feed(pbx) if isinstance(e, SecurityEvent) and e.action == "tls-required"]


async def test_a_tls_only_user_is_refused_over_udp_and_tcp_and_registers_over_tls(
    tmp_path: Path, ca: TestCa, server_pair: Pair
) -> None:
    """The per-user switch: alice answers the challenge correctly over UDP and TCP and still
    gets the global switch's 403 (and binds nothing); over TLS she registers. Bob, a normal
    user, registers over UDP beside her."""
    pbx = await _start_with_a_tls_only_user(tmp_path, server_pair)
    try:
        async with UdpClient(_address(pbx, "udp")) as client:
            response = await Phone(client, "alice", USERS["alice"]).register()
            assert response is not None and response.status == 403
            assert "TLS required" in response.reason
        async with TcpClient(_address(pbx, "tcp")) as stream:
            phone = Phone(stream, "alice", USERS["alice"])
            phone.transport = "TCP"
            response = await phone.register()
            assert response is not None and response.status == 403
        assert pbx.location.lookup("alice", pbx.clock()) == []
        events = _tls_required_events(pbx)
        assert [(e.user, e.source) for e in events] == [("alice", "127.0.0.1")] * 2
        assert "REGISTER over UDP refused: alice is TLS only" in events[0].detail
        line = format_log_line(events[0])  # the security log's line, which fail2ban never bans on
        assert line is not None and 'action=tls-required src=127.0.0.1 user="alice"' in line
        banned_on = re.compile(FAIL2BAN_FAILREGEX.replace("<HOST>", r"\S+"))
        after_time = line.split(" ", 1)[1]  # the filter's prefix takes the timestamp off
        assert banned_on.match(after_time.replace("tls-required", "auth-failed"))
        assert not banned_on.match(after_time)
        assert "over TCP" in events[1].detail
        assert await _register_over_tls(pbx, ca) == 200
        [binding] = pbx.location.lookup("alice", pbx.clock())
        assert binding.flow.transport == "tls"
        async with UdpClient(_address(pbx, "udp")) as client:
            response = await Phone(client, "bob", USERS["bob"]).register()
            assert response is not None and response.status == 200
        assert len(_tls_required_events(pbx)) == 2  # nothing said about bob or alice's TLS
    finally:
        await pbx.stop()


async def _send_authenticated_invite(client: UdpClient, user: str) -> None:
    """INVITE bob over UDP; answer the 407 (and ACK it) as a phone does."""
    uri = "sip:bob@pbx.test"
    call_id, branch = secrets.token_hex(8), "z9hG4bK" + secrets.token_hex(6)
    first = await client.ask(
        request_text(
            "INVITE", uri, local=client.local, from_user=user, call_id=call_id, branch=branch
        )
    )
    assert first is not None and first.status == 407
    client.send(
        request_text(
            "ACK",
            uri,
            local=client.local,
            from_user=user,
            to=first.headers.get("to"),
            call_id=call_id,
            branch=branch,
        )
    )
    challenge = pick_challenge([parse_auth(v) for v in first.headers.get_all("Proxy-Authenticate")])
    assert challenge is not None
    credentials = build_authorization(challenge, user, USERS[user], "INVITE", uri)
    client.send(
        request_text(
            "INVITE",
            uri,
            local=client.local,
            from_user=user,
            call_id=call_id,
            cseq=2,
            extra=f"Proxy-Authorization: {credentials}\r\n",
        )
    )


async def test_a_tls_only_users_invite_over_udp_is_refused_and_rings_nobody(
    tmp_path: Path, ca: TestCa, server_pair: Pair
) -> None:
    pbx = await _start_with_a_tls_only_user(tmp_path, server_pair)
    try:
        async with UdpClient(_address(pbx, "udp")) as bob:
            response = await Phone(bob, "bob", USERS["bob"]).register()
            assert response is not None and response.status == 200
            async with UdpClient(_address(pbx, "udp")) as alice:
                await _send_authenticated_invite(alice, "alice")
                response = await alice.response()
            assert response is not None and response.status == 403
            assert "TLS required" in response.reason
            assert await bob.recv(0.3) is None  # bob's phone never rang
            [event] = _tls_required_events(pbx)
            assert "INVITE over UDP refused: alice is TLS only" in event.detail
            # The same call from carol, who may use UDP, does ring bob.
            async with UdpClient(_address(pbx, "udp")) as carol:
                await _send_authenticated_invite(carol, "carol")
                rung = await bob.recv(2.0)
                assert rung is not None and rung.startswith(b"INVITE sip:bob@")
    finally:
        await pbx.stop()


def test_credentials_tell_the_phone_to_use_tls_when_the_server_has_it() -> None:
    listening = (
        ListenAddress("udp", "0.0.0.0", 5060, advertise_host="pbx.example"),
        ListenAddress("tcp", "0.0.0.0", 5060),
        ListenAddress("tls", "0.0.0.0", 5061),
    )
    rows = dict(phone_settings("alice", "pw", "pbx.example", listening).rows())
    assert rows["Port"].startswith("5061 (TLS)")  # first: what the phone should use
    assert rows["Port"] == "5061 (TLS), 5060 (UDP or TCP)"
    assert rows["Transport"].startswith("TLS: set the phone to TLS")
    plain = phone_settings("alice", "pw", "pbx.example", listening[:2]).text()
    assert "TLS" not in plain


def test_credentials_of_a_tls_only_user_give_the_tls_port_alone_and_say_it_is_required() -> None:
    listening = (
        ListenAddress("udp", "0.0.0.0", 5060, advertise_host="pbx.example"),
        ListenAddress("tcp", "0.0.0.0", 5060),
        ListenAddress("tls", "0.0.0.0", 5061),
    )
    rows = dict(phone_settings("alice", "pw", "pbx.example", listening, tls_required=True).rows())
    assert rows["Port"] == "5061 (TLS)"
    assert rows["Transport"] == (
        "TLS: set the phone to TLS (required: UDP and TCP are refused for this account)"
    )
    # No TLS listener: the account cannot work yet, and the fields say so.
    rows = dict(
        phone_settings("alice", "pw", "pbx.example", listening[:2], tls_required=True).rows()
    )
    assert rows["Port"] == "5060 (UDP or TCP)"
    assert "no TLS listener" in rows["Transport"]


async def test_tcp_framing_caps_apply_on_tls(tmp_path: Path, ca: TestCa, server_pair: Pair) -> None:
    """Hostile bytes after a good handshake: a header block past the stream buffer closes the
    connection (as on TCP); nothing is routed and other phones are served."""
    pbx = await _start(tmp_path, server_pair)
    try:
        received = pbx.transport.received_messages
        async with TlsClient(_tls_address(pbx), _client_context(ca)) as client:
            with contextlib.suppress(ConnectionError):
                await client.send(b"REGISTER sip:pbx.test SIP/2.0\r\nX: " + b"A" * 300_000)
            assert await client.closed_by_peer(3)
        assert pbx.transport.received_messages == received
        assert pbx.transport.connection_count == 0
        assert await _register_over_tls(pbx, ca) == 200
    finally:
        await pbx.stop()
