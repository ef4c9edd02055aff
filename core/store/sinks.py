"""The store's writers behind the core's sinks: bindings and bans as they change.

Each sink only queues a write for the store's batching writer (`Store.submit`), so it can run
inline on the SIP path; CDRs have theirs in core/accounting/cdrs.py. A worker process has
none of these: its changes go to the main process, which writes them (core/cluster/).
"""

from __future__ import annotations

import time

from core.registrar.location import Binding
from core.security.bans import Ban
from core.store.database import BanRow, DeleteBan, DeleteBinding, Store, UpsertBan, UpsertBinding


class BindingWriter:
    """Location changes → the store's batching writer (never awaited on the SIP path)."""

    def __init__(self, store: Store) -> None:
        self.store = store

    def binding_saved(self, binding: Binding) -> None:
        self.store.submit(UpsertBinding(binding.to_row()))

    def binding_removed(self, binding: Binding) -> None:
        # The whole row key: one Contact URI may be stored once per RFC 5626 flow (reg-id).
        self.store.submit(DeleteBinding.of(binding.to_row()))


class BanWriter:
    """Bans → the store's batching writer; a permanent ban is stored without an end."""

    def __init__(self, store: Store) -> None:
        self.store = store

    def ban_saved(self, ban: Ban) -> None:
        until = None if ban.permanent else ban.until_wall
        self.store.submit(UpsertBan(BanRow(ban.ip, until, ban.reason, ban.count, time.time())))

    def ban_removed(self, ip: str) -> None:
        self.store.submit(DeleteBan(ip))
