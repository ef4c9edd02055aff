"""The Record-Route token, the loop hash and the Route consumption, written for speed, against
the plain formulas they replaced: the same token, the same branch hash, the same removals
(so the same bytes on the wire), over many requests — in-dialog ones (ACK, BYE, re-INVITE from
either side), with and without Route, strict and loose routing, upper-case parameter names."""

from __future__ import annotations

import hashlib
import random

import pytest
from support.loop_hash import reference_loop_hash

from core.net.identity import ServerIdentity
from core.proxy.routing import RecordRouter, loop_hash
from core.settings import ListenAddress
from core.sip.errors import SipParseError
from core.sip.message import Request
from core.sip.parser import parse_message

US = "192.0.2.10"
IDENTITY = ServerIdentity(
    "pbx.test", [ListenAddress("udp", US, 5060), ListenAddress("tcp", US, 5060)]
)
SECRET = b"equivalence secret"
ROUTER = RecordRouter(SECRET, lifetime=100.0, clock=lambda: 1_000.0)


def reference_token(
    call_id: str | None, caller_tag: str | None, ends: tuple[str, str], expires: int
) -> str:
    """The token as first written: sorted ends, a keyed BLAKE2b of the joined fields."""
    key = hashlib.blake2b(b"pbxtui record-route", key=SECRET[:64]).digest()
    low, high = sorted(ends)
    data = f"{call_id or ''}\x00{caller_tag or ''}\x00{low}\x00{high}\x00{expires}"
    mac = hashlib.blake2b(data.encode("utf-8", "surrogateescape"), key=key, digest_size=8)
    return f"{expires:x}-{mac.hexdigest()}"


def reference_consume(request: Request) -> str | None:
    """§16.4 as first written: each Route entry parsed, `param()` asked twice."""
    from core.sip.address import parse_name_addr

    headers = request.headers
    routes = headers.values("route")
    if not routes:
        return None
    token: str | None = None
    uri = request.uri
    if ROUTER.is_ours(IDENTITY, uri) and uri.param("pbx") is not None:  # type: ignore[union-attr]
        token = uri.param("pbx")  # type: ignore[union-attr]
        request.uri = parse_name_addr(routes[-1]).uri
        headers.remove("route")
        if len(routes) > 1:
            headers.add("Route", ", ".join(routes[:-1]))
        routes = routes[:-1]
    for value in routes:
        route_uri = parse_name_addr(value).uri
        if not ROUTER.is_ours(IDENTITY, route_uri):
            break
        if token is None:
            token = route_uri.param("pbx")  # type: ignore[union-attr]
        headers.pop_first_value("route")
    return token


ADDRESSES = ["203.0.113.7", "198.51.100.9", "2001:db8::1", "10.0.0.1", "10.0.0.10", ""]
TEXTS = ["", "a1", "call-1@host", "ÿ-é", "\udcff", "x" * 200, "A1", "b;c"]


@pytest.mark.parametrize("seed", range(4))
def test_token_is_the_reference_token(seed: int) -> None:
    rng = random.Random(seed)
    for _ in range(300):
        ends = (rng.choice(ADDRESSES), rng.choice(ADDRESSES))
        call_id = rng.choice([*TEXTS, None])
        tag = rng.choice([*TEXTS, None])
        expires = rng.choice([0, 1, 1_100, 2**40, rng.randrange(2**33)])
        token = ROUTER.token(call_id, tag, ends, expires)
        assert token == reference_token(call_id, tag, ends, expires)
        # Either order of the ends: one token.
        assert ROUTER.token(call_id, tag, (ends[1], ends[0]), expires) == token


def _request(method: str, uri: str, extra: list[str], *, to_tag: str | None, cseq: str) -> Request:
    lines = [
        f"{method} {uri} SIP/2.0",
        "Via: SIP/2.0/UDP 203.0.113.7:5062;branch=z9hG4bKcaller;rport",
        "From: <sip:alice@pbx.test>;tag=a1",
        "To: <sip:bob@pbx.test>" + (f";tag={to_tag}" if to_tag else ""),
        "Call-ID: call-1@203.0.113.7",
        f"CSeq: {cseq} {method}",
        "Max-Forwards: 70",
        *extra,
        "Content-Length: 0",
    ]
    message = parse_message(("\r\n".join(lines) + "\r\n\r\n").encode())
    assert isinstance(message, Request)
    return message


def _ours(rng: random.Random, token: str | None) -> str:
    name = rng.choice(["pbx", "PBX", "Pbx"])
    transport = rng.choice(["", ";transport=tcp", ";TRANSPORT=udp"])
    param = "" if token is None else f";{name}={token}"
    host = rng.choice([f"{US}:5060", US, "pbx.test", "PBX.test:5060"])
    return f"sip:{host}{transport};lr{param}"


def _routes(rng: random.Random) -> tuple[str, list[str]]:
    """A Request-URI and Route lines: ours (with or without token), foreign, strict, broken."""
    token = ROUTER.token("call-1@203.0.113.7", "a1", ("203.0.113.7", "198.51.100.9"), 1_100)
    entries = []
    for _ in range(rng.randrange(0, 4)):
        kind = rng.random()
        if kind < 0.5:
            entries.append(f"<{_ours(rng, rng.choice([token, None, '0' * 12]))}>")
        elif kind < 0.8:
            entries.append(rng.choice(["<sip:edge.example;lr>", "<sip:bob@198.51.100.9:5060>"]))
        elif kind < 0.9:
            entries.append("<sip:gw.example;lr;pbx>")  # a token parameter without a value
        else:
            entries.append("<bad")
    uri = "sip:bob@198.51.100.9:5060"
    if rng.random() < 0.25:
        uri = _ours(rng, token)  # a strict router before us (§16.4)
    lines = []
    if entries:
        if rng.random() < 0.5:
            lines.append("Route: " + ", ".join(entries))
        else:
            lines.extend(f"Route: {entry}" for entry in entries)
    return uri, lines


@pytest.mark.parametrize("seed", range(4))
def test_consume_and_loop_hash_are_the_reference_ones(seed: int) -> None:
    rng = random.Random(seed)
    for _ in range(200):
        method = rng.choice(["ACK", "BYE", "INVITE", "UPDATE", "INFO"])
        to_tag = rng.choice(["b1", "a1", None])  # BYE from either side, or a new request
        cseq = rng.choice(["1", "2", "4294967295"])
        uri, routes = _routes(rng)
        try:
            ours = _request(method, uri, routes, to_tag=to_tag, cseq=cseq)
            theirs = _request(method, uri, routes, to_tag=to_tag, cseq=cseq)
        except SipParseError:
            continue
        top_via = ours.headers.values("via")[0]
        assert loop_hash(ours, top_via) == reference_loop_hash(ours, top_via)
        outcome: object
        try:
            outcome = ROUTER.consume(ours, IDENTITY)
        except SipParseError as error:
            outcome = ("error", str(error))
        try:
            expected: object = reference_consume(theirs)
        except SipParseError as error:
            expected = ("error", str(error))
        assert outcome == expected
        assert str(ours.uri) == str(theirs.uri)
        assert ours.to_bytes() == theirs.to_bytes()
        # The loop hash of the request as it goes on (a Request-URI undone by §16.4).
        assert loop_hash(ours, top_via) == reference_loop_hash(theirs, top_via)
