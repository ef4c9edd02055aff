"""The proxy's marks on a request, on parsed bytes: Record-Route, loose and strict routing,
loop detection by branch (RFC 3261 §16.3-§16.6, §16.12), and choosing the best answer (§16.7)."""

from __future__ import annotations

import hashlib

import pytest

from core.net.flow import Flow
from core.net.identity import ServerIdentity
from core.proxy.branch_mac import BranchSigner
from core.proxy.decisions import remove_identity_headers
from core.proxy.forking import ResponseContext, relayed, response_rank
from core.proxy.routing import (
    RecordRouter,
    branch_id,
    decrement_max_forwards,
    has_looped,
    loop_hash,
    next_hop,
    push_via,
    push_via_line,
    remove_own_credentials,
)
from core.settings import ListenAddress
from core.sip.fields import Via, parse_via
from core.sip.headers import Headers
from core.sip.message import Request, Response
from core.sip.parser import parse_message
from core.sip.transaction_table import TransactionTable
from core.sip.uri import parse_uri

US = "192.0.2.10"
IDENTITY = ServerIdentity(
    "pbx.test", [ListenAddress("udp", US, 5060), ListenAddress("tcp", US, 5060)]
)
UDP_IN = Flow("udp", ("203.0.113.7", 5062), (US, 5060))
TCP_OUT = Flow("tcp", ("198.51.100.9", 40000), (US, 5060), connection_id=3)
UDP_OUT = Flow("udp", ("198.51.100.9", 5060), (US, 5060))
NOW = 1_000.0
ROUTER = RecordRouter(b"secret", lifetime=100.0, clock=lambda: NOW)
ENDS = (UDP_IN.remote[0], UDP_OUT.remote[0])  # the same address on both transports


def request(*lines: str, start: str = "INVITE sip:bob@pbx.test SIP/2.0") -> Request:
    text = "\r\n".join(
        [
            start,
            *lines,
            "From: <sip:alice@pbx.test>;tag=a1",
            "Call-ID: call-1",
            "CSeq: 2 INVITE",
            "Max-Forwards: 70",
            "Content-Length: 0",
        ]
    )
    message = parse_message((text + "\r\n\r\n").encode())
    assert isinstance(message, Request)
    return message


CALLER_VIA = "Via: SIP/2.0/UDP 203.0.113.7:5062;branch=z9hG4bKcaller;rport=5062"
TO = "To: <sip:bob@pbx.test>"


def route_to_us(token: str | None = None, transport: str = "") -> str:
    token = ROUTER.token("call-1", "a1", ENDS, int(NOW + 100)) if token is None else token
    return f"<sip:{US}:5060{transport};lr;pbx={token}>"


# -- Record-Route ---------------------------------------------------------------------------
def test_one_record_route_when_both_sides_use_the_same_interface() -> None:
    headers = Headers()
    ROUTER.record(headers, IDENTITY, UDP_IN, UDP_OUT, "call-1", "a1")
    assert headers.get_all("record-route") == [route_to_us()]


def test_double_record_route_when_the_transports_differ() -> None:
    headers = Headers([("Record-Route", "<sip:edge.example;lr>")])
    ROUTER.record(headers, IDENTITY, UDP_IN, TCP_OUT, "call-1", "a1")
    # The callee (reached over TCP) uses the list top first: the TCP entry must be on top.
    assert headers.get_all("record-route") == [
        route_to_us(transport=";transport=tcp"),
        route_to_us(),
        "<sip:edge.example;lr>",
    ]


def test_token_binds_the_dialog_its_ends_and_an_expiry() -> None:
    token = ROUTER.token("call-1", "a1", ENDS, 1_100)
    assert token != ROUTER.token("call-2", "a1", ENDS, 1_100)
    assert token != ROUTER.token("call-1", "other-tag", ENDS, 1_100)
    assert token != ROUTER.token("call-1", "a1", ("203.0.113.7", "192.0.2.99"), 1_100)
    assert token != ROUTER.token("call-1", "a1", ENDS, 1_101)
    assert RecordRouter(b"other").token("call-1", "a1", ENDS, 1_100) != token
    assert ROUTER.token("call-1", "a1", ENDS[::-1], 1_100) == token  # either direction


def test_a_token_verifies_only_in_its_dialog_between_its_ends_until_it_expires() -> None:
    token = ROUTER.token("call-1", "a1", ENDS, 1_100)
    from_caller = request(CALLER_VIA, TO + ";tag=b1")
    assert ROUTER.verify(token, from_caller, ENDS, NOW)
    assert not ROUTER.verify(token, from_caller, ENDS, 1_101.0)  # expired
    assert not ROUTER.verify(token, from_caller, ("203.0.113.7", "192.0.2.99"), NOW)
    assert not ROUTER.verify(token[:-1] + "0", from_caller, ENDS, NOW)
    assert not ROUTER.verify("fffffffffff-00", from_caller, ENDS, NOW)


