"""The embedded RTP relay: media anchored in this process, on the event loop.

A call's two phones are its two sides, "caller" and "callee". Each media stream (each `m=`
line) gets a port pair facing each side: the SDP a side receives names the pair facing it, so

    caller ──RTP──> [caller-facing pair] ─relay─> [callee-facing pair] ──RTP──> callee

and the reverse. A packet is accepted only from the source the receiving port has latched
(core/media/latch.py); it leaves from the other pair's port towards the peer that port has
latched, or before that towards the address the SDP named. RTCP goes the same way between the
odd ports; multiplexed RTCP (RFC 5761) and SRTP/SRTCP (RFC 3711: SDES keys in `a=crypto`, or
DTLS-SRTP) are ordinary datagrams here, passed on untouched: the relay never reads a payload.

`offer`/`answer` take a side's SDP and return it rewritten for the other side, and open the
latching window on every port of the call; `delete` frees the ports. `expire(now)` ends the
sessions that carried no packet for `timeout_seconds` (`hold_timeout_seconds` while a stream
is on hold, where silence is expected) and returns their Call-IDs, for the proxy to hang the
calls up and note the media timeout in their CDRs.

Each side's pair is bound in the address family that side signals in (IPv4 or IPv6), on
`host` or, for the other family, `other_host`: a call between an IPv6 phone and an IPv4 one
is relayed between an IPv6 pair and an IPv4 pair. The family of the caller-facing pair is the
caller's (its INVITE's source), the callee-facing pair's that of the address the offer names
to the callee; a later offer or answer needing the other family for a side (a re-INVITE from
a phone that moved to IPv6, a fork's last branch) binds that side a pair of that family.

Bounded by `max_sessions` and the port range (one range per family); a call beyond either is
refused by `RelayFull`, and its signalling decides what to do (the proxy sends it unanchored).
"""

from __future__ import annotations

import socket
from collections.abc import Callable
from dataclasses import dataclass

from core.media.latch import Latch
from core.media.ports import PortPairs, PortsExhausted, Readers, family_of
from core.media.rtcp import reception_report
from core.media.sdp import SdpError, SessionDescription, parse, rewrite
from core.settings import MediaSettings

CALLER = 0
CALLEE = 1
_READS_PER_WAKEUP = 64  # datagrams read per readable callback before others get the loop
_MAX_DATAGRAM = 4_096  # RTP over UDP stays under the path MTU; anything larger is cut


class RelayFull(Exception):
    """No session or port left for a new call or stream."""


class RelayPort:
    """One socket facing one side: what it accepts from that side and has passed on."""

    __slots__ = (
        "bytes", "dropped", "fraction_lost", "jitter", "latch", "packets", "partner",
        "reads_rtcp", "session", "sock",
    )  # fmt: skip

    def __init__(self, sock: socket.socket, session: MediaSession) -> None:
        self.sock = sock
        self.latch = Latch()
        self.partner: RelayPort = self
        self.session = session
        self.packets = 0  # accepted from this side and sent on
        self.bytes = 0
        self.dropped = 0  # from a source other than the latched peer, or not sendable
        self.reads_rtcp = False  # plain RTCP may come here (not SRTCP): its reports are read
        # This side's last RTCP reception report (core/media/rtcp.py): how it hears the other.
        self.fraction_lost = -1  # out of 256; -1: no report yet
        self.jitter = -1  # RTP timestamp units


class Stream:
    """One media stream: an RTP and an RTCP port facing each side."""

    __slots__ = ("clock_rate", "on_hold", "ports")

    def __init__(self, ports: tuple[tuple[RelayPort, RelayPort], tuple[RelayPort, RelayPort]]):
        self.ports = ports  # [side][0 = RTP, 1 = RTCP]
        self.on_hold = False
        self.clock_rate = 8_000  # of the RTP timestamps, for jitter in milliseconds


