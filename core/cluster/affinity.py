"""Which process handles a message, decided from its Call-ID before any parsing.

With `[server] workers` set, several processes serve the same UDP sockets and the kernel
hands each datagram to whichever of them reads first. Every message of a call, a
registration or a transaction carries the same Call-ID (RFC 3261 §8.1.1.4; a stateful proxy
keeps it end to end), so hashing the Call-ID sends all of them to one worker, the one that
holds their transactions, dialog and nonce counts: the worker that read a datagram forwards
it to its owner. Kamailio's children share memory instead; Python processes cannot, and the
extra hop costs far less than handling the message.

The main process owns the requests it sends itself (NAT keep-alive OPTIONS): their Call-IDs
start with MAIN_CALL_ID_PREFIX, so the answers reach the process that waits for them.
"""

from __future__ import annotations

import zlib

from core.sip.peek import HeaderPeek, message_head

MAIN = 0  # the main process: the console, the database, TCP connections, keep-alives
MAIN_CALL_ID_PREFIX = "pbxtui-main."
_MAIN_PREFIX_BYTES = MAIN_CALL_ID_PREFIX.encode()
_CALL_ID = HeaderPeek("Call-ID", "call-id|i")


def call_id_of(data: bytes) -> bytes | None:
    """The Call-ID value in a raw message's header section, or None when it has none."""
    return _CALL_ID.value(message_head(data)) or None


def owner_of(data: bytes, workers: int) -> int:
    """The process that handles `data`: MAIN, or a worker numbered 1..`workers`.

    A message without a Call-ID goes to worker 1, which answers it 400 (or drops it) like any
    other malformed message: its owner does not matter, only that one process takes it.
    """
    call_id = call_id_of(data)
    if call_id is None:
        return 1
    if call_id.startswith(_MAIN_PREFIX_BYTES):
        return MAIN
    return 1 + zlib.crc32(call_id) % workers