# -- loose routing (§16.4) ------------------------------------------------------------------
def test_our_routes_are_consumed_and_the_token_checked() -> None:
    both = f"Route: {route_to_us(transport=';transport=tcp')}, {route_to_us()}"
    message = request(CALLER_VIA, TO + ";tag=b1", both, "Route: <sip:edge.example;lr>")
    token = ROUTER.consume(message, IDENTITY)
    assert token is not None and ROUTER.verify(token, message, ENDS, NOW)
    assert message.headers.values("route") == ["<sip:edge.example;lr>"]
    assert str(next_hop(message)) == "sip:edge.example;lr"
    assert str(message.uri) == "sip:bob@pbx.test"  # loose routing leaves the Request-URI


def test_a_route_naming_us_without_the_token_is_removed_but_not_trusted() -> None:
    message = request(CALLER_VIA, TO + ";tag=b1", f"Route: {route_to_us('0' * 12)}")
    token = ROUTER.consume(message, IDENTITY)
    assert token is not None and not ROUTER.verify(token, message, ENDS, NOW)
    assert message.headers.get("route") is None


def test_a_foreign_first_route_is_left_alone() -> None:
    message = request(CALLER_VIA, TO + ";tag=b1", f"Route: <sip:edge.example;lr>, {route_to_us()}")
    assert ROUTER.consume(message, IDENTITY) is None
    assert len(message.headers.values("route")) == 2


def test_strict_router_before_us_is_undone() -> None:
    # An RFC 2543 proxy put our Record-Route URI into the Request-URI and moved the real
    # target to the end of the Route set (§16.4).
    ours = route_to_us()[1:-1]
    message = request(
        CALLER_VIA,
        TO + ";tag=b1",
        "Route: <sip:edge.example;lr>, <sip:bob@198.51.100.9:5060>",
        start=f"BYE {ours} SIP/2.0",
    )
    assert ROUTER.consume(message, IDENTITY) is not None
    assert str(message.uri) == "sip:bob@198.51.100.9:5060"
    assert message.headers.values("route") == ["<sip:edge.example;lr>"]


def test_next_hop_that_is_a_strict_router_gets_the_request_uri() -> None:
    message = request(CALLER_VIA, TO + ";tag=b1", "Route: <sip:old.example>, <sip:p2.example;lr>")
    hop = next_hop(message)
    assert str(hop) == "sip:old.example"
    assert str(message.uri) == "sip:old.example"
    assert message.headers.values("route") == ["<sip:p2.example;lr>", "<sip:bob@pbx.test>"]


def test_route_sets_beyond_us_for_our_own_bye() -> None:
    # As a 2xx lists them: the callee's side above ours (double, two transports), the
    # caller's side below.
    record_route = (
        "<sip:callee-edge.example;lr>",
        route_to_us(transport=";transport=tcp"),
        route_to_us(),
        "<sip:caller-edge.example;lr>",
    )
    to_callee, to_caller = ROUTER.beyond_us(record_route, IDENTITY)
    assert to_callee == ("<sip:callee-edge.example;lr>",)
    assert to_caller == ("<sip:caller-edge.example;lr>",)
    without_ours = (record_route[0], f"<sip:{US}:5060;lr>", record_route[3])
    assert ROUTER.beyond_us(without_ours, IDENTITY) == ((), ())


# -- loops (§16.3 step 4, §16.6 step 8) ----------------------------------------------------
def forwarded_back(message: Request, request_uri: str) -> Request:
    """`message` as it would come back after we forwarded it and it reached us again."""
    top = message.headers.values("via")[0]
    ours = branch_id(loop_hash(message, top), 0)
    headers = message.headers.copy()
    push_via(headers, IDENTITY, UDP_OUT, ours)
    headers.prepend("Via", "SIP/2.0/UDP 198.51.100.9:5060;branch=z9hG4bKelsewhere")
    return Request("INVITE", parse_uri(request_uri), headers)


def test_same_request_back_again_is_a_loop() -> None:
    first = request(CALLER_VIA, TO)
    assert not has_looped(first, IDENTITY)
    assert has_looped(forwarded_back(first, "sip:bob@pbx.test"), IDENTITY)


def test_back_again_for_another_target_is_a_spiral() -> None:
    first = request(CALLER_VIA, TO)
    assert not has_looped(forwarded_back(first, "sip:carol@pbx.test"), IDENTITY)


