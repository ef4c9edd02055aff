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
rtpengine session. When rtpengine does not answer, refuses, or answers something unreadable,
the message goes on with its SDP untouched: a call without anchoring beats a call refused,
and the admin gets a warning in the feed (at most one per `WARN_EVERY` seconds). In-flight
exchanges are bounded by the client (`core/media/rtpengine.py` `MAX_PENDING`).

The offer/answer bookkeeping is the embedded relay's (`AnchoredCall` in core/media/anchor.py),
so both engines agree on when an offer is outstanding; and the proxy tells `RtpEngineSessions`
of every final failure (`offer_failed`), where a failed re-INVITE's offer is undone by giving
rtpengine the last good offer and answer again.

rtpengine ends a call's session itself when its media stops (its `timeout`, `silent-timeout`,
`final-timeout`); nothing tells us. So every `poll_seconds` each call rtpengine has both legs
of is asked for with a `query`: the answer fills the Calls pane's counters
(core/media/ngstats.py), and "Unknown call-id" for a call still up here means rtpengine timed
its media out — `expire` then hands the call to the proxy to hang up with "media timeout" in
its CDR, exactly as the embedded relay's own timeout does (core/assembly.py `expire_media`).
The same happens to calls rtpengine lost by restarting: their media is gone just the same.
A call still ringing is neither queried nor ended from here. The polling is bounded and
spread: each housekeeping tick sends its share of a round, and at most `POLL_IN_FLIGHT`
queries wait for rtpengine at once.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Awaitable, Callable

from core.events import EventBus, ServerEvent
from core.media.anchor import (
    OFFER_METHODS,
    AnchoredCall,
    Exchange,
    exchange_key,
    has_sdp,
    wants_anchor,
)
from core.media.ngstats import media_stats
from core.media.relay import MediaStats
from core.media.rtpengine import RtpEngine, RtpEngineError, RtpEngineRefused
from core.net.flow import Flow
from core.proxy.calls import Call, CallSink
from core.registrar.location import LocationService
from core.route import Proxy
from core.settings import MediaSettings
from core.sip.message import Request, Response
from core.sip.uri import SipUri

log = logging.getLogger("pbxtui.media")

POLL_SECONDS = 5.0  # how often each established call's counters are asked for
POLL_IN_FLIGHT = 256  # queries awaiting rtpengine at once; the rest wait for a later tick
WARN_EVERY = 10.0  # seconds between two warnings in the feed about rtpengine


