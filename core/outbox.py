"""What leaves the server: every message sent, and the answers the server builds itself.

The route, the registrar's answers and the proxy all send through one `Outbox`: it puts the
outgoing traffic on the bus when the console watches it, sends answers back where the request
really came from (RFC 3261 §18.2.2 with the received/rport we stamp; never a host a header
names), gives our own final answers a deterministic To-tag, and keeps
the UDP final answers for Timer J so a retransmitted request gets the same answer again
instead of being handled twice (§17.2.2). It knows nothing of routing: the route decides, the
outbox sends.
"""

from __future__ import annotations

import hashlib
import zlib
from collections import OrderedDict
from collections.abc import Callable
from typing import Final

from core.events import EventBus, SipTraffic
from core.net.flow import Flow
from core.net.identity import ServerIdentity
from core.sip.errors import SipParseError
from core.sip.fields import Via
from core.sip.message import Request, Response, answer_tail, keyed_lines, response_bytes

Sender = Callable[[bytes, Flow], bool]

REPLY_CACHE_SECONDS = 32.0  # Timer J (64*T1): how long a UDP retransmission can still arrive
REPLY_CACHE_SIZE = 65_536
# The cache holds whole answers: bounded in bytes too, so large answers (a 200 to a REGISTER
# listing many contacts) cannot grow it past this however few they are.
REPLY_CACHE_BYTES = 16 * 1024 * 1024
_KEYED_EXTRA_LIMIT = 64
_MAGIC_COOKIE: Final = "z9hG4bK"  # RFC 3261 §8.1.1.7: the branch of a §17.2.3 match
# Bound once: compiled, `zlib.crc32` would be a module attribute look-up per call.
_CRC32: Final = zlib.crc32


def response_flow(via: Via | None, flow: Flow) -> Flow:
    """Where a response goes (RFC 3261 §18.2.2, RFC 3581 §4): always the address the request
    really came from, never a host a header names.

    Over TCP: the connection the request came on (the transport reopens towards the source if
    it closed). Over UDP: the source IP (what §18.2.2 reaches through the `received` we stamp)
    and the source port if the client asked for rport, else its sent-by port. A client's own
    `received` or a host name in its Via is never used: one forged Via would otherwise turn
    every locally built answer (400, 483, a challenge) into a reflector towards a victim, and
    a name would need DNS on the event loop.
    """
    if flow.transport != "udp" or via is None or via.wants_rport:
        return flow
    port = via.port or 5060
    if port == flow.remote[1]:
        return flow
    return Flow("udp", (flow.remote[0], port), flow.local)


def answer_flow(message: Request | Response, flow: Flow) -> Flow:
    """`response_flow` by `message`'s top Via (the request's, or the one a response we built
    copied from it); a Via too broken to parse (the reason for a 400) answers the source."""
    try:
        via = message.top_via
    except SipParseError:
        via = None
    return response_flow(via, flow)


def may_be_local_tag(tag: str | None) -> bool:
    """Could `tag` be one `Outbox.local_tag` makes ("pbx" and a CRC-32 in decimal, at most
    13 characters)? False tells a dialog's ACK (the callee's tag) from the ACK of our own
    answer without computing our tag for it (~3k instructions compiled per call ACK)."""
    return tag is not None and len(tag) <= 13 and tag.startswith("pbx")


def _top_via(message: Request) -> Via | None:
    """The request's parsed top Via; None when it is too broken to parse (`answer_flow`'s
    rule: the answer then goes to the source, and nothing is cached)."""
    try:
        return message.top_via
    except SipParseError:
        return None


def _key_of(via: Via | None, method: str, flow: Flow) -> tuple[str, str, int | None, str] | None:
    """`Outbox._reply_key` from the top Via already read: (branch, source IP, sent-by port,
    method), None for a request without an RFC 3261 branch, or an ACK."""
    if via is None or method == "ACK":
        return None
    branch = via.branch
    if branch is None or not branch.startswith(_MAGIC_COOKIE):
        return None
    return (branch, flow.remote[0], via.port, method)


