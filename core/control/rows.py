"""Snapshots the console and the CLI read from a core, local or behind the control socket.

Plain records, built from the live objects at the moment they are asked for: a `Binding`
holds its flow (a socket, a parsed URI), which never leaves the service, so the console's
Registrations pane reads a `ContactRow` instead.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from core.registrar.location import Binding


@dataclass(frozen=True, slots=True)
class ContactRow:
    """One registered contact as the console shows it: where it really came from, its health."""

    user: str
    contact: str
    remote: tuple[str, int]  # the address the REGISTER came from, not what the Contact says
    transport: str
    user_agent: str
    expires_at: float  # epoch seconds
    behind_nat: bool = False
    reachable: bool = True
    ping_failures: int = 0

    @classmethod
    def of(cls, binding: Binding) -> ContactRow:
        return cls(
            user=binding.user,
            contact=binding.contact,
            remote=(str(binding.flow.remote[0]), int(binding.flow.remote[1])),
            transport=binding.flow.transport,
            user_agent=binding.user_agent,
            expires_at=binding.expires_at,
            behind_nat=binding.behind_nat,
            reachable=binding.reachable,
            ping_failures=binding.ping_failures,
        )


@dataclass(frozen=True, slots=True)
class ServiceStatus:
    """What `pbxtui status` prints and what an attached console's header shows."""

    pid: int
    version: str
    started_at: float  # epoch seconds
    domain: str
    listening: tuple[str, ...]
    users: int
    contacts: int
    calls_up: int
    bans: int
    messages_in: int
    messages_out: int
    dropped: int
    workers: int
    consoles: int
