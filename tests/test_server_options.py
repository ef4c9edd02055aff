"""The server answers OPTIONS addressed to itself, over UDP and TCP, driven by SIPp."""

from __future__ import annotations

import pytest
from support.client import UdpClient, request_text
from support.sipp import run_sipp

from core.events import SipTraffic
from core.pbx import Pbx


@pytest.mark.parametrize("transport", ["udp", "tcp"])
async def test_sipp_options_answered_200(pbx: Pbx, transport: str) -> None:
    host, port = pbx.listening[0].host, pbx.listening[0].port
    result = await run_sipp("options.xml", host, port, transport=transport, calls=50, rate=100)
    assert result.returncode == 0, str(result)
    assert result.successful == 50


async def test_options_response_lists_capabilities(pbx: Pbx) -> None:
    address = (pbx.listening[0].host, pbx.listening[0].port)
    async with UdpClient(address) as client:
        uri = f"sip:{address[0]}:{address[1]}"
        response = await client.ask(request_text("OPTIONS", uri, local=client.local))
    assert response is not None and response.status == 200
    assert "REGISTER" in (response.headers.get("Allow") or "")
    assert response.headers.get("Accept") == "application/sdp"
    assert response.headers.get("Supported") is not None
    assert response.to_tag is not None


async def test_traffic_is_on_the_bus(pbx: Pbx) -> None:
    address = (pbx.listening[0].host, pbx.listening[0].port)
    async with UdpClient(address) as client:
        uri = f"sip:{address[0]}:{address[1]}"
        await client.ask(request_text("OPTIONS", uri, local=client.local, call_id="bus-check"))
    events, _cursor, missed = pbx.bus.traffic.read_since(0)
    mine = [e for e in events if isinstance(e, SipTraffic) and b"bus-check" in e.data]
    assert [e.direction for e in mine] == ["in", "out"]
    assert missed == 0


@pytest.mark.parametrize(
    ("method", "status"),
    [("FOOBAR", 501), ("SUBSCRIBE", 405), ("PUBLISH", 405)],
)
async def test_requests_to_the_server_it_cannot_handle(pbx: Pbx, method: str, status: int) -> None:
    address = (pbx.listening[0].host, pbx.listening[0].port)
    async with UdpClient(address) as client:
        uri = f"sip:{address[0]}:{address[1]}"
        response = await client.ask(request_text(method, uri, local=client.local))
    assert response is not None and response.status == status