class Outbox:
    """One per process: `send` for every message out, `reply` for the answers we build."""

    def __init__(
        self,
        *,
        identity: ServerIdentity,
        bus: EventBus,
        send: Sender,
        clock: Callable[[], float],
        tag_secret: bytes,
        user_agent: str = "pbxtui",
    ) -> None:
        self.identity = identity
        self.bus = bus
        self._send = send
        self.clock = clock
        # The seed of the local To-tags (`local_tag`): from the install's tag secret, which
        # every worker process reads from the same database, so all of them tag alike.
        tag_key = hashlib.blake2b(b"pbxtui to-tag", key=tag_secret[:64]).digest()
        self._tag_seed = int.from_bytes(tag_key[:4], "big")
        self.server_header = ("Server", user_agent)
        self._server_lines = keyed_lines([self.server_header])
        self._server_tail = answer_tail(self._server_lines)
        # The end of our own answers (Server, the extra headers, Content-Length), written
        # once per distinct extra: callers pass the same few constants (Allow, Accept, ...)
        # again and again. Bounded, as a carrier's decision may pass headers of its own.
        self._tails: dict[tuple[tuple[str, str], ...], str] = {}
        self._reply_cache: OrderedDict[tuple[str, str, int | None, str], tuple[float, bytes]] = (
            OrderedDict()
        )
        self._reply_cache_bytes = 0
        self.answered_locally = 0

    def local_tag(self, request: Request) -> str:
        """The To-tag of every final response we generate for this request's Call-ID.

        Deterministic (a function of the Call-ID, the From-tag and the install's tag secret),
        so the ACK of our own 407 or 404 is recognised without keeping state per request, and
        by whichever worker process receives it: they all share the secret (never a
        per-process value such as Python's str hash).

        A CRC-32 seeded from the secret, not a MAC: one C call over a few dozen bytes. The
        keyed BLAKE2b it replaces (copy, update, hexdigest: three method calls and a
        compression) made this function cost 7.1k instructions compiled, now 3.1k, and it
        runs for every OPTIONS, REGISTER (401 and 200), challenged INVITE and in-dialog ACK.
        Nothing relies on these tags being unguessable: they tag answers that open no
        dialog (a challenge, a REGISTER's or OPTIONS' 200, a refusal), and all they decide is
        that an ACK carrying one is absorbed here (route.py) rather than passed on, which an
        outsider forging such an ACK could as well have left unsent; a real dialog's ACK
        carries the callee's tag, never one of ours. The CRC is linear, so someone who sees
        some of these tags can work out others: harmless, as said. A collision (2^-32 for two
        Call-IDs) is harmless too, dialogs being told apart by Call-ID and both tags.
        """
        try:
            from_tag = request.from_tag
        except SipParseError:  # a request answered with 400 because its From is broken
            from_tag = request.headers.get("from")
        key = f"{request.call_id}|{from_tag}".encode("utf-8", "surrogateescape")
        # Decimal: an int's str() is a direct call compiled; a hex format spec is str.format.
        return f"pbx{_CRC32(key, self._tag_seed)}"

    def retag(self, response: Response, request: Request) -> None:
        """Give a locally built final response our deterministic To-tag (§8.2.6.2)."""
        if request.to_tag is not None or response.status < 200:
            return
        to = request.headers.get("to")
        if to is not None:
            response.headers.set("To", f"{to};tag={self.local_tag(request)}")

    def reply(
        self,
        request: Request,
        flow: Flow,
        status: int,
        reason: str | None = None,
        extra: list[tuple[str, str]] | None = None,
    ) -> None:
        """Answer a request ourselves (no ACK is ever answered: §17)."""
        if request.method == "ACK":
            return
        try:
            in_dialog = request.to_tag is not None
        except SipParseError:  # answering a request whose To is what is broken
            in_dialog = False
        tag = None if in_dialog else self.local_tag(request)
        tail = self._server_tail if not extra else self._tail(extra)
        # The bytes make_response(...).to_bytes() would give, without building the Response.
        data = response_bytes(request, status, reason, tag, tail)
        self._deliver(data, status, flow, request, cache=True)

    def _tail(self, extra: list[tuple[str, str]]) -> str:
        """Server then `extra` (checked), then Content-Length: once per distinct `extra`."""
        key = tuple(extra)
        tail = self._tails.get(key)
        if tail is None:
            tail = answer_tail(self._server_lines + keyed_lines(extra))
            if len(self._tails) < _KEYED_EXTRA_LIMIT:
                self._tails[key] = tail
        return tail

    def send_response(
        self,
        response: Response,
        flow: Flow,
        request: Request | None = None,
        *,
        cache: bool = True,
    ) -> None:
        """Send along §18.2.2; remember UDP final answers so retransmissions get them again
        (unless `cache` is False: an answer as good built afresh)."""
        data = response.to_bytes()
        if request is None:
            self.answered_locally += 1
            self.send(data, answer_flow(response, flow))
            return
        self._deliver(data, response.status, flow, request, cache=cache)

    def send_answer(
        self, data: bytes, status: int, flow: Flow, request: Request, *, cache: bool = True
    ) -> None:
        """Send an answer to `request` already written as bytes (the registrar's 200 to a
        refresh, a challenge): as `send_response` would send the Response it stands for,
        Timer J caching included (unless `cache` is False)."""
        self._deliver(data, status, flow, request, cache=cache)

    def _deliver(
        self, data: bytes, status: int, flow: Flow, request: Request, *, cache: bool
    ) -> None:
        """Send an answer to `request` (§18.2.2) and keep a UDP final one for Timer J."""
        # A response we built carries the request's (stamped) top Via: reuse its parsed view,
        # read once for both the destination and the cache key.
        self.answered_locally += 1
        via = _top_via(request)
        self.send(data, response_flow(via, flow))
        if cache and flow.transport == "udp" and status >= 200:
            key = _key_of(via, request.method, flow)
            if key is not None:
                self._cache_reply(key, data)

    def send(self, data: bytes, flow: Flow) -> bool:
        if self.bus.capture_traffic:
            self.bus.publish(SipTraffic("out", flow.transport, flow.remote, flow.local, data))
        return self._send(data, flow)

    # -- retransmissions of locally answered requests -----------------------------------
    @staticmethod
    def _reply_key(request: Request, flow: Flow) -> tuple[str, str, int | None, str] | None:
        """§17.2.3 matching: branch, sent-by and method (ACK excluded: it is never answered).

        The source address stands in for the sent-by host: a retransmission comes from where
        the original did, and a third party copying a phone's branch and Via must not be
        handed that phone's cached answer (or poison it)."""
        try:
            via = request.top_via
        except SipParseError:
            return None
        return _key_of(via, request.method, flow)

    def _cache_reply(self, key: tuple[str, str, int | None, str], data: bytes) -> None:
        """Remember an answer until Timer J, within REPLY_CACHE_SIZE entries and bytes."""
        cache = self._reply_cache
        if key in cache:  # rare (a request answered twice): a look-up costs less than pop()
            self._reply_cache_bytes -= len(cache.pop(key)[1])
        cache[key] = (self.clock() + REPLY_CACHE_SECONDS, data)
        self._reply_cache_bytes += len(data)
        while cache and (
            len(cache) > REPLY_CACHE_SIZE or self._reply_cache_bytes > REPLY_CACHE_BYTES
        ):
            _key, (_expires, evicted) = cache.popitem(last=False)
            self._reply_cache_bytes -= len(evicted)

    @property
    def reply_cache_bytes(self) -> int:
        return self._reply_cache_bytes

    def resend_cached_reply(self, request: Request, flow: Flow, now: float) -> bool:
        """A UDP retransmission of a request we already answered gets the same answer
        (the server transaction's job, §17.2.2), instead of being processed twice."""
        if flow.transport != "udp" or not self._reply_cache:
            return False
        via = _top_via(request)
        key = _key_of(via, request.method, flow)
        if key is None:
            return False
        cached = self._reply_cache.get(key)
        if cached is None:
            return False
        expires, data = cached
        if expires < now:
            del self._reply_cache[key]
            self._reply_cache_bytes -= len(data)
            return False
        self.send(data, response_flow(via, flow))
        return True

    def expire(self, now: float) -> None:
        """Drop cached replies past Timer J (called about once a second)."""
        cache = self._reply_cache
        while cache:
            key, (expires, data) = next(iter(cache.items()))
            if expires >= now:
                break
            del cache[key]
            self._reply_cache_bytes -= len(data)
