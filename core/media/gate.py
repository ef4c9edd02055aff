"""Media anchoring through rtpengine: the SDP rewritten before the proxy sees the message.

rtpengine answers over the network, and the proxy never awaits (core/proxy/proxy.py). So
with `[media] engine = "rtpengine"` the route talks to this gate instead of the proxy, with
the proxy's own five calls. A message that carries SDP of an anchored call waits for
rtpengine's reply in a task of its own, has its body replaced, and then goes to the proxy as
if it had just arrived; anything else goes through at once. The proxy relays bodies as they
are, so rewriting before it is the same as rewriting on the way out: the address rtpengine
writes is its own interface's, not one of ours that would depend on the next hop.

The gate sits after authentication (the route calls `route_to_user` only for a caller it has
authenticated, or a trusted carrier), so an unauthenticated INVITE never creates an
rtpengine session. When rtpengine does not answer, or refuses, the message goes on with its
SDP untouched: a call without anchoring beats a call refused. In-flight exchanges are
bounded by the client (`core/media/rtpengine.py` `MAX_PENDING`).

What the gate does not see: rtpengine's own media timeout ends the session there, not the
call here; the Calls pane shows such calls as relayed by rtpengine, without counters.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from core.media.anchor import OFFER_METHODS, AnchoredCall, exchange_key, has_sdp, wants_anchor
from core.media.relay import MediaStats
from core.media.rtpengine import RtpEngine, RtpEngineError
from core.net.flow import Flow
from core.proxy.calls import Call, CallSink
from core.registrar.location import LocationService
from core.route import Proxy
from core.settings import MediaSettings
from core.sip.message import Request, Response

log = logging.getLogger("pbxtui.media")


class RtpEngineSessions:
    """The calls rtpengine anchors for us, and their end. Built before the call table (whose
    sink it is, in front of the CDR writer); the gate, built after the proxy, shares it."""

    def __init__(self, engine: RtpEngine, sink: CallSink | None = None) -> None:
        self.engine = engine
        self.sink = sink
        self.calls: dict[str, AnchoredCall] = {}
        self.refused = 0  # messages that went on unanchored (rtpengine silent or refusing)
        self._tasks: set[asyncio.Task[None]] = set()

    def call_finished(self, call: Call) -> None:
        if self.calls.pop(call.call_id, None) is not None:
            self.spawn(self._delete(call.call_id))
        if self.sink is not None:
            self.sink.call_finished(call)

    def stats(self, call_id: str, now: float) -> MediaStats | None:
        """Relayed, by rtpengine: no counters here (the pane says so)."""
        return MediaStats((), 0.0) if call_id in self.calls else None

    def expire(self, now: float, ringing: Callable[[str], bool]) -> list[str]:
        return []  # rtpengine times streams out itself

    def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        self._tasks.clear()
        self.calls.clear()
        self.engine.close()

    def spawn(self, work: Awaitable[None]) -> None:
        task = asyncio.ensure_future(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _delete(self, call_id: str) -> None:
        try:
            await self.engine.delete(call_id)
        except RtpEngineError as error:
            log.warning("rtpengine: %s", error)


def rtpengine_sessions(settings: MediaSettings, sink: CallSink | None) -> RtpEngineSessions | None:
    """rtpengine's sessions when it anchors calls (`[media] engine = "rtpengine"`), else None."""
    if settings.relay == "never" or settings.engine != "rtpengine":
        return None
    host, _colon, port = settings.rtpengine.rpartition(":")
    return RtpEngineSessions(RtpEngine((host.strip("[]"), int(port))), sink)


