"""Symmetric latching ("comedia"): which source a relay port accepts RTP from.

A phone behind NAT announces a private address in its SDP, then sends from its router's public
address and port. The relay learns that address from the packets themselves, and sends the
other side's media back to it (symmetric RTP, RFC 4961). Learning naively — the last packet's
source wins — lets anyone who guesses a relay port take the stream over or inject into it:
that is "RTP bleed" (CVE-2017-14099, CVE-2017-9765 class). So a port latches only inside a
short window after each offer/answer, ranks the sources it sees, and afterwards accepts one
source alone:

    rank 5  the address and port the SDP names (a phone not behind NAT)
    rank 4  the SDP's IP on another port (a phone whose port the NAT rewrote)
    rank 3  the IP the phone's SIP came from (the NAT's public address)
    rank 2  the SDP's port from another IP (a multi-homed phone sending from the address its
            route picks, a NAT that keeps ports: rtpengine's "heuristic" ranks it too)
    rank 1  any other source

Within the window only ranks 2-5 latch, and a source replaces the latched one only with a
higher rank: a stranger's packets (rank 1) are dropped, even those that arrive before the
phone's first; one that guessed the phone's port is displaced by the phone's own address.
Outside the window the latched source alone is accepted. A port that has latched nothing when
its window closes (media from an address and port neither the SDP nor the SIP named) takes the
first source it hears then, and is locked to it. Every new offer/answer opens the window
again, keeping the latched source at its rank under the new SDP (a re-INVITE after a move or
a NAT rebinding re-learns; a stranger still cannot).
"""

from __future__ import annotations

NO_SOURCE = 0
ANY_SOURCE = 1
SDP_PORT = 2
SIGNALLING_IP = 3
SDP_IP = 4
SDP_ADDRESS = 5


class Latch:
    """One relay port's view of its peer. Time comes in; nothing here reads a clock."""

    __slots__ = ("expected", "open_until", "peer", "rank", "signalling_ip")

    def __init__(self) -> None:
        self.expected: tuple[str, int] | None = None  # from the SDP; None: not announced
        self.signalling_ip = ""
        self.peer: tuple[str, int] | None = None  # the latched source
        self.rank = NO_SOURCE
        self.open_until = 0.0

    def expect(
        self, expected: tuple[str, int] | None, signalling_ip: str, now: float, window: float
    ) -> None:
        """A new offer/answer: what the SDP and SIP say of the peer; the window opens."""
        self.expected = expected
        self.signalling_ip = signalling_ip
        self.open_until = now + window
        self.rank = self.rank_of(self.peer) if self.peer is not None else NO_SOURCE

    def rank_of(self, source: tuple[str, int]) -> int:
        expected = self.expected
        if expected is not None:
            if source == expected:
                return SDP_ADDRESS
            if source[0] == expected[0]:
                return SDP_IP
        if source[0] == self.signalling_ip:
            return SIGNALLING_IP
        if expected is not None and source[1] == expected[1]:
            return SDP_PORT
        return ANY_SOURCE

    def admit(self, source: tuple[str, int], now: float) -> bool:
        """Whether a packet from `source` (an (ip, port) pair, IPv6 scope dropped) is the
        peer's, latching it if the rules allow."""
        peer = self.peer
        if peer is not None and source == peer:
            return True
        if peer is not None and now >= self.open_until:
            return False
        rank = self.rank_of(source)
        if rank <= self.rank or (rank == ANY_SOURCE and now < self.open_until):
            return False
        self.peer = source
        self.rank = rank
        return True

    def destination(self) -> tuple[str, int] | None:
        """Where to send this peer's media: the latched source, else what the SDP said."""
        return self.peer if self.peer is not None else self.expected