def test_branch_hash_is_stable_and_covers_the_request() -> None:
    first = request(CALLER_VIA, TO)
    again = request(CALLER_VIA, TO)
    top = first.headers.values("via")[0]
    assert loop_hash(first, top) == loop_hash(again, top)
    later = request(CALLER_VIA, TO)
    later.headers.set("CSeq", "3 INVITE")
    assert loop_hash(later, top) != loop_hash(first, top)
    assert branch_id(loop_hash(first, top), 1).startswith("z9hG4bK")


# -- what a forwarded copy carries ----------------------------------------------------------
def test_max_forwards_and_credentials() -> None:
    headers = Headers(
        [
            ("Proxy-Authorization", 'Digest username="alice", realm="pbx.test", nonce="n"'),
            ("Proxy-Authorization", 'Digest username="alice", realm="carrier.example"'),
        ]
    )
    decrement_max_forwards(headers, 70)
    assert headers.get("max-forwards") == "69"
    decrement_max_forwards(headers, None)
    assert headers.get("max-forwards") == "70"
    remove_own_credentials(headers, "pbx.test")
    assert headers.get_all("proxy-authorization") == [
        'Digest username="alice", realm="carrier.example"'
    ]


# -- the best answer (§16.7 step 6) ---------------------------------------------------------
@pytest.mark.parametrize(
    ("better", "worse"),
    [(603, 486), (600, 302), (302, 404), (486, 408), (404, 503), (407, 486), (486, 487)],
)
def test_response_ranking(better: int, worse: int) -> None:
    assert response_rank(better) < response_rank(worse)


def context_for(message: Request) -> ResponseContext:
    table = TransactionTable()
    server, _actions = table.new_server(message, UDP_IN, 0.0)
    return ResponseContext(server, message, "ourtag")


def test_best_answer_converts_503_and_defaults_to_408() -> None:
    message = request(CALLER_VIA, TO)
    nobody = context_for(message)
    timeout = nobody.best_answer(("Server", "pbxtui"))
    assert (timeout.status, timeout.to_tag) == (408, "ourtag")

    overloaded = context_for(request(CALLER_VIA.replace("caller", "caller2"), TO))
    branch_answer = Response(
        503, None, Headers([("Via", "SIP/2.0/UDP 203.0.113.7:5062;branch=z9hG4bKcaller2")])
    )
    overloaded.consider(503, "Service Unavailable", branch_answer)
    assert overloaded.best_answer(("Server", "pbxtui")).status == 500

    busy = context_for(request(CALLER_VIA.replace("caller", "caller3"), TO))
    busy.consider(408, "Request Timeout", None)
    busy.consider(486, "Busy Here", branch_answer)
    busy.consider(480, "Temporarily Unavailable", None)
    assert busy.best_status == 486 and busy.best_response is branch_answer


def test_relayed_response_loses_only_our_via() -> None:
    text = (
        "SIP/2.0 180 Ringing\r\n"
        "Via: SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bKours.0\r\n"
        f"{CALLER_VIA}\r\n"
        "From: <sip:alice@pbx.test>;tag=a1\r\nTo: <sip:bob@pbx.test>;tag=b1\r\n"
        "Call-ID: call-1\r\nCSeq: 2 INVITE\r\nContent-Length: 0\r\n\r\n"
    )
    response = parse_message(text.encode())
    assert isinstance(response, Response)
    up = relayed(response)
    assert up.headers.values("via") == [CALLER_VIA.removeprefix("Via: ")]
    assert up.to_tag == "b1" and response.headers.count("via") == 2


@pytest.mark.parametrize(
    ("listen", "flow", "sent_by"),
    [
        (ListenAddress("udp", US, 5060), UDP_OUT, f"UDP {US}:5060"),
        (ListenAddress("tcp", US, 5062), Flow("tcp", ("198.51.100.9", 1), (US, 5062)), "TCP"),
        (
            ListenAddress("udp", "2001:db8::1", 5060),
            Flow("udp", ("2001:db8::2", 5060), ("2001:db8::1", 5060)),
            "UDP [2001:db8::1]:5060",
        ),
        (
            ListenAddress("udp", "0.0.0.0", 5070, advertise_host="203.0.113.1"),
            Flow("udp", ("198.51.100.9", 5060), ("0.0.0.0", 5070)),
            "UDP 203.0.113.1:5070",
        ),
    ],
)
def test_our_via_reads_back_as_the_via_returned(
    listen: ListenAddress, flow: Flow, sent_by: str
) -> None:
    """Our Via line is written from a cached sent-by, not printed from the Via it returns:
    the two must be the same Via, or responses would not match our client transactions."""
    identity = ServerIdentity("pbx.test", [listen])
    for branch in ("z9hG4bKone.0.mac", "z9hG4bKtwo.1.mac"):  # the second one hits the cache
        headers = Headers([("Via", CALLER_VIA.removeprefix("Via: "))])
        via = push_via(headers, identity, flow, branch)
        line = headers.get("via")
        assert line is not None and line == str(via)
        # The Via carries its line as text; printed from its fields it says the same.
        untexted = Via(via.transport, via.host, via.port, dict(via.params), via.protocol)
        assert untexted.text is None and str(untexted) == line
        assert sent_by in line and line.endswith(f";branch={branch}")
        assert headers.values("via")[1] == CALLER_VIA.removeprefix("Via: ")
        reparsed = request(f"Via: {line}", TO).top_via
        assert reparsed is not None
        assert (reparsed.transport, reparsed.host, reparsed.port, reparsed.branch) == (
            via.transport, via.host, via.port, branch,
        )  # fmt: skip
        # The line-only push (an ACK's, our BYE's) writes the very same store.
        alone = Headers([("Via", CALLER_VIA.removeprefix("Via: "))])
        push_via_line(alone, identity, flow, branch)
        assert alone.serialise() == headers.serialise()


