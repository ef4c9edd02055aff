"""The client side of the control socket: the CLI's calls and an attached console's core.

`ControlClient` is one connection: hello, numbered requests answered by replies, and the
pushes of a subscription handed to a callback. `RemoteCore` is the `CoreView` of a console
attached to a service: it mirrors the service's rings into a local `EventBus` (so the
console's models drain it exactly as they drain a local core's), keeps snapshots of the
registrations, bans and calls fresh (each second, and at once after an event that changes
them), and runs every admin call in the service through `RemoteAdmin`.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import itertools
import logging
import math
import socket
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from core.control.codec import CodecError, from_wire
from core.control.peers import candidate_paths
from core.control.protocol import (
    MAX_LINE,
    PROTOCOL_VERSION,
    Dropped,
    Figures,
    Hello,
    Message,
    ProtocolError,
    Pushed,
    Refused,
    Reply,
    Request,
    Subscribe,
    Welcome,
    decode,
)
from core.control.rows import ContactRow, ServiceStatus
from core.events import (
    CallEvent,
    ContactExpired,
    ContactRegistered,
    ContactUnregistered,
    Event,
    EventBus,
    SipTraffic,
    SourceBanned,
    SourceUnbanned,
)
from core.pbx import PbxStats
from core.proxy.calls import CallInfo
from core.security.bans import Ban
from core.settings import ListenAddress, Settings
from core.store.rows import BanRow, CarrierRow, CdrRow, DidRow
from core.users import User, generate_password

log = logging.getLogger("pbxtui.control")

CONNECT_TIMEOUT = 3.0
REQUEST_TIMEOUT = 30.0  # bcrypt at a high cost, a CDR search over a big table
SNAPSHOT_SECONDS = 1.0
# Snapshots are asked for at most this often, however many registrations a loaded service
# reports: each costs the service a pass over its location table.
MIN_SNAPSHOT_GAP = 0.5
WANTED_SECONDS = 3.0  # a snapshot no pane read for this long is no longer fetched
T = TypeVar("T")
# Events after which the snapshots are fetched at once rather than at the next second.
_SNAPSHOT_EVENTS = (
    ContactRegistered,
    ContactUnregistered,
    ContactExpired,
    SourceBanned,
    SourceUnbanned,
    CallEvent,
)


class ServiceUnavailable(Exception):
    """No service answers on this database's control socket."""


class ServiceRefused(Exception):
    """The service answered and said no (not allowed, another version, too many consoles)."""


class ControlClient:
    """One connection to a service, after a successful hello."""

    def __init__(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, welcome: Welcome
    ) -> None:
        self.welcome = welcome
        self.on_push: Callable[[Message], None] = lambda message: None
        self.on_lost: Callable[[str], None] = lambda reason: None
        self._reader = reader
        self._writer = writer
        self._ids = itertools.count(1)
        self._waiting: dict[int, asyncio.Future[Reply]] = {}
        self._reading = asyncio.create_task(self._read_forever(), name="control-client")
        self.closed = False

    @classmethod
    async def connect(cls, path: Path, client: str = "pbxtui") -> ControlClient:
        try:
            reader, writer = await asyncio.wait_for(
                asyncio.open_unix_connection(str(path), limit=MAX_LINE), CONNECT_TIMEOUT
            )
        except (OSError, TimeoutError) as error:
            raise ServiceUnavailable(f"no service on {path}: {error}") from None
        writer.write(Hello(PROTOCOL_VERSION, client).encode())
        try:
            line = await asyncio.wait_for(reader.readline(), CONNECT_TIMEOUT)
            answer = decode(line, (Welcome, Refused))
        except (TimeoutError, ValueError, ConnectionError) as error:
            writer.close()
            raise ServiceRefused(f"the service did not greet this client ({error})") from None
        if isinstance(answer, Refused):
            writer.close()
            raise ServiceRefused(answer.reason)
        assert isinstance(answer, Welcome)
        return cls(reader, writer, answer)

    async def call(self, op: str, **args: object) -> Any:
        """Run `op` in the service; its JSON result, or ValueError with the service's reason."""
        if self.closed:
            raise ConnectionError("the connection to the service is closed")
        request_id = next(self._ids)
        waiter: asyncio.Future[Reply] = asyncio.get_running_loop().create_future()
        self._waiting[request_id] = waiter
        self._writer.write(Request(request_id, op, dict(args)).encode())
        try:
            reply = await asyncio.wait_for(waiter, REQUEST_TIMEOUT)
        finally:
            self._waiting.pop(request_id, None)
        if reply.error is not None:
            raise ValueError(reply.error)
        return reply.result

    def subscribe(self, *, feed: bool = True, traffic: bool = False) -> None:
        self._writer.write(Subscribe(feed, traffic).encode())

    async def close(self) -> None:
        self.closed = True
        self._reading.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._reading
        self._writer.close()
        with contextlib.suppress(Exception):
            await self._writer.wait_closed()

    async def _read_forever(self) -> None:
        reason = "the service closed the connection"
        try:
            while True:
                line = await self._reader.readline()
                if not line:
                    break
                message = decode(line, (Reply, Pushed, Figures, Dropped, Refused))
                if isinstance(message, Reply):
                    waiter = self._waiting.get(message.id)
                    if waiter is not None and not waiter.done():
                        waiter.set_result(message)
                elif isinstance(message, Refused):
                    reason = f"the service closed the connection: {message.reason}"
                    break
                else:
                    self.on_push(message)
        except (ConnectionError, ProtocolError, CodecError, ValueError) as error:
            reason = f"the connection to the service broke: {error}"
        except asyncio.CancelledError:
            raise
        self.closed = True
        for waiter in self._waiting.values():
            if not waiter.done():
                waiter.set_exception(ConnectionError(reason))
        self.on_lost(reason)


