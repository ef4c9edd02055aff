"""The writes waiting for the store's writer task: a bounded list the SIP path appends to.

Compiled (setup.py COMPILED_MODULES): every CDR, binding refresh and ban goes through
`submit`. Through an asyncio.Queue that was eight interpreted frames per write (Store.submit,
Writer.submit, put_nowait, full, qsize, _put, _wakeup_next, Event.clear); here it is a length
check and an append, and the writer task (core/store/writer.py) is woken only when it is
waiting for a first write, once per batch at most.
"""

from __future__ import annotations

from collections.abc import Callable

from core.store.ops import WriteOp


class PendingWrites:
    """Ops submitted and not yet taken by the writer, oldest first; at most `capacity`
    (0 or less: no bound). A write refused (full, or closing) is counted in `dropped`."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.closing = False  # the store is closing: every further op is refused
        self.accepted = 0  # ops ever taken in (the writer's flush waits for a count of them)
        self.dropped = 0
        self._ops: list[WriteOp] = []
        self._wake: Callable[[], None] | None = None

    def __len__(self) -> int:
        return len(self._ops)

    def submit(self, op: WriteOp) -> bool:
        """Queue `op` without waiting. False (and counted) when full or closing."""
        ops = self._ops
        if self.closing or (self.capacity > 0 and len(ops) >= self.capacity):
            self.dropped += 1
            return False
        ops.append(op)
        self.accepted += 1
        wake = self._wake
        if wake is not None:
            self._wake = None
            wake()
        return True

    def wake_on_submit(self, wake: Callable[[], None]) -> None:
        """Call `wake` once, at the next accepted op (the writer waiting for work)."""
        self._wake = wake

    def take(self) -> list[WriteOp]:
        """Every op waiting, oldest first; none waits after."""
        ops = self._ops
        self._ops = []
        return ops