def test_identity_headers_go_in_any_spelling_and_nothing_else_does() -> None:
    """RFC 3325 §9.1: what a phone asserts of itself never reaches the callee or a carrier."""
    lines = [
        ("Via", "SIP/2.0/UDP 203.0.113.7:5062;branch=z9hG4bK1"),
        ("p-asserted-identity", "<sip:boss@pbx.test>"),
        ("To", "<sip:bob@pbx.test>"),
        ("P-PREFERRED-IDENTITY", "<sip:boss@pbx.test>"),
        ("Remote-Party-ID", "<sip:boss@pbx.test>;party=calling"),
        ("P-Asserted-Identity", "<tel:+15550100>"),
        ("Subject", "identity"),
    ]
    headers = Headers(lines)
    remove_identity_headers(headers)
    assert list(headers) == [lines[0], lines[2], lines[6]]
    untouched = Headers([lines[0], lines[2], lines[6]])
    remove_identity_headers(untouched)
    assert list(untouched) == [lines[0], lines[2], lines[6]]


def test_record_route_tokens_and_branch_macs_are_the_keyed_blake2b_they_always_were() -> None:
    """Tokens outlive a restart (and an upgrade): the keyed state copied per token must give
    the very MAC a keyed BLAKE2b started afresh gives."""
    secret = b"s" * 40
    key = hashlib.blake2b(b"pbxtui record-route", key=secret).digest()
    data = "c1@x\x00a1\x00192.0.2.7\x00203.0.113.9\x001700000000"
    mac = hashlib.blake2b(data.encode(), key=key, digest_size=8).hexdigest()
    router = RecordRouter(secret)
    assert router.token("c1@x", "a1", ("203.0.113.9", "192.0.2.7"), 1700000000) == (
        f"{1700000000:x}-{mac}"
    )
    assert router.token("c2@x", "a1", ("203.0.113.9", "192.0.2.7"), 1700000000) != (
        f"{1700000000:x}-{mac}"
    )
    signer = BranchSigner(secret)
    below = parse_via("SIP/2.0/UDP 192.0.2.7:5060;branch=z9hG4bKc;rport=5060")
    key = hashlib.blake2b(b"pbxtui via branch", key=secret).digest()
    data = f"z9hG4bKh.0\x00{below}\x00c1@x"
    mac = hashlib.blake2b(data.encode(), key=key, digest_size=8).hexdigest()
    assert signer.sign("z9hG4bKh.0", below, "c1@x") == f"z9hG4bKh.0.{mac}"
    assert signer.verify(f"z9hG4bKh.0.{mac}", below, "c1@x")
    assert not signer.verify(f"z9hG4bKh.1.{mac}", below, "c1@x")


def test_our_via_names_the_transport_of_each_flow_from_one_address() -> None:
    """UDP and TCP on the same address and port share a sent-by: the cached line start is
    kept per transport, so neither Via borrows the other's."""
    for _ in range(2):  # the second round reads the cache
        for transport in ("udp", "tcp", "udp"):
            flow = Flow(transport, ("198.51.100.9", 40000), (US, 5060))
            headers = Headers()
            via = push_via(headers, IDENTITY, flow, "z9hG4bKx.0")
            assert headers.get("via") == f"SIP/2.0/{transport.upper()} {US}:5060;branch=z9hG4bKx.0"
            assert via.transport == transport.upper()
            alone = Headers()
            push_via_line(alone, IDENTITY, flow, "z9hG4bKx.0")
            assert alone.get("via") == headers.get("via")