class RtpEngineGate:
    """The route's proxy when rtpengine anchors the media."""

    def __init__(
        self,
        settings: MediaSettings,
        sessions: RtpEngineSessions,
        proxy: Proxy,  # the proxy as the route calls it; the gate stands in its place
        location: LocationService,
        clock: Callable[[], float],
    ) -> None:
        self.settings = settings
        self.sessions = sessions
        self.engine = sessions.engine
        self.calls = sessions.calls
        self.proxy = proxy
        self.location = location
        self.clock = clock

    # -- the proxy's calls, in front of it -------------------------------------------------
    def route_to_user(self, request: Request, caller: str | None, flow: Flow, now: float) -> None:
        call_id = request.call_id or ""
        if (
            request.method != "INVITE"
            or call_id in self.calls
            or len(self.calls) >= self.settings.max_sessions
            or not wants_anchor(self.settings, self.location, request, flow, None, None, now)
        ):
            self.proxy.route_to_user(request, caller, flow, now)
            return
        anchored = self.calls[call_id] = AnchoredCall()
        if not has_sdp(request):
            cseq = request.cseq
            anchored.late_offer = cseq.number if cseq is not None else -1  # offer in the 2xx
            self.proxy.route_to_user(request, caller, flow, now)
            return
        from_tag = request.from_tag or ""
        anchored.offerer = from_tag
        exchange = self.engine.offer(call_id, from_tag, request.body, flow.ip, "", now)
        self._later(exchange, request, lambda: self.proxy.route_to_user(request, caller, flow,
                                                                        self.clock()))  # fmt: skip

    def in_dialog(self, request: Request, flow: Flow, now: float) -> None:
        call_id = request.call_id or ""
        anchored = self.calls.get(call_id)
        method = request.method
        if anchored is None or not has_sdp(request):
            self.proxy.in_dialog(request, flow, now)
            return
        from_tag = request.from_tag or ""
        to_tag = request.to_tag or ""
        if method == "ACK" and anchored.offerer == to_tag:
            anchored.offerer = ""
            exchange = self.engine.answer(call_id, to_tag, from_tag, request.body, flow.ip, "", now)
        elif method in OFFER_METHODS:
            anchored.offerer = from_tag
            exchange = self.engine.offer(call_id, from_tag, request.body, flow.ip, "", now)
        else:
            self.proxy.in_dialog(request, flow, now)
            return
        self._later(exchange, request, lambda: self.proxy.in_dialog(request, flow, self.clock()))

    def cancel(self, request: Request, flow: Flow, now: float) -> None:
        self.proxy.cancel(request, flow, now)

    def absorb_retransmission(self, request: Request, flow: Flow, now: float) -> bool:
        return self.proxy.absorb_retransmission(request, flow, now)

    def on_response(self, response: Response, flow: Flow, now: float) -> bool:
        call_id = response.call_id or ""
        anchored = self.calls.get(call_id)
        key = exchange_key(anchored, response)
        cseq = response.cseq
        if anchored is None or key is None or cseq is None:
            return self.proxy.on_response(response, flow, now)
        replayed = anchored.replayed(key, response.body)
        if replayed is not None:  # a retransmission: as before
            response.body = replayed
            return self.proxy.on_response(response, flow, now)
        status = response.status
        from_tag = response.from_tag or ""
        to_tag = key[1]
        if anchored.offerer == from_tag and from_tag:
            exchange = self.engine.answer(
                call_id, from_tag, to_tag, response.body, flow.ip, "", now
            )
        elif status >= 200 and cseq.method == "INVITE" and cseq.number == anchored.late_offer:
            anchored.late_offer = -1
            anchored.offerer = to_tag  # a late offer: the answer comes in the ACK
            exchange = self.engine.offer(call_id, to_tag, response.body, flow.ip, "", now)
        else:
            return self.proxy.on_response(response, flow, now)
        original = response.body
        self._later(
            exchange,
            response,
            lambda: self._response_ready(anchored, key, original, response, flow),
        )
        return True

    def _response_ready(
        self,
        anchored: AnchoredCall,
        key: tuple[int, str],
        original: bytes,
        response: Response,
        flow: Flow,
    ) -> None:
        anchored.remember(key, original, response.body)
        self.proxy.on_response(response, flow, self.clock())

    # -- inside ---------------------------------------------------------------------------
    def _later(
        self,
        exchange: Awaitable[bytes],
        message: Request | Response,
        then: Callable[[], None],
    ) -> None:
        self.sessions.spawn(self._rewrite_then(exchange, message, then))

    async def _rewrite_then(
        self, exchange: Awaitable[bytes], message: Request | Response, then: Callable[[], None]
    ) -> None:
        try:
            message.body = await exchange
        except RtpEngineError as error:
            self.sessions.refused += 1
            log.warning("rtpengine: %s; the call's media goes unanchored", error)
        then()
