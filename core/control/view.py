"""The one face of the core the console sees, whether the core runs in this process or not.

Screens read `CoreView` only: the settings, a bus with the traffic and feed rings, snapshots
(registrations, bans, calls, figures) and the admin calls. `LocalCore` wraps a `Pbx` in this
process (the one-process console); `RemoteCore` (core/control/client.py) mirrors a service
over its control socket. A pane never knows which one it has, and never touches a socket or
the database.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

from core.control.rows import ContactRow

if TYPE_CHECKING:
    from core.accounting.manage import AccountingAdmin
    from core.events import EventBus
    from core.pbx import Pbx, PbxStats
    from core.proxy.calls import CallInfo
    from core.security.bans import Ban
    from core.settings import ListenAddress, Settings
    from core.store.rows import BanRow, CarrierRow, CdrRow, DidRow
    from core.users import User


class AdminCalls(Protocol):
    """The admin actions a console may run (core/admin.py is the one implementation of their
    rules; a remote console's calls run it in the service)."""

    # Rates, spend limits and today's figures: in the one-process console only (None when
    # attached; `pbxtui rate` and `pbxtui cdr stats` reach a service's).
    accounting: AccountingAdmin | None

    def generate_password(self) -> str: ...
    async def list_users(self) -> list[User]: ...
    async def add_user(self, username: str, password: str, **fields: object) -> User: ...
    async def update_user(self, username: str, **changes: object) -> User: ...
    async def set_password(self, username: str, password: str) -> User: ...
    async def delete_user(self, username: str) -> None: ...
    async def list_carriers(self) -> list[CarrierRow]: ...
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
    ) -> CarrierRow: ...
    async def delete_carrier(self, name: str) -> None: ...
    async def list_dids(self) -> list[DidRow]: ...
    async def add_did(self, number: str, username: str) -> DidRow: ...
    async def delete_did(self, number: str) -> None: ...
    async def ban(
        self, ip: str, seconds: float | None, reason: str = "banned by admin"
    ) -> None: ...
    async def unban(self, ip: str) -> None: ...
    async def list_bans(self) -> list[BanRow]: ...
    async def unregister(self, user: str, contact: str) -> None: ...
    async def list_cdrs(self, limit: int = 200, text: str | None = None) -> list[CdrRow]: ...
    async def has_console_password(self) -> bool: ...
    async def set_console_password(self, password: str) -> None: ...
    async def check_console_password(self, password: str) -> bool: ...


class CoreView(Protocol):
    settings: Settings
    bus: EventBus  # the rings the console drains: the core's own, or a mirror of them
    admin: AdminCalls
    attached: bool  # the core runs in another process (a service)
    not_shown: int  # messages the service skipped while this console fell behind

    @property
    def listening(self) -> list[ListenAddress]: ...
    def clock(self) -> float: ...
    def stats(self) -> PbxStats: ...
    def calls(self) -> list[CallInfo]: ...
    def registrations(self) -> list[ContactRow]: ...
    def contact_count(self, user: str) -> int: ...
    def bans(self, now: float) -> list[Ban]: ...
    def mode_label(self) -> str: ...
    def describe(self) -> str: ...
    def quit_question(self) -> str: ...
    async def start(self) -> None: ...
    async def stop(self) -> None: ...


class LocalCore:
    """The core in this process: the console starts it, and stops it when it quits."""

    attached = False
    not_shown = 0

    def __init__(self, pbx: Pbx) -> None:
        self.pbx = pbx
        self.settings = pbx.settings
        self.bus = pbx.bus

    @property
    def admin(self) -> AdminCalls:
        return self.pbx.admin

    @property
    def listening(self) -> list[ListenAddress]:
        return self.pbx.listening

    def clock(self) -> float:
        return self.pbx.clock()

    def stats(self) -> PbxStats:
        return self.pbx.stats()

    def calls(self) -> list[CallInfo]:
        return self.pbx.calls()

    def registrations(self) -> list[ContactRow]:
        return [ContactRow.of(binding) for binding in self.pbx.location.all_bindings()]

    def contact_count(self, user: str) -> int:
        return len(self.pbx.location.bindings_of(user))

    def bans(self, now: float) -> list[Ban]:
        return self.pbx.security.bans(now)

    def mode_label(self) -> str:
        """A few words for the navigation line: does quitting stop the SIP server?"""
        return "one process"

    def describe(self) -> str:
        return "one process: quitting stops the SIP server"

    def quit_question(self) -> str:
        return (
            "Quit the console? The SIP server runs in this process and stops with it: "
            "phones lose their registrations and every call up is cut. "
            "(Run `pbxtui --headless` as a service to keep it running.)"
        )

    async def start(self) -> None:
        await self.pbx.start()
        self.bus = self.pbx.bus

    async def stop(self) -> None:
        await self.pbx.stop()
