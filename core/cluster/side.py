"""What the main process's role and a worker's role share: the links, and messages by Call-ID.

`ClusterRole` is the part chosen before the build: its links exist from the start, so the
sinks it hands the core (core/cluster/changes.py: replicators) can send at once.
`ClusterDuties` is the part that runs once the core is built: it listens on the links, applies
other processes' changes to the core's tables and hands each SIP message read here to the
process that owns its Call-ID (core/cluster/affinity.py). core/cluster/main.py and
core/cluster/worker.py add what each side does alone.
"""

from __future__ import annotations

from core.assembly import Core, PbxStats
from core.cluster.affinity import owner_of
from core.cluster.changes import ChangeApplier, Replicator, flow_fields, flow_of
from core.cluster.links import Links, Message
from core.net.flow import Flow
from core.proxy.calls import CallInfo


class ClusterRole:
    """One process's end of the cluster, before the build: its number and its links."""

    def __init__(self, index: int, workers: int) -> None:
        self.index = index
        self.workers = workers
        self.links = Links()
        self.replicator = Replicator(self.links, index)


class ClusterDuties:
    """One process's end of the cluster while it runs: what it forwards, what it applies."""

    def __init__(self, role: ClusterRole, core: Core) -> None:
        self.core = core
        self.index = role.index
        self.workers = role.workers
        self.links = role.links
        self.route = core.route
        self.clock = core.clock
        self.changes = ChangeApplier(
            role.replicator,
            location=core.location,
            security=core.security,
            limiter=core.trunks.limiter,
            users=core.users,
            clock=core.clock,
        )
        self.forwarded = 0
        self.links.listen(self._on_link_message, self._on_link_lost)

    @property
    def lost(self) -> int:
        return self.links.dropped

    def dispatch(self, data: bytes, flow: Flow) -> None:
        """Route a message whose Call-ID this process owns; check any other (bans, flood
        counting) and hand it to its owner, which routes it as admitted."""
        owner = owner_of(data, self.workers)
        if owner == self.index:
            self.route.on_message(data, flow)
        elif self.route.admit(flow, self.clock()):
            self.forwarded += 1
            self.links.send(owner, ("sip", data, flow_fields(flow)))

    def _on_link_message(self, peer: int, message: Message, fds: list[int]) -> None:
        if message[0] == "sip":
            # Queued and shed like a datagram read here, then routed as admitted.
            self.core.transport.enqueue_datagram(message[1], flow_of(message[2]), True)
        else:
            self._on_side_message(peer, message, fds)

    def _on_side_message(self, peer: int, message: Message, fds: list[int]) -> None:
        raise NotImplementedError

    def _on_link_lost(self, peer: int) -> None:
        raise NotImplementedError

    def add_figures(self, stats: PbxStats) -> None:
        """Nothing to add unless the side says otherwise (main adds the workers')."""

    def calls(self) -> list[CallInfo]:
        return self.core.proxy.calls.snapshot()