def running_service(db_path: Path) -> Path | None:
    """The control socket of the service running on `db_path`, None when none runs.

    A blocking probe (a connect, nothing sent), for the CLI to choose its way before any
    event loop runs. ServiceRefused when a service runs but this user may not reach it: the
    caller must say so rather than write to the database behind the service's back.
    """
    for path in candidate_paths(db_path):
        if not path.exists():
            continue
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
            probe.settimeout(CONNECT_TIMEOUT)
            try:
                probe.connect(str(path))
            except PermissionError:
                raise ServiceRefused(
                    f"a pbxtui service runs on this database, but this user may not use its "
                    f"control socket {path} (run as the service's user, root, or a member of "
                    "its control_group)"
                ) from None
            except OSError as error:
                if error.errno in (errno.ECONNREFUSED, errno.ENOENT, errno.ENOTSOCK):
                    continue  # a socket file left behind by a service that was killed
                raise ServiceUnavailable(f"cannot reach {path}: {error}") from None
        return path
    return None


def _one(value: object, cls: type[T]) -> T:
    item = from_wire(value, cls)
    return item  # type: ignore[no-any-return]


def _many(value: object, cls: type[T]) -> list[T]:
    if not isinstance(value, list):
        raise CodecError("expected a list")
    return [from_wire(item, cls) for item in value]


