"""The parsed Route view (`Request.routes`) read by sanity and by loose routing: each Route
entry is parsed once per message, with the same answers, errors and removals as parsing each
entry where it is needed (the paths before the view, kept here and in `_consume_each`)."""

from __future__ import annotations

import itertools
import random

import pytest

from core.net.flow import Flow
from core.net.identity import ServerIdentity
from core.proxy.routing import RecordRouter
from core.security.sanity import SanityFailure, check_request
from core.settings import ListenAddress
from core.sip.address import parse_name_addr
from core.sip.errors import SipParseError
from core.sip.message import Request
from core.sip.parser import parse_message

US = "192.0.2.10"
IDENTITY = ServerIdentity(
    "pbx.test", [ListenAddress("udp", US, 5060), ListenAddress("tcp", US, 5060)]
)
NOW = 1_000.0
ROUTER = RecordRouter(b"secret", lifetime=100.0, clock=lambda: NOW)
ENDS = (Flow("udp", ("203.0.113.7", 5062), (US, 5060)).remote[0], "198.51.100.9")
TOKEN = ROUTER.token("call-1", "a1", ENDS, int(NOW + 100))

# Route entries of every kind routing meets: ours (with and without a token, by address or
# name, tcp), foreign loose and strict routers, a user's URI, display names, header params,
# and malformed ones (no closing '>', bad scheme text, a bad addr-spec, empty brackets).
ENTRIES = [
    f"<sip:{US}:5060;lr;pbx={TOKEN}>",
    f"<sip:{US}:5060;transport=tcp;lr;pbx={TOKEN}>",
    f"<sip:{US};lr>",
    "<sip:pbx.test;lr;pbx=0-00>",
    "<sip:edge.example;lr>",
    "<sip:old.example>",
    "<sip:bob@198.51.100.9:5060>",
    '"Edge, Proxy" <sip:edge2.example;lr>;foo=bar',
    "Edge <sip:edge3.example;lr;maddr=198.51.100.1>",
    f"sip:{US}:5060;lr",
    "<sip:broken.example;lr",
    "<>",
    "sip:a@b?x=y",
    '"unterminated <sip:x.example;lr>',
]


def _request(route_lines: list[str], start: str = "BYE sip:bob@198.51.100.9 SIP/2.0") -> Request:
    lines = [
        start,
        "Via: SIP/2.0/UDP 203.0.113.7:5062;branch=z9hG4bKcaller;rport=5062",
        "From: <sip:alice@pbx.test>;tag=a1",
        "To: <sip:bob@pbx.test>;tag=b1",
        "Call-ID: call-1",
        f"CSeq: 2 {start.split()[0]}",
        "Max-Forwards: 70",
        *(f"Route: {line}" for line in route_lines),
        "Content-Length: 0",
    ]
    message = parse_message(("\r\n".join(lines) + "\r\n\r\n").encode())
    assert isinstance(message, Request)
    return message


def _old_routes_check(request: Request) -> SanityFailure | None:
    """Sanity's Route check as it was: every value parsed on its own."""
    for value in request.headers.values("route"):
        try:
            parse_name_addr(value)
        except SipParseError:
            return SanityFailure(400, "Bad Route header")
    return None


def _route_sets(count: int) -> list[list[str]]:
    """Route header lines: every entry alone, then random lists split over lines and commas."""
    sets = [[entry] for entry in ENTRIES]
    sets += [[f"{a}, {b}"] for a, b in itertools.product(ENTRIES[:10], repeat=2)]
    rng = random.Random(21)
    for _ in range(count):
        entries = rng.choices(ENTRIES, k=rng.randint(1, 5))
        lines: list[str] = []
        for entry in entries:
            if lines and rng.random() < 0.5:
                lines[-1] += ", " + entry
            else:
                lines.append(entry)
        sets.append(lines)
    return sets


STARTS = [
    "BYE sip:bob@198.51.100.9 SIP/2.0",
    # a strict router before us put our Record-Route URI in the Request-URI (§16.4)
    f"BYE sip:{US}:5060;lr;pbx={TOKEN} SIP/2.0",
    f"ACK sip:{US}:5060;pbx={TOKEN} SIP/2.0",
]


def _outcome(consume: object, request: Request) -> tuple[object, str, str]:
    try:
        result: object = consume(request, IDENTITY)  # type: ignore[operator]
    except SipParseError as error:
        result = ("error", error.reason)
    return result, str(request.uri), request.headers.serialise()


@pytest.mark.parametrize("start", STARTS)
def test_consume_from_the_view_is_consume_entry_by_entry(start: str) -> None:
    for lines in _route_sets(400):
        # As the route runs it: sanity fills the view first (or fails on a bad entry).
        fast = _request(lines, start)
        verdict = check_request(fast, reliable=False)
        slow = _request(lines, start)
        assert _outcome(ROUTER.consume, fast) == _outcome(ROUTER._consume_each, slow), lines
        # And without sanity having run first.
        cold = _request(lines, start)
        slow = _request(lines, start)
        assert _outcome(ROUTER.consume, cold) == _outcome(ROUTER._consume_each, slow), lines
        if verdict is not None:
            assert verdict == SanityFailure(400, "Bad Route header")


def test_sanity_refuses_exactly_the_route_lists_it_refused_before() -> None:
    seen_bad = seen_good = 0
    for lines in _route_sets(400):
        request = _request(lines)
        expected = _old_routes_check(_request(lines))
        assert check_request(request, reliable=False) == expected, lines
        if expected is None:
            seen_good += 1
            assert [str(a.uri) for a in request.routes] == [
                str(parse_name_addr(v).uri) for v in request.headers.values("route")
            ]
        else:
            seen_bad += 1
            with pytest.raises(SipParseError):
                request.routes  # noqa: B018 - asking again raises again
    assert seen_bad > 50 and seen_good > 50


def test_the_view_is_parsed_once_and_follows_changes_to_route() -> None:
    request = _request([f"{ENTRIES[0]}, <sip:edge.example;lr>"])
    first = request.routes
    assert request.routes is first  # cached: no second parse
    assert [str(a.uri) for a in first] == [ENTRIES[0][1:-1], "sip:edge.example;lr"]
    request.headers.pop_first_value("route")
    assert [str(a.uri) for a in request.routes] == ["sip:edge.example;lr"]
    request.headers.add("Route", "<sip:p2.example;lr>")
    assert [str(a.uri) for a in request.routes] == ["sip:edge.example;lr", "sip:p2.example;lr"]
    request.headers.remove("route")
    assert request.routes == ()
    assert _request([]).routes == ()


def test_a_route_list_with_a_bad_entry_after_a_foreign_one_is_routed_as_before() -> None:
    # Routing stops at the first entry not naming us and never reads the bad one after it:
    # consume must not raise where reading entry by entry did not.
    lines = ["<sip:edge.example;lr>, <sip:broken.example;lr"]
    fast, slow = _request(lines), _request(lines)
    assert _outcome(ROUTER.consume, fast) == _outcome(ROUTER._consume_each, slow)
    assert _outcome(ROUTER.consume, _request(lines))[0] is None
    # Ours first, then a bad one: ours is popped before the error, in both.
    lines = [f"{ENTRIES[0]}, <sip:broken.example;lr"]
    fast, slow = _request(lines), _request(lines)
    outcome = _outcome(ROUTER.consume, fast)
    assert outcome == _outcome(ROUTER._consume_each, slow)
    assert outcome[0][0] == "error" and "broken" in outcome[2]  # type: ignore[index]
    assert ENTRIES[0] not in outcome[2]
