"""baresip (libre's TLS over OpenSSL, a real softphone stack) on ;transport=tls against the
server: it verifies our certificate, registers, and calls a phone on UDP through us.

The cross-transport case of RFC 5658: the INVITE reaches the UDP phone with two Record-Route
entries, the one facing baresip marked transport=tls, and the UDP phone's BYE reaches baresip
on the connection baresip opened (RFC 5923). baresip must be installed: the test fails, not
skips, without it (.ci/run installs it).
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from conftest import USERS, start_pbx
from support.certs import Pair, TestCa
from support.client import UdpClient
from support.phone import Phone

from core.pbx import Pbx
from core.settings import ListenAddress, TlsSettings
from core.sip.address import parse_name_addr
from core.sip.message import Request, Response
from core.sip.parser import parse_message

SDP = (
    "v=0\r\no=bob 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
    "m=audio 40002 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n"
)


@pytest.fixture(scope="module")
def ca(tmp_path_factory: pytest.TempPathFactory) -> TestCa:
    return TestCa(tmp_path_factory.mktemp("ca"))


@pytest.fixture(scope="module")
def server_pair(ca: TestCa) -> Pair:
    return ca.issue("pbx.test", alt_names=("DNS:pbx.test", "IP:127.0.0.1"))


def _address(pbx: Pbx, transport: str) -> tuple[str, int]:
    address = next(a for a in pbx.listening if a.transport == transport)
    return address.host, address.port


@contextlib.asynccontextmanager
async def baresip(
    home: Path, ca: TestCa, tls: tuple[str, int], commands: tuple[str, ...] = ()
) -> AsyncIterator[asyncio.subprocess.Process]:
    """baresip as alice, registering over TLS to `tls`, checking our certificate."""
    executable = shutil.which("baresip")
    assert executable is not None, "baresip is not installed (apt-get install baresip)"
    home.mkdir(parents=True, exist_ok=True)
    host, port = tls
    (home / "accounts").write_text(
        f"<sip:alice@pbx.test;transport=tls>;auth_pass={USERS['alice']};"
        f'outbound="sip:{host}:{port};transport=tls";regint=600\n'
    )
    (home / "config").write_text(
        "poll_method epoll\n"
        "sip_listen 127.0.0.1:0\n"
        f"sip_cafile {ca.certificate}\n"
        "sip_verify_server yes\n"
        "module_path /usr/lib/baresip/modules\n"
        "module g711.so\nmodule ausine.so\nmodule aufile.so\nmodule account.so\nmodule menu.so\n"
        f"audio_player aufile,{home / 'heard.wav'}\n"
        "audio_source ausine,440\n"
    )
    arguments = ["-f", str(home), "-t", "30"]
    for command in commands:
        arguments += ["-e", command]
    process = await asyncio.create_subprocess_exec(
        executable,
        *arguments,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )
    try:
        yield process
    finally:
        if process.returncode is None:
            process.terminate()
            try:
                await asyncio.wait_for(process.wait(), 3)
            except TimeoutError:
                process.kill()
                await process.wait()


async def _until(condition, timeout: float = 8.0) -> None:  # type: ignore[no-untyped-def]
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not condition():
        assert loop.time() < deadline, "timed out"
        await asyncio.sleep(0.05)


async def _udp_next(client: UdpClient, wanted, timeout: float = 8.0):  # type: ignore[no-untyped-def]
    while True:
        data = await client.recv(timeout)
        assert data is not None, "nothing more arrived over UDP"
        message = parse_message(data)
        if wanted(message):
            return message


async def _start(tmp_path: Path, pair: Pair) -> Pbx:
    return await start_pbx(
        tmp_path,
        listen=(ListenAddress("udp", "127.0.0.1", 0), ListenAddress("tls", "127.0.0.1", 0)),
        tls=TlsSettings(certificate=str(pair.certificate), key=str(pair.key)),
    )


async def test_baresip_registers_over_tls_and_calls_a_udp_phone(
    tmp_path: Path, ca: TestCa, server_pair: Pair
) -> None:
    pbx = await _start(tmp_path, server_pair)
    try:
        async with UdpClient(_address(pbx, "udp")) as bob_socket:
            bob = Phone(bob_socket, "bob", USERS["bob"])
            assert (await bob.register()).status == 200  # type: ignore[union-attr]
            async with baresip(
                tmp_path / "baresip", ca, _address(pbx, "tls"), ("/dial bob@pbx.test",)
            ):
                await _until(lambda: pbx.location.lookup("alice", pbx.clock()))
                [binding] = pbx.location.lookup("alice", pbx.clock())
                assert binding.flow.transport == "tls"
                assert "baresip" in binding.user_agent

                invite = await _udp_next(
                    bob_socket, lambda m: isinstance(m, Request) and m.method == "INVITE"
                )
                routes = invite.headers.values("record-route")
                tls_port = _address(pbx, "tls")[1]
                assert len(routes) == 2, routes
                assert "transport=tls" not in routes[0]  # the entry facing bob: UDP
                assert f"127.0.0.1:{tls_port};transport=tls;lr" in routes[1]  # facing baresip

                headers = invite.headers
                to = (headers.get("to") or "") + ";tag=bob1"
                answer = "\r\n".join(
                    [
                        "SIP/2.0 200 OK",
                        *(f"Via: {value}" for value in headers.values("via")),
                        *(f"Record-Route: {value}" for value in routes),
                        f"From: {headers.get('from')}",
                        f"To: {to}",
                        f"Call-ID: {invite.call_id}",
                        f"CSeq: {headers.get('cseq')}",
                        f"Contact: <sip:bob@{bob_socket.local[0]}:{bob_socket.local[1]}>",
                        "Content-Type: application/sdp",
                        f"Content-Length: {len(SDP)}",
                        "",
                        SDP,
                    ]
                )
                bob_socket.send(answer)
                await _udp_next(bob_socket, lambda m: isinstance(m, Request) and m.method == "ACK")

                from_header = headers.get("from") or ""
                baresip_uri = parse_name_addr(headers.get("contact") or "").uri
                bye = "\r\n".join(
                    [
                        f"BYE {baresip_uri} SIP/2.0",
                        f"Via: SIP/2.0/UDP {bob_socket.local[0]}:{bob_socket.local[1]};"
                        "branch=z9hG4bKbyebob1;rport",
                        "Max-Forwards: 70",
                        f"From: {to}",
                        f"To: {from_header}",
                        f"Call-ID: {invite.call_id}",
                        "CSeq: 1 BYE",
                        f"Route: {', '.join(routes)}",
                        "Content-Length: 0",
                        "",
                        "",
                    ]
                )
                bob_socket.send(bye)
                ok = await _udp_next(bob_socket, lambda m: isinstance(m, Response))
                assert ok.status == 200  # baresip answered the BYE, which came down its own TLS
                assert pbx.transport.connection_count == 1  # the one connection baresip opened
    finally:
        await pbx.stop()
