"""Bad input never kills or wedges the server.

Each test throws something hostile at a real socket, then proves the server still answers
an ordinary OPTIONS on the same transport.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from pathlib import Path

import pytest
from support.client import TcpClient, UdpClient, request_text

from core.pbx import Pbx


def _address(pbx: Pbx) -> tuple[str, int]:
    return pbx.listening[0].host, pbx.listening[0].port


async def _still_answers_udp(pbx: Pbx) -> None:
    address = _address(pbx)
    async with UdpClient(address) as client:
        uri = f"sip:{address[0]}:{address[1]}"
        response = await client.ask(request_text("OPTIONS", uri, local=client.local))
    assert response is not None and response.status == 200


async def _still_answers_tcp(pbx: Pbx) -> None:
    address = _address(pbx)
    async with TcpClient(address) as client:
        uri = f"sip:{address[0]}:{address[1]};transport=tcp"
        await client.send(request_text("OPTIONS", uri, local=client.local, transport="TCP"))
        data = await client.read_message()
    assert data is not None and data.startswith(b"SIP/2.0 200")


def _options(pbx: Pbx, local: tuple[str, int], **kwargs: object) -> str:
    address = _address(pbx)
    return request_text("OPTIONS", f"sip:{address[0]}:{address[1]}", local=local, **kwargs)  # type: ignore[arg-type]


async def test_binary_garbage_is_dropped(pbx: Pbx) -> None:
    async with UdpClient(_address(pbx)) as client:
        for _ in range(50):
            client.send(os.urandom(512))
        client.send(b"\x00" * 1400)
        assert await client.recv(0.3) is None
    await _still_answers_udp(pbx)


async def test_truncated_message_is_dropped(pbx: Pbx) -> None:
    async with UdpClient(_address(pbx)) as client:
        text = _options(pbx, client.local)
        client.send(text[: len(text) // 2])
        assert await client.recv(0.3) is None
    await _still_answers_udp(pbx)


async def test_60kb_header_over_udp_is_parsed_and_answered(pbx: Pbx) -> None:
    # A UDP datagram can't carry 100 KB; the largest that fits is still a valid message.
    async with UdpClient(_address(pbx)) as client:
        huge = "X-Huge: " + "a" * 60_000 + "\r\n"
        response = await client.ask(_options(pbx, client.local, extra=huge))
    assert response is not None and response.status == 200
    await _still_answers_udp(pbx)


async def test_datagram_over_the_size_cap_is_dropped(tmp_path: Path) -> None:
    from dataclasses import replace

    from conftest import start_pbx

    from core.settings import TransportSettings

    server = await start_pbx(
        tmp_path, users={}, transport=replace(TransportSettings(), max_message_bytes=4_096)
    )
    try:
        async with UdpClient(_address(server)) as client:
            client.send(_options(server, client.local, extra="X-Pad: " + "b" * 5_000 + "\r\n"))
            assert await client.recv(0.3) is None
        assert server.transport.oversized == 1
        await _still_answers_udp(server)
    finally:
        await server.stop()


async def test_100kb_header_over_tcp_gets_413_and_close(pbx: Pbx) -> None:
    async with TcpClient(_address(pbx)) as client:
        huge = "X-Huge: " + "a" * 100_000 + "\r\n"
        with contextlib.suppress(ConnectionError):
            await client.send(_options(pbx, client.local, extra=huge, transport="TCP"))
        assert await client.closed_by_peer(3.0)
    await _still_answers_tcp(pbx)


async def test_no_blank_line_after_headers(pbx: Pbx) -> None:
    async with UdpClient(_address(pbx)) as client:
        text = _options(pbx, client.local).replace("\r\n\r\n", "\r\n")
        client.send(text)
        assert await client.recv(0.3) is None
    await _still_answers_udp(pbx)


async def test_content_length_larger_than_body_gets_400(pbx: Pbx) -> None:
    async with UdpClient(_address(pbx)) as client:
        text = _options(pbx, client.local, body="v=0\r\n").replace(
            "Content-Length: 5", "Content-Length: 500"
        )
        response = await client.ask(text)
    assert response is not None and response.status == 400
    assert "Content-Length" in response.reason
    await _still_answers_udp(pbx)


async def test_content_length_smaller_than_body_is_cut(pbx: Pbx) -> None:
    async with UdpClient(_address(pbx)) as client:
        text = _options(pbx, client.local, body="v=0\r\nextra bytes").replace(
            "Content-Length: 16", "Content-Length: 5"
        )
        response = await client.ask(text)
    # §18.3: bytes past Content-Length are discarded; the request itself is fine.
    assert response is not None and response.status == 200


async def test_tcp_half_message_then_stall_does_not_block_others(pbx: Pbx) -> None:
    async with TcpClient(_address(pbx)) as staller:
        text = _options(pbx, staller.local, transport="TCP")
        await staller.send(text[:40])
        await _still_answers_tcp(pbx)
        await _still_answers_udp(pbx)
        # and the staller can finish its message later on the same connection
        await staller.send(text[40:])
        data = await staller.read_message()
        assert data is not None and data.startswith(b"SIP/2.0 200")


async def test_tcp_idle_connection_is_closed(tmp_path: Path) -> None:
    from dataclasses import replace

    from conftest import start_pbx

    from core.settings import TransportSettings

    server = await start_pbx(
        tmp_path, users={}, transport=replace(TransportSettings(), tcp_idle_seconds=1.0)
    )
    try:
        async with TcpClient(_address(server)) as client:
            await client.send(b"OPT")  # half a start line, then silence
            assert await client.closed_by_peer(5.0)
    finally:
        await server.stop()


async def test_ten_thousand_tcp_connections_opened_and_dropped(pbx: Pbx) -> None:
    address = _address(pbx)

    async def open_and_drop() -> None:
        try:
            _reader, writer = await asyncio.open_connection(*address)
        except OSError:
            return
        writer.close()

    for _ in range(20):
        await asyncio.gather(*(open_and_drop() for _ in range(500)))
    await asyncio.sleep(0.2)
    await _still_answers_tcp(pbx)
    await _still_answers_udp(pbx)
    assert pbx.transport.connection_count < 50


@pytest.mark.parametrize(
    "payload",
    [
        b"\r\n\r\n",
        b"SIP/2.0 200 OK\r\n\r\n",
        b"INVITE sip:bob@pbx.test SIP/3.0\r\nVia: SIP/2.0/UDP 1.2.3.4;branch=z9hG4bKx\r\n\r\n",
        b"INVITE\r\n\r\n",
        "REGISTER sip:pbx.test SIP/2.0\r\nVia: \u00ff\u00fe\r\n\r\n".encode(),
    ],
)
async def test_odd_messages_never_crash(pbx: Pbx, payload: bytes) -> None:
    async with UdpClient(_address(pbx)) as client:
        client.send(payload)
        await client.recv(0.2)
    await _still_answers_udp(pbx)