class RtpEngineSessions:
    """The calls rtpengine anchors for us, their counters, and their end. Built before the
    call table (whose sink it is, in front of the CDR writer); the gate, built after the
    proxy, shares it, and the proxy calls it as its media hooks (bodies untouched: the gate
    rewrote them already)."""

    def __init__(
        self,
        engine: RtpEngine,
        sink: CallSink | None = None,
        bus: EventBus | None = None,
        clock: Callable[[], float] | None = None,
    ) -> None:
        self.engine = engine
        self.sink = sink
        self.bus = bus
        self.clock = clock
        self.calls: dict[str, AnchoredCall] = {}
        self.refused = 0  # messages that went on unanchored (rtpengine silent or refusing)
        self.timed_out = 0  # calls rtpengine ended for want of media
        self.poll_seconds = POLL_SECONDS
        self.established: set[str] = set()  # calls rtpengine took an answer for: both legs
        self.figures: dict[str, tuple[MediaStats, float]] = {}  # last `query` answer, when
        self._polled: dict[str, float] = {}  # when each call's last query went out
        self._querying: set[str] = set()
        self._gone: set[str] = set()  # calls rtpengine no longer has
        self._warned_at = -math.inf
        self._tasks: set[asyncio.Task[None]] = set()

    # -- the proxy's media hooks -------------------------------------------------------------
    def request_body(
        self, request: Request, arrived: Flow, out: Flow, target_uri: SipUri | None
    ) -> bytes:
        return request.body

    def response_body(self, response: Response, source: Flow, to: Flow) -> bytes:
        return response.body

    def offer_failed(self, request: Request) -> None:
        """A final failure: when `request` carried the outstanding offer, rtpengine is given
        the last good exchange again (it has no way to withdraw an offer)."""
        call_id = request.call_id or ""
        anchored = self.calls.get(call_id)
        cseq = request.cseq
        if anchored is None or cseq is None or request.method not in OFFER_METHODS:
            return
        settled = anchored.failed(request.from_tag or "", cseq.number)
        if settled is not None:
            self.spawn(self._restore(call_id, *settled))

    async def _restore(self, call_id: str, offer: Exchange, answer: Exchange) -> None:
        now = self._now()
        try:
            await self.engine.offer(call_id, offer.from_tag, offer.body, offer.source_ip, "", now)
            await self.engine.answer(call_id, answer.from_tag, answer.to_tag, answer.body,
                                     answer.source_ip, "", now)  # fmt: skip
        except RtpEngineError as error:
            self.problem(f"{error}; the failed re-offer could not be undone")

    # -- the end of a call (a CallSink in front of the CDR writer) ---------------------------
    def call_finished(self, call: Call) -> None:
        if self.calls.pop(call.call_id, None) is not None:
            self._forget(call.call_id)
            self.spawn(self._delete(call.call_id))
        if self.sink is not None:
            self.sink.call_finished(call)

    def _forget(self, call_id: str) -> None:
        self.established.discard(call_id)
        self.figures.pop(call_id, None)
        self._polled.pop(call_id, None)
        self._gone.discard(call_id)

    # -- figures and timeouts ----------------------------------------------------------------
    def stats(self, call_id: str, now: float) -> MediaStats | None:
        """rtpengine's counters from the last `query` (idle time grown since); before the
        first answer an empty `MediaStats` (the pane says "relayed by rtpengine")."""
        if call_id not in self.calls:
            return None
        known = self.figures.get(call_id)
        if known is None:
            return MediaStats((), 0.0)
        figures, at = known
        return MediaStats(figures.streams, figures.idle_seconds + max(0.0, now - at))

    def expire(self, now: float, ringing: Callable[[str], bool]) -> list[str]:
        """The calls rtpengine no longer has (timed out there), forgotten here for the proxy
        to hang up; and the next queries sent (about once a second, from housekeeping)."""
        ended = [call_id for call_id in self._gone if call_id in self.calls
                 and not ringing(call_id)]  # fmt: skip
        for call_id in ended:
            self.calls.pop(call_id, None)
            self._forget(call_id)
        self.timed_out += len(ended)
        self._gone.clear()
        # Each tick sends its share of a round (every call once per `poll_seconds`).
        budget = math.ceil(len(self.established) / max(self.poll_seconds, 1.0)) + 1
        for call_id in self.established:
            if len(self._querying) >= POLL_IN_FLIGHT or budget <= 0:
                break
            if call_id in self._querying or ringing(call_id):
                continue
            if now - self._polled.get(call_id, -math.inf) >= self.poll_seconds:
                budget -= 1
                self._polled[call_id] = now
                self._querying.add(call_id)
                self.spawn(self._query(call_id, now))
        return ended

    async def _query(self, call_id: str, now: float) -> None:
        try:
            reply = await self.engine.query(call_id)
        except RtpEngineRefused as error:
            if error.unknown_call and call_id in self.established:
                self._gone.add(call_id)
            elif not error.unknown_call:
                self.problem(str(error))
        except RtpEngineError as error:
            self.problem(str(error))
        else:
            anchored = self.calls.get(call_id)
            if anchored is not None:
                figures = media_stats(reply, anchored.caller, now)
                if figures is not None:
                    self.figures[call_id] = (figures, now)
        finally:
            self._querying.discard(call_id)

    def problem(self, text: str) -> None:
        """rtpengine misbehaved: logged, and a warning in the feed now and then."""
        log.warning("rtpengine: %s", text)
        now = self._now()
        if self.bus is not None and now - self._warned_at >= WARN_EVERY:
            self._warned_at = now
            self.bus.publish(ServerEvent(f"rtpengine: {text}", level="warning"))

    def _now(self) -> float:
        return self.clock() if self.clock is not None else asyncio.get_running_loop().time()

    # -- housekeeping ------------------------------------------------------------------------
    def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        self._tasks.clear()
        self.calls.clear()
        self.established.clear()
        self.figures.clear()
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


