"""The route's front door, shortened: each shortcut against the general path it replaces.

- stamp_via's one-string edit of a bare `;rport` against the two general `_with_param` edits;
- the scanner verdict cache keyed by the searched text against a search of every request
  (the pre-shortcut matcher, written out here as the reference);
- FloodDetector.hit with its constant indices and bound `move_to_end` against the sliding
  window written out plainly, estimates and evictions alike.
"""

from __future__ import annotations

import random
import re
from collections import OrderedDict

from hypothesis import given, settings
from hypothesis import strategies as st
from support.scanner_verdict import joined_verdict

from core.net.flow import Flow
from core.net.intake import DatagramSender
from core.route import _with_param, _with_rport_and_received, stamp_via
from core.security.flood import FloodDetector
from core.security.scanners import VERDICT_KEY_LENGTH, ScannerMatcher
from core.settings import SecuritySettings
from core.sip.errors import SipParseError
from core.sip.message import Request
from core.sip.parser import parse_message

# -- stamp_via ---------------------------------------------------------------------------------
_PARAM_NAMES = ["rport", "received", "branch", "rportx", "xrport", "receivedx", "lr", "r", ""]
_PARAM_VALUES = [None, "", "5060", "1234", "198.51.100.66", "z9hG4bK1", "a=b"]


def _via_text(params: list[tuple[str, str | None]], host: str = "192.0.2.1:5060") -> str:
    return (
        "SIP/2.0/UDP "
        + host
        + "".join(f";{name}" if value is None else f";{name}={value}" for name, value in params)
    )


_params = st.lists(
    st.tuples(st.sampled_from(_PARAM_NAMES), st.sampled_from(_PARAM_VALUES)), max_size=6
)


@settings(max_examples=600, deadline=None)
@given(
    params=_params,
    rport=st.sampled_from(["5062", "1", "65535"]),
    ip=st.sampled_from(["203.0.113.7", "2001:db8::66"]),
)
def test_one_string_stamp_is_the_two_general_edits(
    params: list[tuple[str, str | None]], rport: str, ip: str
) -> None:
    text = _via_text(params)
    assert _with_rport_and_received(text, rport, ip) == _with_param(
        _with_param(text, ";rport", rport), ";received", ip
    )


def _request(via: str) -> Request:
    text = (
        f"OPTIONS sip:pbx.test SIP/2.0\r\nVia: {via}\r\nMax-Forwards: 70\r\n"
        "From: <sip:alice@pbx.test>;tag=1\r\nTo: <sip:pbx.test>\r\n"
        "Call-ID: front-1\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n"
    )
    request = parse_message(text.encode())
    assert isinstance(request, Request)
    return request


def _printed_stamp(request: Request, flow: Flow) -> tuple[list[tuple[str, str]], str]:
    """The stamp as printing the element with its parameters replaced gives it."""
    vias = request.vias
    via = vias[0]
    ip, port = flow.remote
    changes: dict[str, str | None] = {}
    if via.host != ip or via.received not in (None, ip):
        changes["received"] = ip
    if via.wants_rport and via.params.get("rport") != str(port):
        changes["rport"] = str(port)
        changes.setdefault("received", ip)
    if changes:
        stamped = via.with_params(**changes)
        vias[0] = stamped
        request.headers.replace_first_value("Via", str(stamped), view=vias)
    return list(request.headers), str(request.vias[0])


