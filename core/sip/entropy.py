"""Random bytes for tags, branches and nonces, read from the OS in blocks.

Every tag, branch and nonce used to be its own `os.urandom` call: a system call (~0.8 µs)
for 6 or 8 bytes. Here one call reads a block and the values are cut from it, each byte
handed out once. The bytes are the kernel's all the same, as unpredictable as before.

A forked child would inherit the parent's unread block and hand out the very bytes the
parent (and every other worker) hands out next: the same tags, branches and nonce randoms
in two processes. So the block is thrown away in the child at fork (`os.register_at_fork`),
and the child's first value reads a block of its own.
"""

from __future__ import annotations

import os
from typing import Final

BLOCK_BYTES: Final = 4096


class _Pool:
    """One block of random bytes and how much of it is used; its hex text likewise, cut
    for tags and branches without a .hex() per value. The two never share bytes: each is
    read from the OS on its own."""

    __slots__ = ("_block", "_hex", "_hex_used", "_used")

    def __init__(self) -> None:
        self._block = b""
        self._used = 0
        self._hex = ""
        self._hex_used = 0

    def take(self, count: int) -> bytes:
        """`count` random bytes (at most BLOCK_BYTES), never handed out before."""
        start = self._used
        end = start + count
        if end > len(self._block):
            if count > BLOCK_BYTES:
                return os.urandom(count)
            self._block = os.urandom(BLOCK_BYTES)
            start, end = 0, count
        self._used = end
        return self._block[start:end]

    def take_hex(self, count: int) -> str:
        """`os.urandom(count).hex()`: 2 * `count` lower-case hex digits, never handed out."""
        digits = 2 * count
        start = self._hex_used
        end = start + digits
        if end > len(self._hex):
            if count > BLOCK_BYTES:
                return os.urandom(count).hex()
            self._hex = os.urandom(BLOCK_BYTES).hex()
            start, end = 0, digits
        self._hex_used = end
        return self._hex[start:end]

    def forget(self) -> None:
        """Drop what is left (in a forked child: the parent hands those bytes out too)."""
        self._block = b""
        self._used = 0
        self._hex = ""
        self._hex_used = 0


_POOL: Final = _Pool()
os.register_at_fork(after_in_child=_POOL.forget)


def random_bytes(count: int) -> bytes:
    """`os.urandom(count)` for small counts, without a system call for each."""
    return _POOL.take(count)


def random_hex(count: int) -> str:
    """`os.urandom(count).hex()` for small counts, without a system call for each."""
    return _POOL.take_hex(count)
