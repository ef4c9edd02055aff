"""The management side of a running Pbx: what the console's forms and tables call.

Every change goes to SQLite first and then into the in-memory tables the route reads, so
the hot path sees it at once and a restart keeps it. Bad input raises `ValueError` with a
sentence fit to show under a form field; nothing here ever needs a traceback to explain.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import replace

from core.net import addresses as netaddr
from core.registrar.location import LocationService
from core.security.guard import Security
from core.settings import Settings
from core.store.database import (
    BanRow,
    CarrierRow,
    CdrRow,
    DidRow,
    DuplicateError,
    NotFoundError,
    Store,
)
from core.users import (
    User,
    UserDirectory,
    check_admin_password,
    generate_password,
    hash_admin_password,
    make_user,
    normalise_number,
    validate_outbound_policy,
    with_password,
)

_USER_FIELDS = {
    "display_name",
    "enabled",
    "outbound_policy",
    "allow_prefixes",
    "deny_prefixes",
    "max_concurrent_calls",
    "max_calls_per_hour",
    "caller_id",
}


def _parse_hostport(text: str) -> tuple[str, int]:
    """`host:port`, `host` (port 5060) or `[v6]:port` for a carrier gateway."""
    text = text.strip()
    if not text:
        raise ValueError("gateway is empty")
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        port_text = rest[1:] if rest.startswith(":") else ""
    elif text.count(":") == 1:
        host, _, port_text = text.partition(":")
    else:
        host, port_text = text, ""
    if not host or any(char.isspace() for char in host):
        raise ValueError(f"gateway {text!r} is not HOST[:PORT]")
    if port_text:
        if not port_text.isdigit() or not 0 < int(port_text) < 65536:
            raise ValueError(f"gateway port in {text!r} must be 1-65535")
        return host, int(port_text)
    return host, 5060


class AdminApi:
    """The changes an admin makes, each validated once, stored, then put in force.

    `carriers_changed` reloads carriers and DIDs into the running core; `tables_changed`
    tells whoever else reads users, carriers and DIDs (worker processes) to read them again.
    """

    def __init__(
        self,
        *,
        store: Store,
        users: UserDirectory,
        location: LocationService,
        security: Security,
        settings: Settings,
        clock: Callable[[], float],
        carriers_changed: Callable[[], Awaitable[None]],
        tables_changed: Callable[[], None],
    ) -> None:
        self._store = store
        self._users = users
        self._location = location
        self._security = security
        self._settings = settings
        self._clock = clock
        self._carriers_changed = carriers_changed
        self._tables_changed = tables_changed

    # -- users ----------------------------------------------------------------------------
    async def list_users(self) -> list[User]:
        return await self._store.list_users()

    def generate_password(self) -> str:
        return generate_password()

    async def add_user(self, username: str, password: str, **fields: object) -> User:
        unknown = set(fields) - _USER_FIELDS
        if unknown:
            raise ValueError(f"unknown user field(s): {', '.join(sorted(unknown))}")
        user = make_user(username, password, self._settings.realm, **fields)  # type: ignore[arg-type]
        try:
            await self._store.add_user(user)
        except DuplicateError:
            raise ValueError(f"user {username!r} already exists") from None
        self._users.put(user)
        self._tables_changed()
        return user

    async def update_user(self, username: str, **changes: object) -> User:
        unknown = set(changes) - _USER_FIELDS
        if unknown:
            raise ValueError(f"unknown user field(s): {', '.join(sorted(unknown))}")
        user = await self._existing_user(username)
        if "outbound_policy" in changes:
            validate_outbound_policy(str(changes["outbound_policy"]))
        for limit in ("max_concurrent_calls", "max_calls_per_hour"):
            value = changes.get(limit)
            if value is not None and (not isinstance(value, int) or value < 0):
                raise ValueError(f"{limit.replace('_', ' ')} must be 0 (no limit) or positive")
        updated = replace(user, **changes)  # type: ignore[arg-type]
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
        name = name.strip()
        if not name or len(name) > 64 or any(char.isspace() for char in name):
            raise ValueError("carrier name must be 1-64 characters without spaces")
        if not addresses:
            raise ValueError("a carrier needs at least one address")
        networks = [str(netaddr.parse_network(address)) for address in addresses]
        if gateway:
            _parse_hostport(gateway)
        if transport not in ("udp", "tcp", "tls"):
            raise ValueError("transport must be udp, tcp or tls")
        if port is not None and not 0 < port < 65536:
            raise ValueError("port must be 1-65535")
        if priority < 0:
            raise ValueError("priority must be 0 or more")
        carrier = CarrierRow(
            name=name,
            addresses=tuple(networks),
            port=port or 5060,
            transport=transport,
            gateway=gateway or None,
            username=username or None,
            password=password or None,
            priority=priority,
        )
        try:
            await self._store.add_carrier(carrier)
        except DuplicateError:
            raise ValueError(f"carrier {name!r} already exists") from None
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

    def _canonical_number(self, number: str) -> str:
        """The DID's canonical form under this PBX's dialplan (the CLI uses the same)."""
        dialplan = self._settings.dialplan
        return normalise_number(
            number,
            national_prefix=dialplan.national_prefix,
            country_code=dialplan.country_code,
            international_prefix=dialplan.international_prefix,
        )

    async def add_did(self, number: str, username: str) -> DidRow:
        canonical = self._canonical_number(number)
        if await self._store.get_user(username) is None:
            raise ValueError(f"no user {username!r}")
        try:
            await self._store.add_did(canonical, username)
        except DuplicateError:
            raise ValueError(f"DID {number!r} is already assigned") from None
        except NotFoundError as error:
            raise ValueError(str(error)) from None
        await self._carriers_changed()
        self._tables_changed()
        return DidRow(canonical, username)

    async def delete_did(self, number: str) -> None:
        if not await self._store.delete_did(self._canonical_number(number)):
            raise ValueError(f"no DID {number!r}")
        await self._carriers_changed()
        self._tables_changed()

    # -- bans and registrations -----------------------------------------------------------
    async def ban(self, ip: str, seconds: float | None, reason: str = "banned by admin") -> None:
        address = str(netaddr.parse_ip(ip))
        if seconds is not None and seconds <= 0:
            raise ValueError("ban time must be positive")
        self._security.ban(address, seconds, reason, self._clock())

    async def unban(self, ip: str) -> None:
        address = str(netaddr.parse_ip(ip))
        if not self._security.unban(address, self._clock()):
            raise ValueError(f"{address} is not banned")

    async def list_bans(self) -> list[BanRow]:
        return await self._store.list_bans(active_at=self._clock())

    async def unregister(self, user: str, contact: str) -> None:
        if not self._location.remove(user, contact):
            raise ValueError(f"{user} has no contact {contact}")

    # -- CDRs -------------------------------------------------------------------------------
    async def list_cdrs(self, limit: int = 200, text: str | None = None) -> list[CdrRow]:
        rows = await self._store.list_cdrs(limit=limit if not text else max(limit, 2_000))
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
            ][:limit]
        return rows

    # -- console password (bcrypt, never on the SIP path) -----------------------------------
    async def has_console_password(self) -> bool:
        return await self._store.get_admin_hash() is not None

    async def set_console_password(self, password: str) -> None:
        bcrypt_hash = await asyncio.to_thread(hash_admin_password, password)
        await self._store.set_admin_hash(bcrypt_hash)

    async def check_console_password(self, password: str) -> bool:
        stored = await self._store.get_admin_hash()
        if stored is None:
            return False
        return await asyncio.to_thread(check_admin_password, password, stored)
