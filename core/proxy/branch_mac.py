"""A keyed MAC in the Via branches we generate, so a response can prove it answers our request.

A 2xx to an INVITE that no transaction owns any more is passed up statelessly (RFC 3261 §16.7,
core/proxy/stray.py). Deciding that on "the top Via names our address" alone let anyone make
the server send attacker-chosen bytes to any host and port: forge a 200 whose top Via names
us and whose second Via names the victim. Our branch is therefore
`z9hG4bK<loop hash>.<index>.<mac>`, the MAC a keyed BLAKE2b over the rest of the branch, the
Call-ID and the Via below ours (where the response will go). Only a response to a request
we forwarded, with that Via unchanged, carries a branch that verifies; the loop-detection
hash stays the first dot-separated part (core/proxy/routing.py `has_looped`).
"""

from __future__ import annotations

import hashlib
import hmac

from core.sip.fields import MAGIC_COOKIE, Via

_MAC_SIZE = 8  # bytes: 16 hex digits; a forger gets one guess per packet


class BranchSigner:
    """`sign(branch, below, call_id)` when forwarding; `verify(...)` on a stray response."""

    __slots__ = ("_keyed",)

    def __init__(self, secret: bytes) -> None:
        key = hashlib.blake2b(b"pbxtui via branch", key=secret[:64]).digest()
        # Keyed once: each MAC copies this state (a keyed start hashes a whole key block).
        self._keyed = hashlib.blake2b(key=key, digest_size=_MAC_SIZE)

    def _mac(self, branch: str, below: Via, call_id: str | None) -> str:
        data = f"{branch}\x00{below}\x00{call_id or ''}".encode("utf-8", "surrogateescape")
        mac = self._keyed.copy()
        mac.update(data)
        return mac.hexdigest()

    def sign(self, branch: str, below: Via, call_id: str | None) -> str:
        """`branch` with our MAC appended."""
        return f"{branch}.{self._mac(branch, below, call_id)}"

    def verify(self, branch: str | None, below: Via, call_id: str | None) -> bool:
        """Did we generate `branch` for a request whose top Via was `below`?"""
        if branch is None or not branch.startswith(MAGIC_COOKIE):
            return False
        unsigned, _, mac = branch.rpartition(".")
        if not unsigned or len(mac) != 2 * _MAC_SIZE:
            return False
        expected = self._mac(unsigned, below, call_id)
        return hmac.compare_digest(expected.encode(), mac.encode("utf-8", "surrogateescape"))