class RemoteAdmin:
    """`AdminCalls` carried out by the service: its validation, its database, at once."""

    accounting = None  # rates and today's figures are not carried over the socket

    def __init__(self, client: ControlClient) -> None:
        self._client = client

    def generate_password(self) -> str:
        return generate_password()

    async def list_users(self) -> list[User]:
        return _many(await self._client.call("list_users"), User)

    async def add_user(self, username: str, password: str, **fields: object) -> User:
        result = await self._client.call(
            "add_user", username=username, password=password, fields=_listed(fields)
        )
        return _one(result, User)

    async def update_user(self, username: str, **changes: object) -> User:
        result = await self._client.call("update_user", username=username, fields=_listed(changes))
        return _one(result, User)

    async def set_password(self, username: str, password: str) -> User:
        return _one(
            await self._client.call("set_password", username=username, password=password), User
        )

    async def delete_user(self, username: str) -> None:
        await self._client.call("delete_user", username=username)

    async def list_carriers(self) -> list[CarrierRow]:
        return _many(await self._client.call("list_carriers"), CarrierRow)

    async def add_carrier(
        self,
        name: str,
        addresses: list[str],
        *,
        gateway: str | None = None,
        port: int | None = None,
        transport: str = "udp",
        username: str | None = None,
        password: str | None = None,
        priority: int = 10,
    ) -> CarrierRow:
        result = await self._client.call(
            "add_carrier",
            name=name,
            addresses=list(addresses),
            gateway=gateway,
            port=port,
            transport=transport,
            username=username,
            password=password,
            priority=priority,
        )
        return _one(result, CarrierRow)

    async def delete_carrier(self, name: str) -> None:
        await self._client.call("delete_carrier", name=name)

    async def list_dids(self) -> list[DidRow]:
        return _many(await self._client.call("list_dids"), DidRow)

    async def add_did(self, number: str, username: str) -> DidRow:
        return _one(await self._client.call("add_did", number=number, username=username), DidRow)

    async def delete_did(self, number: str) -> None:
        await self._client.call("delete_did", number=number)

    async def ban(self, ip: str, seconds: float | None, reason: str = "banned by admin") -> None:
        await self._client.call("ban", ip=ip, seconds=seconds, reason=reason)

    async def unban(self, ip: str) -> None:
        await self._client.call("unban", ip=ip)

    async def list_bans(self) -> list[BanRow]:
        return _many(await self._client.call("list_bans"), BanRow)

    async def unregister(self, user: str, contact: str) -> None:
        await self._client.call("unregister", user=user, contact=contact)

    async def list_cdrs(self, limit: int = 200, text: str | None = None) -> list[CdrRow]:
        return _many(await self._client.call("list_cdrs", limit=limit, text=text), CdrRow)

    async def has_console_password(self) -> bool:
        return bool(await self._client.call("has_console_password"))

    async def set_console_password(self, password: str) -> None:
        await self._client.call("set_console_password", password=password)

    async def check_console_password(self, password: str) -> bool:
        return bool(await self._client.call("check_console_password", password=password))

    async def status(self) -> ServiceStatus:
        return _one(await self._client.call("status"), ServiceStatus)

    async def registrations(self, user: str | None = None) -> list[ContactRow]:
        args = {"user": user} if user else {}
        return _many(await self._client.call("registrations", **args), ContactRow)


def _listed(fields: dict[str, object]) -> dict[str, object]:
    return {
        name: list(value) if isinstance(value, tuple) else value for name, value in fields.items()
    }


def _listen_address(text: str) -> ListenAddress:
    transport, _, rest = text.partition(":")
    host, _, port = rest.rpartition(":")
    return ListenAddress(transport, host.strip("[]"), int(port) if port.isdigit() else 0)