def rtpengine_sessions(
    settings: MediaSettings,
    sink: CallSink | None,
    bus: EventBus | None = None,
    clock: Callable[[], float] | None = None,
) -> RtpEngineSessions | None:
    """rtpengine's sessions when it anchors calls (`[media] engine = "rtpengine"`), else None."""
    if settings.relay == "never" or settings.engine != "rtpengine":
        return None
    host, _colon, port = settings.rtpengine.rpartition(":")
    return RtpEngineSessions(RtpEngine((host.strip("[]"), int(port))), sink, bus, clock)


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
        from_tag = request.from_tag or ""
        anchored = self.calls[call_id] = AnchoredCall(caller=from_tag)
        if not has_sdp(request):
            cseq = request.cseq
            anchored.offered_late(cseq.number if cseq is not None else -1)  # offer in the 2xx
            self.proxy.route_to_user(request, caller, flow, now)
            return
        anchored.offered(Exchange(from_tag, "", request.body, flow.ip, ""))
        exchange = self.engine.offer(call_id, from_tag, request.body, flow.ip, "", now)
        self._later(exchange, request, lambda: self.proxy.route_to_user(request, caller, flow,
                                                                        self.clock()))  # fmt: skip

    def in_dialog(self, request: Request, flow: Flow, now: float) -> None:
        call_id = request.call_id or ""
        anchored = self.calls.get(call_id)
        method = request.method
        if anchored is None:
            self.proxy.in_dialog(request, flow, now)
            return
        if not has_sdp(request):
            cseq = request.cseq
            if method == "INVITE" and cseq is not None:
                anchored.offered_late(cseq.number)  # a re-INVITE whose 2xx will offer
            self.proxy.in_dialog(request, flow, now)
            return
        from_tag = request.from_tag or ""
        to_tag = request.to_tag or ""
        if method == "ACK" and anchored.offerer == to_tag and to_tag:
            anchored.answered(Exchange(to_tag, from_tag, request.body, flow.ip, ""), final=True)
            exchange = self.engine.answer(call_id, to_tag, from_tag, request.body, flow.ip, "", now)
            self._later(exchange, request, lambda: self.proxy.in_dialog(request, flow,
                        self.clock()), established=call_id)  # fmt: skip
            return
        if method in OFFER_METHODS:
            anchored.offered(Exchange(from_tag, "", request.body, flow.ip, ""))
            exchange = self.engine.offer(call_id, from_tag, request.body, flow.ip, "", now)
            self._later(exchange, request, lambda: self.proxy.in_dialog(request, flow,
                                                                        self.clock()))  # fmt: skip
            return
        self.proxy.in_dialog(request, flow, now)

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
        status = response.status
        from_tag = response.from_tag or ""
        to_tag = key[1]
        answering = anchored.offerer == from_tag and bool(from_tag)
        answer = Exchange(from_tag, to_tag, response.body, flow.ip, "")
        replayed = anchored.replayed(key, response.body)
        if replayed is not None:  # a retransmission, or the 2xx repeating its 18x's answer
            if answering:
                anchored.answered(answer, final=status >= 200)
            response.body = replayed
            return self.proxy.on_response(response, flow, now)
        established = ""
        if answering:
            anchored.answered(answer, final=status >= 200)
            exchange = self.engine.answer(
                call_id, from_tag, to_tag, response.body, flow.ip, "", now
            )
            established = call_id
        elif status >= 200 and cseq.method == "INVITE" and cseq.number == anchored.late_offer:
            anchored.late_offer = -1
            anchored.offered(Exchange(to_tag, "", response.body, flow.ip, ""))  # ACK answers
            exchange = self.engine.offer(call_id, to_tag, response.body, flow.ip, "", now)
        else:
            return self.proxy.on_response(response, flow, now)
        original = response.body
        self._later(
            exchange,
            response,
            lambda: self._response_ready(anchored, key, original, response, flow),
            established,
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
        established: str = "",
    ) -> None:
        """`established`: the Call-ID when `exchange` is an answer, which gives rtpengine
        both legs of the call (from then on it is polled)."""
        self.sessions.spawn(self._rewrite_then(exchange, message, then, established))

    async def _rewrite_then(
        self,
        exchange: Awaitable[bytes],
        message: Request | Response,
        then: Callable[[], None],
        established: str,
    ) -> None:
        sessions = self.sessions
        try:
            message.body = await exchange
        except RtpEngineError as error:
            sessions.refused += 1
            sessions.problem(f"{error}; the call's media goes unanchored")
        else:
            if established and established in sessions.calls:
                sessions.established.add(established)
        then()
