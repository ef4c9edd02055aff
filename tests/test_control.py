"""The control socket in one process: the codec and the protocol against hostile lines, the
SO_PEERCRED check, and a real ControlServer over a real Pbx on loopback (requests, the live
push, and a console that stops reading)."""

from __future__ import annotations

import ast
import asyncio
import dataclasses
import inspect
import json
import math
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
from conftest import DOMAIN, USERS
from support.client import UdpClient, request_text
from support.phone import Phone

from core.control import server as control_server
from core.control.client import ControlClient, RemoteAdmin, ServiceRefused
from core.control.codec import COMPILED_FIELD_TYPES, CodecError, from_wire, to_wire
from core.control.peers import AccessPolicy, PeerCredentials, peer_credentials, socket_path
from core.control.protocol import (
    PROTOCOL_VERSION,
    PUSH_LINE_BYTES,
    Dropped,
    Hello,
    ProtocolError,
    Pushed,
    Refused,
    Request,
    Subscribe,
    Welcome,
    decode,
)
from core.control.rows import ContactRow
from core.control.server import ControlError, ControlServer
from core.events import SecurityEvent, SipTraffic
from core.media.relay import MediaStats, StreamStats
from core.pbx import Pbx
from core.proxy.calls import CallInfo
from core.security.bans import Ban
from core.users import make_user

# -- the codec --------------------------------------------------------------------------------


def test_events_and_rows_cross_intact_and_hashes_never_leave() -> None:
    traffic = SipTraffic("in", "udp", ("127.0.0.1", 5060), ("127.0.0.1", 5070), b"\x00\xffOPTIONS")
    assert from_wire(json.loads(json.dumps(to_wire(traffic)))) == traffic
    ban = Ban("203.0.113.9", math.inf, math.inf, "by hand", 0)
    assert from_wire(json.loads(json.dumps(to_wire(ban)))) == ban
    user = make_user("alice", "alice-secret-1", DOMAIN)
    wire = to_wire(user)
    assert wire["ha1_md5"] == "" and wire["ha1_sha256"] == ""
    assert from_wire(wire).username == "alice"
    tls_only = from_wire(
        json.loads(json.dumps(to_wire(make_user("bo", "pw", DOMAIN, tls_only=True))))
    )
    assert tls_only.tls_only is True
    with pytest.raises(CodecError, match="true or false"):
        from_wire({**wire, "tls_only": 1})


@pytest.mark.parametrize(
    "wire",
    [
        "not an object",
        {"@": "Pbx"},  # a type that never crosses
        {"@": "__import__"},
        {"@": "ContactRow", "user": "a", "nonsense": 1},
        {"@": "ContactRow", "user": 5},
        {"@": "SipTraffic", "data": {"b64": "!!!"}},
        {"@": "SipTraffic", "remote": ["127.0.0.1"]},
        {"@": "ContactRow", "user": "a"},  # missing fields
        {"@": "SecurityEvent", "action": "x", "source": "1.2.3.4", "count": True},
    ],
)
def test_hostile_objects_are_refused(wire: object) -> None:
    with pytest.raises(CodecError):
        from_wire(wire)


def test_the_declared_field_types_of_compiled_classes_match_their_source() -> None:
    """mypyc erases a compiled dataclass's annotations, so the codec declares them; the
    declaration must say what the source says (read from the source, compiled or not)."""
    for cls, declared in COMPILED_FIELD_TYPES.items():
        module = sys.modules[cls.__module__]
        # The source beside the module, compiled or not (a compiled one is a .so of that name).
        source = Path(inspect.getfile(module)).parent / (cls.__module__.rsplit(".", 1)[1] + ".py")
        tree = ast.parse(source.read_text())
        written: dict[str, str] = {}
        # The fields of the class and of its bases in the same module (an event's `at`),
        # base first as dataclasses order them; class variables are not fields.
        for base in reversed(cls.__mro__):
            if base.__module__ != cls.__module__:
                continue
            node = next(
                item for item in ast.walk(tree)
                if isinstance(item, ast.ClassDef) and item.name == base.__name__
            )  # fmt: skip
            for statement in node.body:
                if (
                    isinstance(statement, ast.AnnAssign)
                    and isinstance(statement.target, ast.Name)
                    and not ast.unparse(statement.annotation).startswith("ClassVar")
                ):
                    written[statement.target.id] = ast.unparse(statement.annotation)
        assert declared == written, cls.__name__
        assert list(declared) == [field.name for field in dataclasses.fields(cls)], cls.__name__