class RemoteCore:
    """A service's core as an attached console sees it (`CoreView`)."""

    attached = True

    def __init__(self, settings: Settings, path: Path) -> None:
        self.settings = settings
        self.path = path
        self.client: ControlClient | None = None
        self.admin: RemoteAdmin = None  # type: ignore[assignment]  # set by start()
        self.bus = EventBus(settings.events.traffic_capacity, settings.events.feed_capacity)
        self.not_shown = 0
        self.lost: str | None = None  # why the connection ended, once it has
        self.on_lost: Callable[[str], None] = lambda reason: None
        self._stats = PbxStats(0, 0, 0, 0, 0, 0, 0)
        self._contacts: list[ContactRow] = []
        self._contacts_by_user: dict[str, int] = {}
        self._bans: list[Ban] = []
        self._calls: list[CallInfo] = []
        # Snapshot name → when a pane last read it: only those are fetched (a console on the
        # Traffic pane costs the service no pass over its location table).
        self._wanted_at: dict[str, float] = {}
        self._stale = asyncio.Event()
        self._refreshing: asyncio.Task[None] | None = None

    @property
    def welcome(self) -> Welcome | None:
        return self.client.welcome if self.client is not None else None

    @property
    def listening(self) -> list[ListenAddress]:
        welcome = self.welcome
        return [_listen_address(text) for text in welcome.listening] if welcome else []

    def clock(self) -> float:
        return time.time()

    def stats(self) -> PbxStats:
        return self._stats

    def calls(self) -> list[CallInfo]:
        self._want("calls")
        return self._calls

    def registrations(self) -> list[ContactRow]:
        self._want("registrations")
        return self._contacts

    def contact_count(self, user: str) -> int:
        self._want("registrations")
        return self._contacts_by_user.get(user, 0)

    def bans(self, now: float) -> list[Ban]:
        self._want("bans")
        return [ban for ban in self._bans if ban.until > now]

    def _want(self, snapshot: str) -> None:
        """A pane reads `snapshot`: keep it fresh for a while (fetch it now if it was not)."""
        now = time.monotonic()
        if now - self._wanted_at.get(snapshot, -math.inf) > WANTED_SECONDS:
            self._stale.set()
        self._wanted_at[snapshot] = now

    def _pid(self) -> str:
        welcome = self.welcome
        return str(welcome.pid) if welcome else "?"

    def mode_label(self) -> str:
        """A few words for the navigation line: does quitting stop the SIP server?"""
        return f"attached · service pid {self._pid()}"

    def describe(self) -> str:
        return f"attached to the service (pid {self._pid()}); detaching leaves it running"

    def quit_question(self) -> str:
        return (
            f"Detach the console? The SIP server (pid {self._pid()}) keeps running with "
            "its registrations and calls."
        )

    async def start(self) -> None:
        """Connect, subscribe, take the first snapshots. ServiceUnavailable / ServiceRefused
        (both with a sentence) when the service is gone or says no."""
        self.client = client = await ControlClient.connect(self.path, "pbxtui console")
        self.admin = RemoteAdmin(client)
        client.on_push = self._pushed
        client.on_lost = self._lost
        client.subscribe(feed=True, traffic=True)
        await self.refresh_snapshots(("registrations", "bans", "calls"))
        self._refreshing = asyncio.create_task(self._refresh_forever(), name="console-snapshots")

    async def stop(self) -> None:
        if self._refreshing is not None:
            self._refreshing.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._refreshing
        if self.client is not None:
            self.client.on_lost = lambda reason: None  # a detach is not a loss
            await self.client.close()

    async def refresh_snapshots(self, snapshots: tuple[str, ...]) -> None:
        client = self.client
        assert client is not None
        if "registrations" in snapshots:
            contacts = _many(await client.call("registrations"), ContactRow)
            by_user: dict[str, int] = {}
            for row in contacts:
                by_user[row.user] = by_user.get(row.user, 0) + 1
            self._contacts = contacts
            self._contacts_by_user = by_user
        if "bans" in snapshots:
            self._bans = _many(await client.call("bans"), Ban)
        if "calls" in snapshots:
            self._calls = _many(await client.call("calls"), CallInfo)

    def _wanted(self) -> tuple[str, ...]:
        now = time.monotonic()
        return tuple(name for name, at in self._wanted_at.items() if now - at <= WANTED_SECONDS)

    async def _refresh_forever(self) -> None:
        assert self.client is not None
        while not self.client.closed:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stale.wait(), SNAPSHOT_SECONDS)
            await asyncio.sleep(MIN_SNAPSHOT_GAP)
            self._stale.clear()
            wanted = self._wanted()
            if not wanted:
                continue
            try:
                await self.refresh_snapshots(wanted)
            except (ConnectionError, ValueError, CodecError, TimeoutError):
                if self.client.closed:
                    return

    def _pushed(self, message: Message) -> None:
        if isinstance(message, Pushed):
            bus = self.bus
            for wire in message.events:
                event: Event = from_wire(wire, Event)
                if type(event) is SipTraffic:
                    bus.traffic.append(event)
                else:
                    bus.feed.append(event)
                    if isinstance(event, _SNAPSHOT_EVENTS):
                        self._stale.set()
        elif isinstance(message, Figures):
            self._stats = PbxStats(
                message.messages_in,
                message.messages_out,
                message.contacts,
                message.calls_up,
                message.bans,
                message.users,
                message.dropped,
            )
            self.bus.counts = {str(key): int(value) for key, value in message.counts.items()}
        elif isinstance(message, Dropped):
            self.not_shown += max(0, message.count)

    def _lost(self, reason: str) -> None:
        self.lost = reason
        self.on_lost(reason)