@settings(max_examples=400, deadline=None)
@given(
    params=_params,
    host=st.sampled_from(["192.0.2.1:5060", "203.0.113.7:5062", "203.0.113.7", "pc.example"]),
    remote=st.sampled_from([("203.0.113.7", 5062), ("192.0.2.1", 5060), ("203.0.113.7", 1234)]),
)
def test_stamp_via_is_what_printing_gives(
    params: list[tuple[str, str | None]], host: str, remote: tuple[str, int]
) -> None:
    via = _via_text([("branch", "z9hG4bK1"), *params], host)
    request, expected = _request(via), _request(via)
    try:
        request.vias  # noqa: B018 - parsed on first use
    except SipParseError:
        return  # e.g. an empty parameter name: the sanity check refuses it before the stamp
    flow = Flow("udp", remote, ("192.0.2.10", 5060))
    stamp_via(request, flow)
    lines, printed = _printed_stamp(expected, flow)
    assert list(request.headers) == lines
    assert str(request.vias[0]) == printed
    assert request.vias == expected.vias


# -- scanner verdicts --------------------------------------------------------------------------
_WORDS = ["friendly-scanner", "sipvicious", "sipcli/v1.8", "smap", "iWar", "Yealink", "x", ""]


def _scanner_request(user_agent: str | None, display: str, user: str) -> Request:
    ua_line = f"User-Agent: {user_agent}\r\n" if user_agent is not None else ""
    name = f'"{display}" ' if display else ""
    text = (
        "OPTIONS sip:100@192.0.2.1 SIP/2.0\r\n"
        "Via: SIP/2.0/UDP 203.0.113.66:5079;branch=z9hG4bK-1;rport\r\n"
        f"Max-Forwards: 70\r\nTo: <sip:100@1.1.1.1>\r\nFrom: {name}<sip:{user}@1.1.1.1>;tag=a\r\n"
        f"{ua_line}Call-ID: 1\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n"
    )
    request = parse_message(text.encode())
    assert isinstance(request, Request)
    return request


def test_cached_verdicts_are_the_searched_ones() -> None:
    """Many requests, repeats among them (cache hits), texts that join alike, long texts
    (never kept): each verdict is the one a search of that very request gives."""
    patterns = SecuritySettings().scanner_user_agents
    cached, reference = ScannerMatcher(patterns), ScannerMatcher(patterns)
    rng = random.Random(21)
    pieces = [*_WORDS, "Bitsmapper", "Siwar Phone", "a b", "sip vicious", "100"]
    long_text = "y" * VERDICT_KEY_LENGTH
    seen = 0
    for _ in range(3_000):
        user_agent = rng.choice([None, *pieces, f"{rng.choice(pieces)} {rng.choice(pieces)}"])
        display = rng.choice(pieces).replace("/", "")
        user = re.sub(r"[^A-Za-z0-9-]", "", rng.choice(pieces)) or "100"
        if rng.random() < 0.02:
            user_agent = f"{user_agent} {long_text}"
        request = _scanner_request(user_agent, display, user)
        assert cached.match_request(request) == joined_verdict(reference, request)
        seen += 1
    assert seen == 3_000 and cached._verdicts  # some were kept, so hits were tested


def test_texts_joining_alike_from_different_places_keep_their_own_verdicts() -> None:
    """The same words split differently between User-Agent, display name and user: one key
    each, and each its own verdict (`user-agent` or `from`)."""
    matcher = ScannerMatcher(["friendly-scanner", "smap"])
    first = _scanner_request("friendly-scanner", "smap", "100")
    second = _scanner_request("Phone", "friendly-scanner", "100")
    for _ in range(2):
        assert matcher.match_request(first) == 'user-agent "friendly-scanner"'
        assert matcher.match_request(second) == 'from "friendly-scanner"'


# -- flood counting ----------------------------------------------------------------------------
class _PlainWindow:
    """The sliding-window counter as the module docstring states it."""

    def __init__(self, window: float, base_limit: int, max_tracked: int) -> None:
        self.window, self.base_limit, self.max_tracked = window, base_limit, max_tracked
        self.sources: OrderedDict[str, list[float]] = OrderedDict()

    def hit(self, ip: str, now: float) -> float:
        state = self.sources.get(ip)
        if state is None:
            if len(self.sources) >= self.max_tracked:
                self.sources.popitem(last=False)
            self.sources[ip] = [now + self.window, 1, 0]
            return 0.0 if self.base_limit >= 1 else 1.0
        self.sources.move_to_end(ip)
        end, count, previous = state
        if now >= end + self.window:
            end, previous, count = now + self.window, 0, 0
        elif now >= end:
            end, previous, count = end + self.window, count, 0
        count += 1
        state[:] = [end, count, previous]
        if count + previous <= self.base_limit:
            return 0.0
        if not previous:
            return float(count)
        return count + previous * (end - now) / self.window