def test_a_calls_media_counters_cross_and_a_flood_of_streams_is_refused() -> None:
    """The Calls pane of an attached console shows the relay's counters: they cross intact,
    and a reply claiming thousands of streams is refused, not built."""
    stream = StreamStats(120, 20_640, 118, 20_296, 3, False, 0.5, 12.0)
    call = CallInfo(
        "c1", "alice", "bob", "127.0.0.21:5060", "answered", 1.0, 2.0,
        media=MediaStats((stream,), 0.2),
    )  # fmt: skip
    assert from_wire(json.loads(json.dumps(to_wire(call))), CallInfo) == call
    wire = json.loads(json.dumps(to_wire(call)))
    wire["media"]["streams"] = [wire["media"]["streams"][0]] * 10_000
    with pytest.raises(CodecError):
        from_wire(wire, CallInfo)


def test_a_wrong_type_where_an_event_is_expected_is_refused() -> None:
    row = ContactRow("a", "sip:a@x", ("1.2.3.4", 5), "udp", "", 0.0)
    with pytest.raises(CodecError):
        from_wire(to_wire(row), SecurityEvent)


# -- the protocol -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "line",
    [
        b"",
        b"\xff\xfe",
        b"[1, 2]",
        b'{"t": "hello", "version": NaN}',
        b'{"t": "hello", "version": "1"}',
        b'{"t": "hello", "version": true}',
        b'{"t": "request", "id": 1, "op": "status", "args": [], "x": 1}',
        b'{"t": "welcome"}',  # a type the reader does not accept here
        b'{"t": "nope"}',
        b'{"version": 1}',
    ],
)
def test_hostile_lines_are_protocol_errors(line: bytes) -> None:
    with pytest.raises(ProtocolError):
        decode(line, (Hello, Request))


def test_pushed_events_are_cut_into_bounded_lines() -> None:
    big = SipTraffic("in", "udp", ("127.0.0.1", 1), ("127.0.0.1", 2), b"x" * 65_000)
    encoded = [json.dumps(to_wire(big))] * 12
    lines = Pushed.lines(encoded)
    assert len(lines) > 1
    assert all(len(line) <= PUSH_LINE_BYTES + len(encoded[0]) + 100 for line in lines)
    events = [wire for line in lines for wire in decode(line, (Pushed,)).events]  # type: ignore[attr-defined]
    assert [from_wire(wire) for wire in events] == [big] * 12


def test_messages_round_trip() -> None:
    request = Request(7, "add_user", {"username": "dave"})
    assert decode(request.encode(), (Request,)) == request


# -- who may connect --------------------------------------------------------------------------


def test_the_credential_check_allows_owner_root_and_the_group_only() -> None:
    policy = AccessPolicy(owner_uid=1000)
    assert policy.allows(PeerCredentials(10, 1000, 1000))
    assert policy.allows(PeerCredentials(10, 0, 0))
    assert not policy.allows(PeerCredentials(10, 1001, 1001))
    assert not policy.allows(PeerCredentials(10, 1001, 1000))  # same gid, no group allowed
    assert policy.socket_mode == 0o600
    grouped = AccessPolicy(owner_uid=1000, group_gid=4242)
    assert grouped.allows(PeerCredentials(10, 1001, 4242))
    assert not grouped.allows(PeerCredentials(10, 1001, 1001))
    assert grouped.socket_mode == 0o660
    with pytest.raises(ValueError, match="does not exist"):
        AccessPolicy.for_group("no-such-group-pbxtui")


def test_peer_credentials_are_the_kernels() -> None:
    left, right = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    with left, right:
        peer = peer_credentials(left)
    assert (peer.pid, peer.uid, peer.gid) == (os.getpid(), os.geteuid(), os.getegid())


def test_socket_paths_sit_next_to_the_database_or_in_the_runtime_directory(
    tmp_path: Path,
) -> None:
    db = tmp_path / "pbx.db"
    assert socket_path(db, "") == tmp_path / "pbx.db.ctl"
    under_systemd = socket_path(db, "/run/pbxtui")
    assert under_systemd.parent == Path("/run/pbxtui") and under_systemd.name.endswith(".ctl")
    deep = tmp_path / ("x" * 120) / "pbx.db"
    assert len(os.fsencode(socket_path(deep, ""))) <= 107


# -- a real server ----------------------------------------------------------------------------


async def _serve(pbx: Pbx, folder: Path, **kwargs: object) -> ControlServer:
    path = folder / "pbx.db.ctl"
    server = ControlServer(pbx, path, AccessPolicy(os.geteuid()), **kwargs)  # type: ignore[arg-type]
    await server.start()
    return server


async def _raw(path: Path) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.open_unix_connection(str(path), limit=1 << 20)


