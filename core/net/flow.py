"""Where a message came from and how to send back to it.

A `Flow` is RFC 5626's word for the path between us and a peer: the transport, the peer's
address as the packets really show it (not what the Via claims), our local address, and for
TCP the connection it arrived on, so responses and later requests can reuse it (§18.2.2).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(slots=True, init=False)
class Flow:
    # One per received message: the __init__ is written out because a frozen dataclass's
    # generated one costs about six times as much (1.5 µs against 0.25, compiled). Flows are
    # shared (bindings, transactions, dict keys): never change one, build a new one.
    transport: str  # "udp" or "tcp"
    remote: tuple[str, int]
    local: tuple[str, int]
    connection_id: int | None  # TCP only: which connection; None = open one as needed

    def __init__(
        self,
        transport: str,
        remote: tuple[str, int],
        local: tuple[str, int],
        connection_id: int | None = None,
    ) -> None:
        self.transport = transport
        self.remote = remote
        self.local = local
        self.connection_id = connection_id

    def __hash__(self) -> int:
        return hash((self.transport, self.remote, self.local, self.connection_id))

    @property
    def ip(self) -> str:
        return self.remote[0]

    @property
    def port(self) -> int:
        return self.remote[1]

    @property
    def reliable(self) -> bool:
        """Reliable transports get no retransmissions (RFC 3261 §17.1.1.2)."""
        return self.transport != "udp"

    def __str__(self) -> str:
        host = f"[{self.remote[0]}]" if ":" in self.remote[0] else self.remote[0]
        return f"{self.transport}:{host}:{self.remote[1]}"