def test_flood_hit_is_the_plain_sliding_window() -> None:
    rng = random.Random(7)
    for window, limit, tracked in ((1.0, 5, 4), (2.0, 0, 3), (0.5, 30, 50)):
        detector = FloodDetector(window, limit, tracked)
        plain = _PlainWindow(window, limit, tracked)
        now = 100.0
        for _ in range(5_000):
            now += rng.choice([0.0, 0.001, 0.01, 0.1, 0.5, window, 3 * window])
            ip = f"198.51.100.{rng.randrange(8)}"
            estimate = detector.hit(ip, now)
            wanted = plain.hit(ip, now)
            assert abs(estimate - wanted) <= 1e-9 * max(1.0, wanted), (ip, now)
            if rng.random() < 0.01:
                detector.forget(ip)
                plain.sources.pop(ip, None)
        assert detector.tracked == len(plain.sources)
        # The same recency order: sweeping far ahead forgets everything, oldest first.
        assert detector.sweep(now + 10 * window) == len(plain.sources)


# -- UDP sends ---------------------------------------------------------------------------------
class _Socket:
    def __init__(self, name: str, sent: list[tuple[str, bytes, tuple[str, int]]]) -> None:
        self.name, self.sent = name, sent

    def sendto(self, data: bytes, remote: tuple[str, int]) -> None:
        self.sent.append((self.name, data, remote))


def test_udp_sends_go_where_a_plain_socket_dict_sends_them() -> None:
    """Sockets bound and cleared at random, sends from every kind of local address: the
    one-socket shortcut picks the socket (or the fallback) a dict look-up picks."""
    rng = random.Random(5)
    locals_ = [("127.0.0.1", 5060), ("127.0.0.1", 5062), ("192.0.2.10", 5060), ("::", 5060)]
    remotes = [("203.0.113.7", 5062), ("pc.example", 5060), ("198.51.100.1", 5060)]
    literal = {"203.0.113.7": True, "198.51.100.1": True, "pc.example": False}
    sent: list[tuple[str, bytes, tuple[str, int]]] = []
    wanted: list[tuple[str, bytes, tuple[str, int]]] = []
    sender = DatagramSender(
        lambda data, flow: sent.append(("fallback", data, flow.remote)) is None, literal
    )
    plain: dict[tuple[str, int], _Socket | None] = {}
    shortcut_used = 0
    for step in range(4_000):
        roll = rng.random()
        if roll < 0.05:
            local = rng.choice(locals_)
            udp = None if rng.random() < 0.1 else _Socket(f"s{step}", sent)
            sender.sockets[local] = udp
            plain[local] = udp
        elif roll < 0.08:
            sender.sockets.clear()
            plain.clear()
        else:
            local = rng.choice([*locals_, ("127.0.0.1", 1)])
            remote = rng.choice(remotes)
            transport = "udp" if rng.random() < 0.9 else "tcp"
            data = f"m{step}".encode()
            udp = plain.get(local)
            if transport == "udp" and udp is not None and literal[remote[0]]:
                wanted.append((udp.name, data, remote))
                shortcut_used += len(plain) == 1
            else:
                wanted.append(("fallback", data, remote))
            assert sender.send(data, Flow(transport, remote, local))
            assert sent == wanted
        assert len(sender.sockets) == len(plain)
    assert shortcut_used > 100 and sender.sent == sum(name != "fallback" for name, _, _ in sent)