async def test_requests_run_with_the_services_validation(pbx: Pbx, tmp_path: Path) -> None:
    server = await _serve(pbx, tmp_path)
    try:
        assert oct(os.stat(server.path).st_mode & 0o777) == "0o600"
        client = await ControlClient.connect(server.path)
        admin = RemoteAdmin(client)
        status = await admin.status()
        assert status.pid == os.getpid() and status.users == len(USERS)
        await admin.add_user("dave", "dave-secret-4", display_name="Dave")
        assert pbx.users.get("dave") is not None  # in force at once: the route sees it
        with pytest.raises(ValueError, match="already exists"):
            await admin.add_user("dave", "dave-secret-4")
        with pytest.raises(ValueError, match="contains ' '"):
            await admin.add_carrier("bad name", ["192.0.2.1"])
        with pytest.raises(ValueError, match="unknown operation"):
            await client.call("drop_tables")
        with pytest.raises(ValueError, match="takes no argument"):
            await client.call("status", evil=1)
        with pytest.raises(ValueError, match="wrong type"):
            await client.call("delete_user", username=["a"])
        await admin.ban("203.0.113.7", 60, "test")
        assert "203.0.113.7" in {ban.ip for ban in pbx.security.bans(pbx.clock())}
        address = (pbx.listening[0].host, pbx.listening[0].port)
        async with UdpClient(address) as phone_socket:
            answer = await Phone(phone_socket, "dave", "dave-secret-4").register()
            assert answer is not None and answer.status == 200
        rows = await admin.registrations()
        assert [row.user for row in rows] == ["dave"]
        # The per-user TLS switch crosses the socket and is in force at once.
        changed = await admin.update_user("dave", tls_only=True)
        assert changed.tls_only and pbx.users.get("dave").tls_only  # type: ignore[union-attr]
        with pytest.raises(ValueError, match="TLS only must be true or false"):
            await admin.update_user("dave", tls_only="yes")
        async with UdpClient(address) as phone_socket:
            answer = await Phone(phone_socket, "dave", "dave-secret-4").register()
            assert answer is not None and answer.status == 403
        await client.close()
    finally:
        await server.stop()
    assert not server.path.exists()


async def test_a_mismatched_version_gets_a_clear_refusal(pbx: Pbx, tmp_path: Path) -> None:
    server = await _serve(pbx, tmp_path)
    try:
        reader, writer = await _raw(server.path)
        writer.write(Hello(PROTOCOL_VERSION + 1, "future console").encode())
        answer = decode(await reader.readline(), (Refused,))
        assert isinstance(answer, Refused) and "control protocol 1" in answer.reason
        assert await reader.readline() == b""  # and closed
        writer.close()
    finally:
        await server.stop()


async def test_hostile_clients_are_cut_off_and_the_service_goes_on(
    pbx: Pbx, tmp_path: Path
) -> None:
    server = await _serve(pbx, tmp_path, max_clients=3)
    try:
        for garbage in (b"\x00" * 100 + b"\n", b"{" * 70_000 + b"\n", b'{"t":"request"}\n'):
            reader, writer = await _raw(server.path)
            writer.write(garbage)
            reply = await reader.read(1 << 20)
            assert b"refused" in reply
            writer.close()
        # An over-long request after a good hello ends that connection only.
        reader, writer = await _raw(server.path)
        writer.write(Hello(PROTOCOL_VERSION).encode())
        assert isinstance(decode(await reader.readline(), (Welcome,)), Welcome)
        writer.write(
            b'{"t":"request","id":1,"op":"status","args":{"x":"' + b"a" * 100_000 + b'"}}\n'
        )
        assert b"too long" in await reader.read(1 << 20)
        writer.close()
        # Too many clients: the fourth is told so, and so is one that never says hello.
        clients = [await ControlClient.connect(server.path) for _ in range(3)]
        with pytest.raises(ServiceRefused, match="too many"):
            await ControlClient.connect(server.path)
        for client in clients[1:]:
            await client.close()
        silent = [await _raw(server.path) for _ in range(2)]
        await asyncio.sleep(0.05)
        with pytest.raises(ServiceRefused, match="too many"):
            await ControlClient.connect(server.path)
        for _reader, writer in silent:
            writer.close()
        clients = clients[:1]
        for client in clients:
            await client.close()
        await asyncio.sleep(0.05)
        client = await ControlClient.connect(server.path)
        assert (await RemoteAdmin(client).status()).users == len(USERS)
        await client.close()
    finally:
        await server.stop()


