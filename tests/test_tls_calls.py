"""A call across transports: a phone on TLS calls a phone on UDP, through the real server.

RFC 5658 double Record-Route (one entry per side, each naming the transport that side
reaches us on), RFC 5923 connection reuse (the BYE to the TLS phone comes down the connection
it opened), the SDP's a=crypto lines untouched (SRTP keys are the phones' business), and a
sips: Request-URI never forwarded over UDP (RFC 5630 §3.1.1).
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import socket
import ssl
from pathlib import Path

import pytest
from conftest import USERS, start_pbx
from support.certs import Pair, TestCa
from support.client import TlsClient, UdpClient
from support.phone import Phone

from core.events import SecurityEvent
from core.net.flow import Flow
from core.pbx import Pbx
from core.settings import DialplanSettings, ListenAddress, TlsSettings
from core.sip.digest import build_authorization, pick_challenge
from core.sip.fields import parse_auth
from core.sip.message import Request, Response
from core.sip.parser import parse_message

CRYPTO = (
    "a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:WVNfX19zZW1jdGwgKCkgewkyMjA7fQp9CnVubGVz|2^20|1:32"
)
SDP = (
    "v=0\r\no=alice 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
    f"m=audio 40000 RTP/SAVP 0\r\n{CRYPTO}\r\n"
)


@pytest.fixture(scope="module")
def ca(tmp_path_factory: pytest.TempPathFactory) -> TestCa:
    return TestCa(tmp_path_factory.mktemp("ca"))


@pytest.fixture(scope="module")
def server_pair(ca: TestCa) -> Pair:
    return ca.issue("pbx.test", alt_names=("DNS:pbx.test", "IP:127.0.0.1"))


async def _start(tmp_path: Path, pair: Pair) -> Pbx:
    return await start_pbx(
        tmp_path,
        listen=(ListenAddress("udp", "127.0.0.1", 0), ListenAddress("tls", "127.0.0.1", 0)),
        tls=TlsSettings(certificate=str(pair.certificate), key=str(pair.key)),
    )


def _address(pbx: Pbx, transport: str) -> tuple[str, int]:
    address = next(a for a in pbx.listening if a.transport == transport)
    return address.host, address.port


class TlsCaller:
    """Alice on a TLS connection: INVITE with digest, then ACK, then answers the BYE."""

    def __init__(self, client: TlsClient, uri: str) -> None:
        self.client = client
        self.uri = uri
        self.call_id = secrets.token_hex(8)
        self.tag = secrets.token_hex(4)
        self.cseq = 0

    def request(self, method: str, *, to_tag: str = "", extra: str = "", body: str = "") -> str:
        if method != "ACK":
            self.cseq += 1
        host, port = self.client.local
        to = f"<{self.uri}>" + (f";tag={to_tag}" if to_tag else "")
        return (
            f"{method} {self.uri} SIP/2.0\r\n"
            f"Via: SIP/2.0/TLS {host}:{port};branch=z9hG4bK{secrets.token_hex(6)};rport\r\n"
            "Max-Forwards: 70\r\n"
            f"From: <sip:alice@pbx.test>;tag={self.tag}\r\n"
            f"To: {to}\r\n"
            f"Call-ID: {self.call_id}\r\n"
            f"CSeq: {self.cseq} {method}\r\n"
            f"Contact: <sip:alice@{host}:{port};transport=tls>\r\n"
            f"{extra}"
            + ("Content-Type: application/sdp\r\n" if body else "")
            + f"Content-Length: {len(body.encode())}\r\n\r\n{body}"
        )

    async def invite(self) -> None:
        """INVITE, then again with the answer to the 407."""
        await self.client.send(self.request("INVITE", body=SDP))
        first = await _next(self.client, lambda m: isinstance(m, Response) and m.status == 407)
        assert isinstance(first, Response)
        auth = pick_challenge([parse_auth(v) for v in first.headers.get_all("Proxy-Authenticate")])
        assert auth is not None
        credentials = build_authorization(auth, "alice", USERS["alice"], "INVITE", self.uri)
        await self.client.send(
            self.request("INVITE", extra=f"Proxy-Authorization: {credentials}\r\n", body=SDP)
        )


async def _next(client: TlsClient, wanted, timeout: float = 3.0):  # type: ignore[no-untyped-def]
    """The next message on the connection that `wanted` accepts."""
    while True:
        data = await client.read_message(timeout)
        assert data is not None, "nothing more arrived on the TLS connection"
        message = parse_message(data)
        if wanted(message):
            return message


async def _udp_next(client: UdpClient, wanted, timeout: float = 3.0):  # type: ignore[no-untyped-def]
    while True:
        data = await client.recv(timeout)
        assert data is not None, "nothing more arrived over UDP"
        message = parse_message(data)
        if wanted(message):
            return message


def _is_request(method: str):  # type: ignore[no-untyped-def]
    return lambda m: isinstance(m, Request) and m.method == method


def _is_status(status: int):  # type: ignore[no-untyped-def]
    return lambda m: isinstance(m, Response) and m.status == status


def _reply(request: Request, status: int, reason: str, extra: str = "", body: str = "") -> str:
    """bob's answer: the request's Via, From, To (+tag), Call-ID, CSeq, Record-Route."""
    headers = request.headers
    lines = [f"SIP/2.0 {status} {reason}"]
    lines += [f"Via: {value}" for value in headers.values("via")]
    lines += [f"Record-Route: {value}" for value in headers.values("record-route")]
    to = headers.get("to") or ""
    if "tag=" not in to:
        to += ";tag=bobtag"
    lines += [f"From: {headers.get('from')}", f"To: {to}", f"Call-ID: {request.call_id}"]
    lines.append(f"CSeq: {headers.get('cseq')}")
    text = "\r\n".join(lines) + "\r\n" + extra
    return text + f"Content-Length: {len(body.encode())}\r\n\r\n{body}"


@pytest.mark.parametrize("reloads", [0, 5], ids=["", "across-certificate-reloads"])
async def test_tls_phone_calls_udp_phone_with_a_record_route_per_side(
    tmp_path: Path, ca: TestCa, server_pair: Pair, reloads: int
) -> None:
    """With `reloads`, the certificate is loaded again five times while the call is up, each
    time with a new phone registering over a new TLS connection: the call is not dropped
    (its BYE still comes down alice's connection, and is answered)."""
    pbx = await _start(tmp_path, server_pair)
    udp_host, udp_port = _address(pbx, "udp")
    tls_host, tls_port = _address(pbx, "tls")
    context = ssl.create_default_context(cafile=str(ca.certificate))
    try:
        async with (
            UdpClient((udp_host, udp_port)) as bob_socket,
            TlsClient((tls_host, tls_port), context) as alice_socket,
        ):
            bob = Phone(bob_socket, "bob", USERS["bob"])
            assert (await bob.register()).status == 200  # type: ignore[union-attr]
            alice = TlsCaller(alice_socket, "sip:bob@pbx.test")
            await alice.invite()

            invite = await _udp_next(bob_socket, _is_request("INVITE"))
            assert invite.vias[0].transport == "UDP"
            routes = invite.headers.values("record-route")
            assert len(routes) == 2, routes
            assert f"sip:127.0.0.1:{udp_port};lr" in routes[0]  # the entry facing bob (UDP)
            assert f"sip:127.0.0.1:{tls_port};transport=tls;lr" in routes[1]  # facing alice
            assert CRYPTO in invite.body.decode()  # SRTP keys pass untouched (RFC 4568)

            bob_contact = f"Contact: <sip:bob@{bob_socket.local[0]}:{bob_socket.local[1]}>\r\n"
            bob_socket.send(_reply(invite, 200, "OK", bob_contact, SDP))
            ok = await _next(alice_socket, _is_status(200))
            assert ok.headers.values("record-route") == routes
            to_tag = ok.to_tag

            # alice's route set is the Record-Route reversed (§12.1.2): TLS entry first.
            route = ", ".join(reversed(routes))
            await alice_socket.send(
                alice.request("ACK", to_tag=to_tag, extra=f"Route: {route}\r\n")
            )
            await _udp_next(bob_socket, _is_request("ACK"))

            for _ in range(reloads):
                result = pbx.reload_certificate()
                assert result is not None and result.ok
                async with TlsClient((tls_host, tls_port), context) as carol_socket:
                    carol = Phone(carol_socket, "carol", USERS["carol"])
                    carol.transport = "TLS"
                    assert (await carol.register()).status == 200  # type: ignore[union-attr]

            # bob hangs up: his route set is the Record-Route as received (§12.1.1).
            bob_bye = (
                f"BYE sip:alice@{alice_socket.local[0]}:{alice_socket.local[1]};transport=tls "
                "SIP/2.0\r\n"
                f"Via: SIP/2.0/UDP {bob_socket.local[0]}:{bob_socket.local[1]};"
                f"branch=z9hG4bK{secrets.token_hex(6)};rport\r\n"
                "Max-Forwards: 70\r\n"
                f"From: <sip:bob@pbx.test>;tag={to_tag}\r\n"
                f"To: <sip:alice@pbx.test>;tag={alice.tag}\r\n"
                f"Call-ID: {alice.call_id}\r\nCSeq: 1 BYE\r\n"
                f"Route: {', '.join(routes)}\r\nContent-Length: 0\r\n\r\n"
            )
            bob_socket.send(bob_bye)
            # RFC 5923: the BYE comes down the connection alice opened, not a new one.
            bye = await _next(alice_socket, _is_request("BYE"))
            assert bye.vias[0].transport == "TLS"
            await alice_socket.send(_reply(bye, 200, "OK"))
            await _udp_next(bob_socket, _is_status(200))
        assert pbx.transport.connection_count <= 1
    finally:
        await pbx.stop()


async def test_sips_request_uri_is_not_forwarded_over_udp(
    tmp_path: Path, ca: TestCa, server_pair: Pair
) -> None:
    pbx = await _start(tmp_path, server_pair)
    context = ssl.create_default_context(cafile=str(ca.certificate))
    try:
        async with (
            UdpClient(_address(pbx, "udp")) as bob_socket,
            TlsClient(_address(pbx, "tls"), context) as alice_socket,
        ):
            bob = Phone(bob_socket, "bob", USERS["bob"])
            assert (await bob.register()).status == 200  # type: ignore[union-attr]
            alice = TlsCaller(alice_socket, "sips:bob@pbx.test")
            await alice.invite()
            refused = await _next(alice_socket, _is_status(480))
            assert "TLS" in refused.reason
            assert await bob_socket.recv(0.3) is None  # nothing reached bob over UDP
    finally:
        await pbx.stop()


# -- carriers over TLS -------------------------------------------------------------------------
CARRIER_IP = "127.0.0.2"


class TlsGateway:
    """A carrier's TLS server on loopback: records every byte it is sent."""

    def __init__(self, pair: Pair) -> None:
        self.context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self.context.load_cert_chain(str(pair.certificate), str(pair.key))
        self.received = b""
        self.arrived = asyncio.Event()
        self.server: asyncio.Server | None = None
        self.port = 0

    async def __aenter__(self) -> TlsGateway:
        async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            with contextlib.suppress(ConnectionError, ssl.SSLError):
                while data := await reader.read(65536):
                    self.received += data
                    self.arrived.set()
            writer.close()

        self.server = await asyncio.start_server(serve, CARRIER_IP, 0, ssl=self.context)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.server is not None
        self.server.close()


async def _call_out_over_tls(
    tmp_path: Path, ca: TestCa, server_pair: Pair, gateway_pair: Pair
) -> tuple[Pbx, TlsGateway]:
    """alice (on TLS) dials a national number; the carrier's gateway speaks TLS."""
    pbx = await start_pbx(
        tmp_path,
        listen=(ListenAddress("udp", "127.0.0.1", 0), ListenAddress("tls", "127.0.0.1", 0)),
        tls=TlsSettings(
            certificate=str(server_pair.certificate),
            key=str(server_pair.key),
            ca_file=str(ca.certificate),
        ),
        dialplan=DialplanSettings(country_code="44"),
    )
    await pbx.admin.update_user("alice", outbound_policy="national", caller_id="+441632960100")
    gateway = await TlsGateway(gateway_pair).__aenter__()
    await pbx.admin.add_carrier(
        "acme", [f"{CARRIER_IP}/32"], gateway=f"{CARRIER_IP}:{gateway.port}", transport="tls"
    )
    context = ssl.create_default_context(cafile=str(ca.certificate))
    alice_socket = await TlsClient(_address(pbx, "tls"), context).open()
    await TlsCaller(alice_socket, "sip:01632960555@pbx.test").invite()
    return pbx, gateway


def _security(pbx: Pbx, action: str) -> list[SecurityEvent]:
    events, _cursor, _missed = pbx.bus.feed.read_since(0)
    return [e for e in events if isinstance(e, SecurityEvent) and e.action == action]


async def _wait_for(condition, timeout: float = 5.0) -> None:  # type: ignore[no-untyped-def]
    for _ in range(int(timeout / 0.05)):
        if condition():
            return
        await asyncio.sleep(0.05)


async def test_a_call_reaches_a_tls_gateway_whose_certificate_verifies(
    tmp_path: Path, ca: TestCa, server_pair: Pair
) -> None:
    gateway_pair = ca.issue("sbc.carrier.test", alt_names=(f"IP:{CARRIER_IP}",))
    pbx, gateway = await _call_out_over_tls(tmp_path, ca, server_pair, gateway_pair)
    try:
        await asyncio.wait_for(gateway.arrived.wait(), 5)
        await _wait_for(lambda: b"\r\n\r\n" in gateway.received)
        head = gateway.received[: gateway.received.index(b"\r\n\r\n")].decode()
        request_line, _, headers = head.partition("\r\n")
        assert request_line.startswith(f"INVITE sip:+441632960555@{CARRIER_IP}:{gateway.port}")
        assert "transport=tls" in request_line
        assert "\r\nVia: SIP/2.0/TLS 127.0.0.1:" in "\r\n" + headers
        assert _security(pbx, "tls-verify-failed") == []
    finally:
        await gateway.__aexit__()
        await pbx.stop()


@pytest.mark.parametrize(
    ("problem", "alt_names", "end", "expected"),
    [
        ("expired", (f"IP:{CARRIER_IP}",), "210101000000Z", "certificate has expired"),
        ("wrong host", ("DNS:other.example",), None, "IP address mismatch"),
    ],
)
async def test_a_tls_gateway_with_a_bad_certificate_is_refused_with_an_event(
    tmp_path: Path,
    ca: TestCa,
    server_pair: Pair,
    problem: str,
    alt_names: tuple[str, ...],
    end: str | None,
    expected: str,
) -> None:
    gateway_pair = ca.issue("sbc.carrier.test", alt_names=alt_names, end=end)
    pbx, gateway = await _call_out_over_tls(tmp_path, ca, server_pair, gateway_pair)
    try:
        await _wait_for(lambda: _security(pbx, "tls-verify-failed"))
        [event] = _security(pbx, "tls-verify-failed")[:1]
        assert event.source == CARRIER_IP
        assert expected in event.detail, (problem, event.detail)
        assert b"INVITE" not in gateway.received  # nothing was sent in the clear, or at all
    finally:
        await gateway.__aexit__()
        await pbx.stop()


async def test_the_gateway_name_not_its_address_is_checked(
    tmp_path: Path, ca: TestCa, server_pair: Pair
) -> None:
    """A gateway configured by name: its certificate must carry that name (RFC 5922 §7.2)."""
    gateway_pair = ca.issue("sbc.carrier.test")  # DNS:sbc.carrier.test only
    pbx = await start_pbx(
        tmp_path,
        listen=(ListenAddress("udp", "127.0.0.1", 0), ListenAddress("tls", "127.0.0.1", 0)),
        tls=TlsSettings(
            certificate=str(server_pair.certificate),
            key=str(server_pair.key),
            ca_file=str(ca.certificate),
        ),
    )
    local = _address(pbx, "tls")
    try:
        async with TlsGateway(gateway_pair) as right, TlsGateway(gateway_pair) as wrong:
            for gateway, name in ((right, "sbc.carrier.test"), (wrong, "wrong.carrier.test")):
                remote = (CARRIER_IP, gateway.port)
                pbx.tls.expect_name(remote, name)
                pbx.transport.send(b"OPTIONS sip:x SIP/2.0\r\n\r\n", Flow("tls", remote, local))
            await asyncio.wait_for(right.arrived.wait(), 5)
            assert right.received.startswith(b"OPTIONS")
            await _wait_for(lambda: _security(pbx, "tls-verify-failed"))
            [event] = _security(pbx, "tls-verify-failed")
            assert "wrong.carrier.test" in event.detail and "mismatch" in event.detail
            assert wrong.received == b""
    finally:
        await pbx.stop()


@pytest.mark.parametrize(
    ("transport", "client_name", "expected"),
    [
        ("udp", None, 407),  # the right address, but no certificate: anyone (digest)
        ("tls", None, 407),
        ("tls", "sbc.other.test", 407),
        ("tls", "sbc.acme.test", 404),  # the carrier: no digest, an unknown DID → 404
    ],
)
async def test_a_carrier_with_a_required_subject_is_trusted_only_with_that_certificate(
    tmp_path: Path,
    ca: TestCa,
    server_pair: Pair,
    transport: str,
    client_name: str | None,
    expected: int,
) -> None:
    pbx = await start_pbx(
        tmp_path,
        listen=(ListenAddress("udp", "127.0.0.1", 0), ListenAddress("tls", "127.0.0.1", 0)),
        tls=TlsSettings(
            certificate=str(server_pair.certificate),
            key=str(server_pair.key),
            ca_file=str(ca.certificate),
            carrier_subjects=("acme=sbc.acme.test",),
        ),
    )
    try:
        await pbx.admin.add_carrier("acme", [f"{CARRIER_IP}/32"])
        await _wait_for(lambda: pbx.trunks.is_carrier(CARRIER_IP))
        branch = secrets.token_hex(6)
        invite = (
            "INVITE sip:+441632960999@pbx.test SIP/2.0\r\n"
            f"Via: SIP/2.0/{transport.upper()} {CARRIER_IP}:5061;branch=z9hG4bK{branch};rport\r\n"
            "Max-Forwards: 70\r\nFrom: <sip:+441632960111@carrier.test>;tag=c1\r\n"
            "To: <sip:+441632960999@pbx.test>\r\nCall-ID: carrier-subject-test\r\n"
            "CSeq: 1 INVITE\r\nContact: <sip:+441632960111@127.0.0.2>\r\n"
            "Content-Length: 0\r\n\r\n"
        )
        response: Response | None = None
        if transport == "udp":
            loop = asyncio.get_running_loop()
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
                sock.bind((CARRIER_IP, 0))
                sock.setblocking(False)
                sock.sendto(invite.encode(), _address(pbx, "udp"))
                while response is None or response.status < 200:
                    data = await asyncio.wait_for(loop.sock_recv(sock, 65536), 3)
                    message = parse_message(data)
                    assert isinstance(message, Response)
                    response = message
        else:
            context = ssl.create_default_context(cafile=str(ca.certificate))
            if client_name is not None:
                pair = ca.issue(client_name)
                context.load_cert_chain(str(pair.certificate), str(pair.key))
            async with TlsClient(_address(pbx, "tls"), context, local_ip=CARRIER_IP) as client:
                response = await client.ask(invite)
        assert response is not None and response.status == expected
    finally:
        await pbx.stop()


async def test_tls_gateway_names_are_known_once_resolved(tmp_path: Path, server_pair: Pair) -> None:
    """The name comes with the resolution, so the process that holds the connections knows it
    whichever process routed the call."""
    pbx = await _start(tmp_path, server_pair)
    try:
        await pbx.admin.add_carrier(
            "acme", [f"{CARRIER_IP}/32"], gateway="localhost:5061", transport="tls"
        )
        await _wait_for(lambda: pbx.tls.server_name(("127.0.0.1", 5061)) == "localhost")
        assert pbx.tls.server_name(("127.0.0.1", 5061)) == "localhost"
        assert pbx.tls.server_name(("127.0.0.1", 5062)) == "127.0.0.1"  # not a gateway
    finally:
        await pbx.stop()


@pytest.mark.parametrize("presents_certificate", [True, False])
async def test_mutual_tls_to_a_carrier_that_requires_a_client_certificate(
    tmp_path: Path, ca: TestCa, server_pair: Pair, presents_certificate: bool
) -> None:
    gateway_pair = ca.issue("sbc.carrier.test", alt_names=(f"IP:{CARRIER_IP}",))
    client_pair = ca.issue("pbx.test")
    pbx = await start_pbx(
        tmp_path,
        listen=(ListenAddress("udp", "127.0.0.1", 0), ListenAddress("tls", "127.0.0.1", 0)),
        tls=TlsSettings(
            certificate=str(server_pair.certificate),
            key=str(server_pair.key),
            ca_file=str(ca.certificate),
            client_certificate=str(client_pair.certificate) if presents_certificate else "",
            client_key=str(client_pair.key) if presents_certificate else "",
        ),
    )
    try:
        async with TlsGateway(gateway_pair) as gateway:
            gateway.context.verify_mode = ssl.CERT_REQUIRED  # the carrier insists
            gateway.context.load_verify_locations(cafile=str(ca.certificate))
            remote = (CARRIER_IP, gateway.port)
            options = b"OPTIONS sip:sbc.carrier.test SIP/2.0\r\n\r\n"
            pbx.transport.send(options, Flow("tls", remote, _address(pbx, "tls")))
            if presents_certificate:
                await asyncio.wait_for(gateway.arrived.wait(), 5)
                assert gateway.received.startswith(b"OPTIONS")
            else:
                await asyncio.sleep(1.0)
                assert gateway.received == b""
                assert pbx.transport.connection_count == 0
    finally:
        await pbx.stop()


@pytest.mark.parametrize("subjects", [(), ("acme=sbc.acme.test",)])
async def test_a_carriers_in_dialog_identity_is_kept_only_when_the_carrier_is_trusted(
    tmp_path: Path, subjects: tuple[str, ...]
) -> None:
    """RFC 3325 §9.1 in the dialog: a carrier's connected-line update (P-Asserted-Identity)
    reaches the phone only from a source the route trusts as the carrier. With a required
    certificate subject, the carrier's address over UDP (no certificate) is not enough."""
    from test_trunks import Caller, Peer, alice_tag, grant_outbound

    pbx = await start_pbx(tmp_path, tls=TlsSettings(carrier_subjects=subjects))
    try:
        await grant_outbound(pbx)
        async with Peer(pbx, user="alice") as alice, Peer(pbx, CARRIER_IP, "gw") as gateway:
            await pbx.admin.add_carrier(
                "acme", [f"{CARRIER_IP}/32"], gateway=f"{CARRIER_IP}:{gateway.port}"
            )
            call_id, _invite = await Caller(alice).call("01632-960555")
            invite = await gateway.expect("INVITE")
            assert isinstance(invite, Request)
            gateway.respond(invite, 200, tag="gw1")
            ok = await alice.expect(
                200, where=lambda m: m.cseq is not None and m.cseq.method == "INVITE"
            )
            alice.send(
                alice.request(
                    "ACK",
                    f"sip:gw@{CARRIER_IP}:{gateway.port}",
                    call_id=call_id,
                    cseq=2,
                    tag=alice_tag(ok),
                    to=ok.headers.get("to"),
                    routes=tuple(reversed(ok.headers.values("record-route"))),
                )
            )
            await gateway.expect("ACK")
            assert invite.from_addr is not None and invite.to_addr is not None
            contact = invite.headers.get("contact")
            assert contact is not None
            gateway.send(
                gateway.request(
                    "UPDATE",
                    contact.strip("<>"),
                    call_id=call_id,
                    cseq=1,
                    tag="gw1",
                    from_uri=str(invite.to_addr.uri),
                    to=invite.headers.get("from"),
                    routes=tuple(invite.headers.values("record-route")),
                    extra=("P-Asserted-Identity: <sip:+441632960555@carrier.test>",),
                )
            )
            update = await alice.expect("UPDATE")
            kept = update.headers.get_all("p-asserted-identity")
            assert kept == ([] if subjects else ["<sip:+441632960555@carrier.test>"])
    finally:
        await pbx.stop()
