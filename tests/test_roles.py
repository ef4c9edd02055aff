"""Each role owns what differs between pbxtui's processes, decided before the core is built:
who hears of the core's changes, who pings NATed contacts, the limits a process counts
against, the addresses it names, and how it sends."""

from __future__ import annotations

import pickle
import socket
from pathlib import Path

import pytest
from conftest import make_settings
from support.ports import free_port

from core.accounting.meter import Meter
from core.cluster.changes import BanReplicator, BindingReplicator, CdrForwarder, LimiterReplicator
from core.cluster.main import MainRole
from core.cluster.messages import Send, WorkerSetup
from core.cluster.worker import WorkerRole
from core.events import EventBus
from core.net.flow import Flow
from core.pbx import Pbx, role_for
from core.registrar.location import LocationService
from core.registrar.natping import NatKeepalive
from core.roles import StandaloneRole
from core.settings import ListenAddress, RegistrarSettings
from core.store.database import Store
from core.store.sinks import BanWriter, BindingWriter


def keepalive() -> NatKeepalive:
    bus = EventBus()
    settings = RegistrarSettings()
    return NatKeepalive(settings, LocationService(settings, bus), bus, "pbx.test")


async def test_standalone_and_main_write_the_store_and_ping_and_main_also_replicates(
    tmp_path: Path,
) -> None:
    settings = make_settings(tmp_path / "pbx.db", free_port())
    pinger = keepalive()
    async with await Store.open(tmp_path / "pbx.db") as store:
        standalone = role_for(settings)
        assert isinstance(standalone, StandaloneRole)
        sinks = standalone.sinks(store, Meter("EUR"))
        assert isinstance(sinks.bans, BanWriter)
        assert (sinks.ban_publisher, sinks.binding_publisher, sinks.limiter) == (None, None, None)
        kinds = [type(sink) for sink in standalone.binding_sinks(store, pinger)]
        assert kinds == [BindingWriter, NatKeepalive]

        main = role_for(make_settings(tmp_path / "pbx.db", free_port(), workers=2))
        assert isinstance(main, MainRole)
        sinks = main.sinks(store, Meter("EUR"))
        assert isinstance(sinks.bans, BanWriter)
        assert isinstance(sinks.ban_publisher, BanReplicator)
        assert isinstance(sinks.binding_publisher, BindingReplicator)
        assert isinstance(sinks.limiter, LimiterReplicator)
        kinds = [type(sink) for sink in main.binding_sinks(store, pinger)]
        assert kinds == [BindingWriter, NatKeepalive]
        assert main.limits(settings.security) == settings.security


async def test_a_worker_writes_nothing_pings_nobody_and_sends_tcp_through_main(
    tmp_path: Path,
) -> None:
    settings = make_settings(tmp_path / "pbx.db", free_port(), workers=4)
    bound = (ListenAddress("udp", "127.0.0.1", 5099), ListenAddress("tcp", "127.0.0.1", 5099))
    setup = WorkerSetup(2, 4, bound, capture_traffic=False)
    ours, main_end = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    role = WorkerRole(setup, ours, [])
    try:
        async with await Store.open(tmp_path / "pbx.db") as store:
            sinks = role.sinks(store, Meter("EUR"))
            assert sinks.bans is None  # main stores what workers ban
            assert isinstance(sinks.calls, CdrForwarder)
            assert isinstance(sinks.ban_publisher, BanReplicator)
            assert role.binding_sinks(store, keepalive()) == []  # keep-alives are main's
        assert role.listen(settings) == bound  # main's addresses, before the first datagram
        assert role.limits(settings.security).flood_limit < settings.security.flood_limit

        class Transport:
            sent: list[Flow] = []

            def send(self, data: bytes, flow: Flow) -> bool:
                self.sent.append(flow)
                return True

            @property
            def udp_out(self) -> Transport:  # the compiled UDP lane: the same send here
                return self

        transport = Transport()
        send = role.sender(transport)  # type: ignore[arg-type]
        udp = Flow("udp", ("192.0.2.1", 5060), ("127.0.0.1", 5099))
        tcp = Flow("tcp", ("192.0.2.1", 40000), ("127.0.0.1", 5099), 7)
        assert send(b"OPTIONS", udp) and send(b"BYE", tcp)
        assert transport.sent == [udp]  # TCP connections are main's
        role.links.flush()
        [message] = pickle.loads(main_end.recv(65536))
        assert message == Send(b"BYE", ("tcp", ("192.0.2.1", 40000), ("127.0.0.1", 5099), 7))
    finally:
        role.links.close()
        main_end.close()


async def test_the_pbx_asks_its_role_and_exposes_the_parts_only_once_started(
    tmp_path: Path,
) -> None:
    pbx = Pbx(make_settings(tmp_path / "pbx.db", 0))  # port 0: the kernel picks
    assert isinstance(pbx.role, StandaloneRole) and pbx.bus is pbx.role.bus
    with pytest.raises(RuntimeError, match="not started"):
        pbx.location  # noqa: B018  # the parts exist only once the core is built
    await pbx.start()
    try:
        assert pbx.route.proxy is pbx.proxy and pbx.proxy.carriers is pbx.trunks
        assert pbx.location.sinks[-1] is pbx.natping and pbx.location.publishers == []
        assert all(address.port for address in pbx.listening)
        assert pbx.identity.listen == tuple(pbx.listening)  # the bound ports, not port 0
        assert pbx.identity.ports == {address.port for address in pbx.listening}
    finally:
        await pbx.stop()