class MediaSession:
    """One call's streams, and when a packet last went through."""

    __slots__ = ("call_id", "caller_tag", "last_packet", "streams")

    def __init__(self, call_id: str, caller_tag: str, now: float) -> None:
        self.call_id = call_id
        self.caller_tag = caller_tag
        self.streams: list[Stream | None] = []  # None: a refused stream (port 0)
        self.last_packet = now


@dataclass(frozen=True, slots=True)
class StreamStats:
    """Counters of one stream, for the console and the CDR."""

    caller_packets: int  # from the caller to the callee
    caller_bytes: int
    callee_packets: int
    callee_bytes: int
    dropped: int  # from strangers, every port of the stream
    on_hold: bool
    # From the phones' own RTCP reports, None until one arrives: the loss (%) and jitter (ms)
    # the caller measures on what it receives, and the same for the callee.
    caller_loss: float | None = None
    caller_jitter_ms: float | None = None
    callee_loss: float | None = None
    callee_jitter_ms: float | None = None


@dataclass(frozen=True, slots=True)
class MediaStats:
    """A call's media as the relay sees it."""

    streams: tuple[StreamStats, ...]
    idle_seconds: float  # since the last packet relayed either way

    @property
    def caller_packets(self) -> int:
        return sum(stream.caller_packets for stream in self.streams)

    @property
    def callee_packets(self) -> int:
        return sum(stream.callee_packets for stream in self.streams)