async def test_a_second_service_on_the_same_database_is_refused(pbx: Pbx, tmp_path: Path) -> None:
    server = await _serve(pbx, tmp_path)
    try:
        with pytest.raises(ControlError, match="already runs"):
            await _serve(pbx, tmp_path)
    finally:
        await server.stop()
    # A socket file left by a killed service is taken over.
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(str(tmp_path / "pbx.db.ctl"))
    stale.close()
    server = await _serve(pbx, tmp_path)
    await server.stop()


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to run a peer as another uid")
async def test_a_peer_with_another_uid_is_refused(pbx: Pbx, tmp_path: Path) -> None:
    """A real process running as `nobody` connects; SO_PEERCRED, not the file mode, refuses
    it (the socket is opened to everyone here to reach the check)."""
    folder = Path(tempfile.mkdtemp(prefix="pbxtui-peer-"))  # reachable by `nobody`
    os.chmod(folder, 0o755)
    server = await _serve(pbx, folder)
    try:
        os.chmod(server.path, 0o666)
        # The refusal comes before the service reads a byte: the probe only listens.
        probe = (
            "import socket,sys;s=socket.socket(socket.AF_UNIX);s.connect(sys.argv[1]);"
            "print(s.recv(4096).decode())"
        )
        process = await asyncio.create_subprocess_exec(
            "/usr/bin/python3",  # the venv under /root is not for other users
            "-c",
            probe,
            str(server.path),
            stdout=subprocess.PIPE,
            user=65534,
            group=65534,
        )
        output, _ = await asyncio.wait_for(process.communicate(), 10)
        assert b"not allowed" in output
        assert server.links == set()
    finally:
        await server.stop()
        shutil.rmtree(folder, ignore_errors=True)


async def test_the_feed_is_pushed_live(pbx: Pbx, tmp_path: Path) -> None:
    server = await _serve(pbx, tmp_path)
    try:
        client = await ControlClient.connect(server.path)
        pushed: list[object] = []
        client.on_push = pushed.append
        client.subscribe(feed=True, traffic=True)
        await asyncio.sleep(0.05)
        assert pbx.bus.capture_traffic
        host, port = pbx.listening[0].host, pbx.listening[0].port
        async with UdpClient((host, port)) as phone_socket:
            await Phone(phone_socket, "alice", USERS["alice"]).register()
        deadline = time.monotonic() + 3
        kinds: set[str] = set()
        while time.monotonic() < deadline and not {"SipTraffic", "ContactRegistered"} <= kinds:
            await asyncio.sleep(0.05)
            kinds = {
                wire["@"]
                for message in pushed
                if isinstance(message, Pushed)
                for wire in message.events
            }
        assert {"SipTraffic", "ContactRegistered"} <= kinds
        await client.close()
        await asyncio.sleep(0.05)
        assert not pbx.bus.capture_traffic  # nobody shows traffic: the route builds none
    finally:
        await server.stop()


async def test_a_console_that_stops_reading_costs_the_service_nothing(
    pbx: Pbx, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """It subscribes and never reads: its queue stops at the high-water mark, the rest is
    counted, the service keeps answering at once, and when it reads again it is told."""
    monkeypatch.setattr(control_server, "HIGH_WATER", 64 * 1024)
    server = await _serve(pbx, tmp_path)
    try:
        reader, writer = await _raw(server.path)
        sock = writer.get_extra_info("socket")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        writer.write(Hello(PROTOCOL_VERSION).encode() + Subscribe(True, True).encode())
        await asyncio.sleep(0.1)
        (link,) = server.links
        host, port = pbx.listening[0].host, pbx.listening[0].port
        slowest = 0.0
        async with UdpClient((host, port)) as probe:
            for round_ in range(40):
                for index in range(50):
                    probe.send(
                        request_text(
                            "OPTIONS",
                            f"sip:{host}:{port}",
                            local=probe.local,
                            call_id=f"slow-{round_}-{index}",
                            user_agent="x" * 900,
                        )
                    )
                started = time.monotonic()
                answer = await probe.response(timeout=2)
                slowest = max(slowest, time.monotonic() - started)
                assert answer is not None and answer.status == 200
                while await probe.recv(0.001) is not None:
                    pass
                await asyncio.sleep(0.02)
        buffered = link.writer.transport.get_write_buffer_size()
        skipped = link.not_sent + link.dropped_total
        assert skipped > 0, "the console never fell behind: the test proves nothing"
        # Bounded: the high-water mark plus one tick's batch at most.
        assert buffered < 64 * 1024 + 100 * 70_000
        assert slowest < 1.0
        # Reading again: the console is told how many it lost.
        dropped = 0
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and not dropped:
            line = await asyncio.wait_for(reader.readline(), 5)
            if line.startswith(b'{"t":"dropped"'):
                message = decode(line, (Dropped,))
                assert isinstance(message, Dropped)
                dropped = message.count
        assert dropped > 0
        writer.close()
    finally:
        await server.stop()
