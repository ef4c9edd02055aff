"""First run over the wire: a phone configured with the server's address, advertised address
or host name, instead of the domain, registers (Kamailio's `myself`); another address is
still refused."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
from conftest import USERS, start_pbx
from support.client import UdpClient
from support.phone import Phone
from support.ports import free_port

from core.pbx import Pbx
from core.settings import ListenAddress


def _address(pbx: Pbx) -> tuple[str, int]:
    bound = pbx.listening[0]
    return bound.host, bound.port


async def _register(pbx: Pbx, request_host: str) -> int | None:
    async with UdpClient(_address(pbx)) as client:
        response = await Phone(client, "alice", USERS["alice"], domain=request_host).register()
    return None if response is None else response.status


@pytest.mark.parametrize("request_host", ["127.0.0.1", "127.0.0.1:{port}", "pbx.local"])
async def test_the_default_domain_and_the_servers_address_both_register(
    tmp_path: Path, request_host: str
) -> None:
    pbx = await start_pbx(tmp_path, domain="pbx.local")
    try:
        host = request_host.format(port=_address(pbx)[1])
        assert await _register(pbx, host) == 200
    finally:
        await pbx.stop()


async def test_the_advertised_address_and_the_host_name_register(tmp_path: Path) -> None:
    port = free_port()
    listen = (ListenAddress("udp", "127.0.0.1", port, advertise_host="127.0.0.77"),)
    pbx = await start_pbx(tmp_path, listen=listen)
    try:
        assert await _register(pbx, "127.0.0.77") == 200
        assert await _register(pbx, f"127.0.0.77:{port}") == 200
        assert await _register(pbx, socket.gethostname()) == 200
    finally:
        await pbx.stop()


@pytest.mark.parametrize("request_host", ["127.0.0.78", "127.0.0.1:1", "other.example"])
async def test_an_address_that_is_not_ours_is_refused(tmp_path: Path, request_host: str) -> None:
    port = free_port()
    listen = (ListenAddress("udp", "127.0.0.1", port, advertise_host="127.0.0.77"),)
    pbx = await start_pbx(tmp_path, listen=listen)
    try:
        assert await _register(pbx, request_host) == 403
        assert pbx.location.lookup("alice", pbx.clock()) == []
    finally:
        await pbx.stop()