class EmbeddedRelay:
    """The relay. `clock` must be the proxy's clock: latching windows compare its times.
    `host` binds the ports of its address family; `other_host` those of the other family
    (by default that family's wildcard, "::" or "0.0.0.0"), bound only when a call needs it."""

    def __init__(
        self,
        settings: MediaSettings,
        host: str,
        clock: Callable[[], float],
        readers: Readers | None = None,
        other_host: str = "",
    ) -> None:
        self.settings = settings
        self.ports = PortPairs(host, settings.port_min, settings.port_max)
        if not other_host or family_of(other_host) == self.ports.family:
            other_host = "0.0.0.0" if self.ports.family == socket.AF_INET6 else "::"
        self.other_host = other_host
        self._by_family: dict[int, PortPairs] = {self.ports.family: self.ports}
        self.clock = clock
        self.readers = readers or Readers()
        self.sessions: dict[str, MediaSession] = {}
        self.timed_out = 0

    # -- the engine interface ------------------------------------------------------------
    def offer(
        self, call_id: str, from_tag: str, sdp: bytes, source_ip: str, address: str, now: float
    ) -> bytes:
        """The SDP of the side whose tag is `from_tag` (the caller on a first INVITE), for the
        other side, which will reach us on `address`. Raises `SdpError` or `RelayFull`."""
        session = self.sessions.get(call_id)
        if session is None:
            if len(self.sessions) >= self.settings.max_sessions:
                raise RelayFull("too many relayed calls")
            description = parse(sdp)  # unreadable SDP makes no session
            session = MediaSession(call_id, from_tag, now)
            self.sessions[call_id] = session
            side = CALLER
        else:
            description = parse(sdp)
            side = CALLER if from_tag == session.caller_tag else CALLEE
        return self._update(session, side, sdp, description, source_ip, address, now)

    def answer(
        self,
        call_id: str,
        from_tag: str,
        to_tag: str,
        sdp: bytes,
        source_ip: str,
        address: str,
        now: float,
    ) -> bytes:
        """The answer of the side that received the offer `from_tag` made."""
        session = self.sessions.get(call_id)
        if session is None:
            raise SdpError("no offer was anchored for this call")
        description = parse(sdp)
        side = CALLEE if from_tag == session.caller_tag else CALLER
        return self._update(session, side, sdp, description, source_ip, address, now)

    def delete(self, call_id: str) -> None:
        session = self.sessions.pop(call_id, None)
        if session is None:
            return
        for stream in session.streams:
            if stream is not None:
                self._close(stream)

    # -- timers and figures --------------------------------------------------------------
    def expire(
        self, now: float, ringing: Callable[[str], bool] = lambda _call_id: False
    ) -> list[str]:
        """End the sessions silent for too long; their Call-IDs. A call still `ringing` has
        no media to miss: its silence counts from the answer."""
        ended = []
        for session in list(self.sessions.values()):
            if ringing(session.call_id):
                session.last_packet = max(session.last_packet, now)
                continue
            on_hold = any(stream is not None and stream.on_hold for stream in session.streams)
            limit = self.settings.hold_timeout_seconds if on_hold else self.settings.timeout_seconds
            if now - session.last_packet >= limit:
                ended.append(session.call_id)
                self.delete(session.call_id)
        self.timed_out += len(ended)
        return ended

    def stats(self, call_id: str, now: float) -> MediaStats | None:
        session = self.sessions.get(call_id)
        if session is None:
            return None
        streams = []
        for stream in session.streams:
            if stream is None:
                continue
            (caller_rtp, caller_rtcp), (callee_rtp, callee_rtcp) = stream.ports
            caller_loss, caller_jitter = _report(stream, caller_rtp, caller_rtcp)
            callee_loss, callee_jitter = _report(stream, callee_rtp, callee_rtcp)
            streams.append(
                StreamStats(
                    caller_rtp.packets + caller_rtcp.packets,
                    caller_rtp.bytes + caller_rtcp.bytes,
                    callee_rtp.packets + callee_rtcp.packets,
                    callee_rtp.bytes + callee_rtcp.bytes,
                    sum(port.dropped for pair in stream.ports for port in pair),
                    stream.on_hold,
                    caller_loss,
                    caller_jitter,
                    callee_loss,
                    callee_jitter,
                )
            )
        return MediaStats(tuple(streams), max(0.0, now - session.last_packet))

    # -- inside ---------------------------------------------------------------------------
    def _update(
        self,
        session: MediaSession,
        side: int,
        sdp: bytes,
        description: SessionDescription,
        source_ip: str,
        address: str,
        now: float,
    ) -> bytes:
        """Record what `side` announced, open every latching window, and rewrite its SDP with
        the ports facing the other side (who will send there)."""
        media = description.media
        while len(session.streams) < len(media):
            session.streams.append(None)
        ports = []
        window = self.settings.latch_seconds
        own_family = family_of(source_ip)
        other_family = family_of(address)
        for index, section in enumerate(media):
            stream = session.streams[index]
            if section.port == 0:
                ports.append(0)
                continue
            families = [own_family, other_family] if side == CALLER else [other_family, own_family]
            if stream is None:
                stream = self._open(session, families)
                session.streams[index] = stream
            else:
                self._rebind(stream, side, own_family)
                self._rebind(stream, 1 - side, other_family)
            stream.on_hold = section.on_hold
            stream.clock_rate = section.clock_rate
            rtp_address: tuple[str, int] | None = (section.address, section.port)
            rtcp_address: tuple[str, int] | None = (section.address, section.rtcp_port)
            if section.address in ("", "0.0.0.0", "::"):  # RFC 3264 §8.4 hold: send nothing
                rtp_address = rtcp_address = None
            own_rtp, own_rtcp = stream.ports[side]
            own_rtp.reads_rtcp = own_rtcp.reads_rtcp = "SAVP" not in section.proto
            own_rtp.latch.expect(rtp_address, source_ip, now, window)
            own_rtcp.latch.expect(rtcp_address, source_ip, now, window)
            other_rtp, other_rtcp = stream.ports[1 - side]
            for port in (other_rtp, other_rtcp):
                port.latch.open_until = now + window
            ports.append(other_rtp.sock.getsockname()[1])
        session.last_packet = max(session.last_packet, now)
        return rewrite(sdp, address, ports)

    def _pairs(self, family: int) -> PortPairs:
        pairs = self._by_family.get(family)
        if pairs is None:
            settings = self.settings
            pairs = PortPairs(self.other_host, settings.port_min, settings.port_max)
            self._by_family[family] = pairs
        return pairs

    def _open(self, session: MediaSession, families: list[int]) -> Stream:
        """A stream with a pair facing each side, of that side's address family."""
        pairs = []
        try:
            for family in families:
                pairs.append(self._pairs(family).acquire())
        except PortsExhausted:
            for rtp, rtcp in pairs:
                self._pairs(rtp.family).release(rtp, rtcp)
            raise RelayFull("no free media ports") from None
        caller = (RelayPort(pairs[0][0], session), RelayPort(pairs[0][1], session))
        callee = (RelayPort(pairs[1][0], session), RelayPort(pairs[1][1], session))
        for mine, theirs in zip(caller, callee, strict=True):
            mine.partner = theirs
            theirs.partner = mine
        for port in (*caller, *callee):
            self.readers.watch(port.sock, self._reader(port))
        return Stream((caller, callee))

    def _reader(self, port: RelayPort) -> Callable[[], None]:
        return lambda: self._readable(port)

    def _close(self, stream: Stream) -> None:
        for rtp, rtcp in stream.ports:
            self.readers.unwatch(rtp.sock)
            self.readers.unwatch(rtcp.sock)
            self._pairs(rtp.sock.family).release(rtp.sock, rtcp.sock)

    def _rebind(self, stream: Stream, side: int, family: int) -> None:
        """The pair facing `side` in `family`, if it is of the other one: a new pair, its
        latches cleared (a peer of the old family can no longer be reached from it)."""
        rtp, rtcp = stream.ports[side]
        if rtp.sock.family == family:
            return
        try:
            new_rtp, new_rtcp = self._pairs(family).acquire()
        except PortsExhausted:
            raise RelayFull("no free media ports") from None
        old_rtp, old_rtcp = rtp.sock, rtcp.sock
        for port, sock in ((rtp, new_rtp), (rtcp, new_rtcp)):
            self.readers.unwatch(port.sock)
            port.latch = Latch()
            port.sock = sock
            self.readers.watch(sock, self._reader(port))
        self._pairs(old_rtp.family).release(old_rtp, old_rtcp)

    def _readable(self, port: RelayPort) -> None:
        """The hot path: datagrams in, each either dropped (a stranger) or sent on."""
        now = self.clock()
        sock = port.sock
        latch = port.latch
        partner = port.partner
        out = partner.sock
        received = 0
        for _ in range(_READS_PER_WAKEUP):
            try:
                data, source = sock.recvfrom(_MAX_DATAGRAM)
            except (BlockingIOError, InterruptedError):
                break
            except OSError:
                continue  # an ICMP error queued on the socket; the next read has data
            peer = (source[0], source[1])
            if not latch.admit(peer, now):
                port.dropped += 1
                continue
            received += 1
            port.packets += 1
            size = len(data)
            port.bytes += size
            if port.reads_rtcp and size > 7 and 191 < data[1] < 224:  # RFC 5761 §4: RTCP
                report = reception_report(data)
                if report is not None:
                    port.fraction_lost, port.jitter = report
            destination = partner.latch.destination()
            if destination is not None:
                try:
                    out.sendto(data, destination)
                except OSError:  # a full buffer or an unreachable peer: RTP is loss-tolerant
                    port.dropped += 1
        if received:
            port.session.last_packet = now


def _report(stream: Stream, *ports: RelayPort) -> tuple[float | None, float | None]:
    """The loss (%) and jitter (ms) a side last reported, from whichever of its ports the
    report came in on (the RTCP port, or the RTP port with rtcp-mux)."""
    for port in ports:
        if port.fraction_lost >= 0:
            return 100.0 * port.fraction_lost / 256, 1000.0 * port.jitter / stream.clock_rate
    return None, None
