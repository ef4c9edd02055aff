"""The management side of a running Pbx: what the console's forms and tables call.

Every change goes to SQLite first and then into the in-memory tables the route reads, so
the hot path sees it at once and a restart keeps it. Bad input raises `ValueError` with a
sentence fit to show under a form field; nothing here ever needs a traceback to explain.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

from core.accounting.manage import AccountingAdmin
from core.events import EventBus, SecurityEvent
from core.registrar.location import LocationService
from core.security.bans import checked_ban
from core.security.console_lock import ConsoleThrottle
from core.security.guard import Security
from core.security.sources import canonical_source
from core.settings import Settings
from core.store.accounting import CdrFilter
from core.store.database import Store
from core.store.errors import DuplicateError, NotFoundError
from core.store.rows import BanRow, CarrierRow, CdrRow, DidRow
from core.trunks.carriers import new_carrier
from core.trunks.dialplan import Dialplan
from core.users import (
    User,
    UserDirectory,
    changed_user,
    check_admin_password,
    generate_password,
    hash_admin_password,
    make_user,
    validate_option_names,
    with_password,
)


class AdminApi:
    """The changes an admin makes, each validated once, stored, then put in force.

    `carriers_changed` reloads carriers and DIDs into the running core; `tables_changed`
    tells whoever else reads users, carriers and DIDs (worker processes) to read them again.
    `accounting` holds the rates, spend limits and today's figures (core/accounting/manage.py).
    """

    def __init__(
        self,
        *,
        store: Store,
        users: UserDirectory,
        location: LocationService,
        security: Security,
        settings: Settings,
        bus: EventBus,
        accounting: AccountingAdmin,
        clock: Callable[[], float],
        carriers_changed: Callable[[], Awaitable[None]],
        tables_changed: Callable[[], None],
    ) -> None:
        self._store = store
        self._users = users
        self._location = location
        self._security = security
        self._settings = settings
        self._bus = bus
        self.accounting = accounting
        self._clock = clock
        self._carriers_changed = carriers_changed
        self._tables_changed = tables_changed
        self._console_throttle = ConsoleThrottle()
        self._console_check = asyncio.Lock()

    # -- users ----------------------------------------------------------------------------
    async def list_users(self) -> list[User]:
        return await self._store.list_users()

    def generate_password(self) -> str:
        return generate_password()

    async def add_user(self, username: str, password: str, **fields: object) -> User:
        validate_option_names(fields)
        user = make_user(username, password, self._settings.realm, **fields)  # type: ignore[arg-type]
        try:
            await self._store.add_user(user)
        except DuplicateError:
            raise ValueError(f"user {username!r} already exists") from None
        self._users.put(user)
        self._tables_changed()
        return user

    async def update_user(self, username: str, **changes: object) -> User:
        updated = changed_user(await self._existing_user(username), **changes)
        await self._store.update_user(updated)
        self._users.put(updated)
        self._tables_changed()
        return updated

    async def set_password(self, username: str, password: str) -> User:
        user = await self._existing_user(username)
        updated = with_password(user, password, self._settings.realm)
        await self._store.update_user(updated)
        self._users.put(updated)
        self._tables_changed()
        return updated

    async def delete_user(self, username: str) -> None:
        if not await self._store.delete_user(username):
            raise ValueError(f"no user {username!r}")
        self._users.remove(username)
        self._location.remove_user(username)
        self._tables_changed()

    async def _existing_user(self, username: str) -> User:
        user = await self._store.get_user(username)
        if user is None:
            raise ValueError(f"no user {username!r}")
        return user

    # -- carriers and DIDs ----------------------------------------------------------------
    async def list_carriers(self) -> list[CarrierRow]:
        return await self._store.list_carriers()

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
        carrier = new_carrier(
            name,
            addresses,
            gateway=gateway,
            port=port,
            transport=transport,
            username=username,
            password=password,
            priority=priority,
        )
        try:
            await self._store.add_carrier(carrier)
        except DuplicateError:
            raise ValueError(f"carrier {carrier.name!r} already exists") from None
        await self._carriers_changed()
        self._tables_changed()
        return carrier

    async def delete_carrier(self, name: str) -> None:
        if not await self._store.delete_carrier(name):
            raise ValueError(f"no carrier {name!r}")
        await self._carriers_changed()
        self._tables_changed()

    async def list_dids(self) -> list[DidRow]:
        return await self._store.list_dids()

    def _did_number(self, number: str) -> str:
        return Dialplan(self._settings.dialplan).did_number(number)

    async def add_did(self, number: str, username: str) -> DidRow:
        canonical = self._did_number(number)
        try:
            await self._store.add_did(canonical, username)
        except (DuplicateError, NotFoundError) as error:
            raise ValueError(str(error)) from None
        await self._carriers_changed()
        self._tables_changed()
        return DidRow(canonical, username)

    async def delete_did(self, number: str) -> None:
        canonical = self._did_number(number)
        if not await self._store.delete_did(canonical):
            raise ValueError(f"no DID {canonical}")
        await self._carriers_changed()
        self._tables_changed()

    # -- bans and registrations -----------------------------------------------------------
    async def ban(self, ip: str, seconds: float | None, reason: str = "banned by admin") -> None:
        address, seconds = checked_ban(ip, seconds)
        self._security.ban(address, seconds, reason, self._clock())

    async def unban(self, ip: str) -> None:
        address = canonical_source(ip)  # an address, or an IPv6 prefix banned as a whole
        if not self._security.unban(address, self._clock()):
            raise ValueError(f"{address} is not banned")

    async def list_bans(self) -> list[BanRow]:
        return await self._store.list_bans(active_at=self._clock())

    async def unregister(self, user: str, contact: str) -> None:
        if not self._location.remove(user, contact):
            raise ValueError(f"{user} has no contact {contact}")

    # -- CDRs -------------------------------------------------------------------------------
    async def list_cdrs(self, limit: int = 200, text: str | None = None) -> list[CdrRow]:
        rows = await self._store.query_cdrs(CdrFilter(), limit if not text else max(limit, 2_000))
        if text:
            needle = text.lower()
            rows = [
                row
                for row in rows
                if needle in row.caller.lower()
                or needle in row.callee.lower()
                or needle in row.source_ip
                or needle in row.call_id.lower()
                or needle in str(row.status)
                or needle in row.disposition
                or needle in row.carrier.lower()
            ][:limit]
        return rows

    # -- console password (bcrypt, never on the SIP path) -----------------------------------
    async def has_console_password(self) -> bool:
        return await self._store.get_admin_hash() is not None

    async def set_console_password(self, password: str) -> None:
        bcrypt_hash = await asyncio.to_thread(hash_admin_password, password)
        await self._store.set_admin_hash(bcrypt_hash)

    async def check_console_password(self, password: str) -> bool:
        """One check at a time, after the wait earlier wrong passwords earned
        (core/security/console_lock.py); each wrong one is a security event."""
        async with self._console_check:
            throttle = self._console_throttle
            wait = throttle.delay(time.monotonic())
            if wait:
                await asyncio.sleep(wait)
            stored = await self._store.get_admin_hash()
            ok = stored is not None and await asyncio.to_thread(
                check_admin_password, password, stored
            )
            if ok:
                throttle.succeeded()
                return True
            next_wait = throttle.failed(time.monotonic())
            self._bus.publish(
                SecurityEvent(
                    action="console-login-failed",
                    source="console",
                    count=throttle.failures,
                    detail=(
                        f"wrong console password ({throttle.failures} in a row); "
                        f"the next try waits {next_wait:g}s"
                    ),
                )
            )
            return False
