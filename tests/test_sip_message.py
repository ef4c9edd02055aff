"""Requests, responses, their typed views, serialisation, and make_response (RFC 3261 §8.2.6)."""

from __future__ import annotations

import random
import re

import pytest

from core.sip import (
    Headers,
    Request,
    Response,
    SipParseError,
    SipUri,
    make_response,
    new_branch,
    new_tag,
    parse_message,
    parse_uri,
)
from core.sip.message import answer_tail, keyed_lines, response_bytes

INVITE = (
    b"INVITE sip:bob@biloxi.example.com SIP/2.0\r\n"
    b"Via: SIP/2.0/UDP pc33.atlanta.example.com;branch=z9hG4bK776asdhds\r\n"
    b"v: SIP/2.0/UDP 192.0.2.5:5062;branch=z9hG4bKnashds7;received=192.0.2.6, "
    b"SIP/2.0/TCP 192.0.2.7;branch=z9hG4bKold\r\n"
    b"Max-Forwards: 70\r\n"
    b"To: Bob <sip:bob@biloxi.example.com>\r\n"
    b'From: "Alice" <sip:alice@atlanta.example.com>;tag=1928301774\r\n'
    b"Call-ID: a84b4c76e66710@pc33.atlanta.example.com\r\n"
    b"CSeq: 314159 INVITE\r\n"
    b"Contact: <sip:alice@pc33.atlanta.example.com>\r\n"
    b"Timestamp: 54.2\r\n"
    b"User-Agent: softphone/1.0\r\n"
    b"Content-Type: application/sdp\r\n"
    b"l: 4\r\n"
    b"\r\n"
    b"v=0\r\n"
)


def invite() -> Request:
    message = parse_message(INVITE)
    assert isinstance(message, Request)
    return message


def test_request_views() -> None:
    request = invite()
    assert request.method == "INVITE" and request.version == "SIP/2.0"
    assert request.uri == SipUri(user="bob", host="biloxi.example.com")
    assert request.call_id == "a84b4c76e66710@pc33.atlanta.example.com"
    assert request.cseq is not None and (request.cseq.number, request.cseq.method) == (
        314159,
        "INVITE",
    )
    assert [via.branch for via in request.vias] == [
        "z9hG4bK776asdhds",
        "z9hG4bKnashds7",
        "z9hG4bKold",
    ]
    assert request.top_via is not None and request.top_via.host == "pc33.atlanta.example.com"
    assert request.from_addr is not None and request.from_addr.display_name == "Alice"
    assert request.from_tag == "1928301774" and request.to_tag is None and request.is_initial
    assert request.to_addr is not None and request.to_addr.display_name == "Bob"
    assert (
        request.contacts is not None and request.contacts[0].uri.host == "pc33.atlanta.example.com"
    )
    assert request.max_forwards == 70 and request.expires is None
    assert request.user_agent == "softphone/1.0"
    assert request.body == b"v=0\r"
    assert repr(request) == (
        "<Request INVITE sip:bob@biloxi.example.com"
        " call-id='a84b4c76e66710@pc33.atlanta.example.com'>"
    )


def test_views_of_an_empty_message() -> None:
    request = Request("OPTIONS", parse_uri("sip:x"))
    assert request.vias == [] and request.top_via is None
    assert request.cseq is None and request.from_addr is None and request.to_addr is None
    assert request.from_tag is None and request.to_tag is None and request.is_initial
    assert request.contacts == [] and request.expires is None and request.max_forwards is None
    assert request.call_id is None and request.user_agent is None


def test_views_are_cached_and_follow_header_changes() -> None:
    request = invite()
    assert request.from_addr is request.from_addr
    assert request.cseq is request.cseq
    first = request.vias
    assert request.vias == first and request.vias[0] is first[0]
    request.headers.pop_first_value("via")
    assert [via.branch for via in request.vias] == ["z9hG4bKnashds7", "z9hG4bKold"]
    request.headers.set("CSeq", "314160 INVITE")
    assert request.cseq is not None and request.cseq.number == 314160
    request.headers.set("Contact", "*")
    assert request.contacts is None
    request.headers.remove("contact")
    assert request.contacts == []


def test_vias_and_contacts_return_fresh_lists() -> None:
    """Popping from what a view returned must not corrupt the cached view."""
    request = invite()
    request.vias.pop(0)
    assert len(request.vias) == 3
    contacts = request.contacts
    assert contacts is not None
    contacts.clear()
    assert len(request.contacts or []) == 1


def test_view_errors_are_sip_parse_errors_and_not_cached() -> None:
    request = invite()
    request.headers.set("CSeq", "x INVITE")
    with pytest.raises(SipParseError, match="Bad CSeq number"):
        request.cseq  # noqa: B018
    with pytest.raises(SipParseError, match="Bad CSeq number"):
        request.cseq  # noqa: B018 - still failing on the second look
    request.headers.add("Via", "garbage")
    with pytest.raises(SipParseError, match="Bad Via"):
        request.vias  # noqa: B018
    request.headers.set("To", "<sip:bob@x")
    with pytest.raises(SipParseError):
        request.is_initial  # noqa: B018


def test_response_basics() -> None:
    response = Response(486)
    assert response.reason == "Busy Here" and response.is_final and not response.is_provisional
    assert Response(180).is_provisional and Response(299).reason == "Unknown"
    assert Response(200, "Fine").start_line() == "SIP/2.0 200 Fine"
    assert repr(Response(404)) == "<Response 404 Not Found call-id=None>"


def test_to_bytes_rewrites_content_length_to_the_body() -> None:
    request = invite()
    wire = request.to_bytes()
    assert b"\r\nl: 4\r\n" in wire  # right already: the compact line is kept as it was
    request.body = b"v=0\r\no=- 1 1 IN IP4 192.0.2.1\r\n"
    wire = request.to_bytes()
    assert b"\r\nl: 31\r\n" in wire and wire.endswith(request.body)
    assert wire.count(b"Content-Length") == 0
    request.headers.add("Content-Length", "7")  # a second, conflicting line
    wire = request.to_bytes()
    assert request.headers.get_all("content-length") == ["31"]
    assert parse_message(wire).body == request.body
    bare = Response(200)
    assert bare.to_bytes() == b"SIP/2.0 200 OK\r\nContent-Length: 0\r\n\r\n"


def test_to_bytes_of_a_built_request() -> None:
    request = Request(
        "OPTIONS", parse_uri("sip:pbx.example.com"), Headers([("Max-Forwards", "70")])
    )
    request.headers.add("Call-ID", "x@y")
    assert request.to_bytes() == (
        b"OPTIONS sip:pbx.example.com SIP/2.0\r\nMax-Forwards: 70\r\nCall-ID: x@y\r\n"
        b"Content-Length: 0\r\n\r\n"
    )


def test_make_response_copies_per_rfc3261_8_2_6() -> None:
    request = invite()
    response = make_response(request, 180, to_tag="a6c85cf")
    assert (response.status, response.reason) == (180, "Ringing")
    # §8.2.6.2: every Via in order (values as received), From, Call-ID, CSeq; To gains the tag.
    assert response.headers.get_all("via") == request.headers.get_all("via")
    assert response.headers.get("from") == request.headers.get("from")
    assert response.headers.get("call-id") == request.call_id
    assert response.headers.get("cseq") == "314159 INVITE"
    assert response.headers.get("to") == "Bob <sip:bob@biloxi.example.com>;tag=a6c85cf"
    assert response.to_tag == "a6c85cf"
    assert "Contact" not in response.headers and "Timestamp" not in response.headers
    assert response.body == b""
    reparsed = parse_message(response.to_bytes())
    assert isinstance(reparsed, Response) and [v.branch for v in reparsed.vias] == [
        v.branch for v in request.vias
    ]


def test_make_response_100_trying() -> None:
    trying = make_response(invite(), 100, to_tag="unused")
    assert trying.reason == "Trying" and trying.to_tag is None  # §8.2.6.2: no tag needed
    assert trying.headers.get("timestamp") == "54.2"  # §8.2.6.1


def test_make_response_keeps_an_existing_to_tag() -> None:
    request = invite()
    request.headers.set("To", "Bob <sip:bob@biloxi.example.com>;tag=existing")
    response = make_response(request, 200, to_tag="new")
    assert response.to_tag == "existing"
    assert response.headers.get("to") == "Bob <sip:bob@biloxi.example.com>;tag=existing"


def test_make_response_to_a_request_with_malformed_headers() -> None:
    """A 400 must still be buildable when the headers it copies are broken."""
    data = INVITE.replace(b"To: Bob <sip:bob@biloxi.example.com>", b"To: <sip:bob@x;tag=1")
    data = data.replace(b"CSeq: 314159 INVITE", b"CSeq: nonsense")
    request = parse_message(data)
    assert isinstance(request, Request)
    response = make_response(request, 400, "Bad CSeq number", to_tag="t")
    assert response.headers.get("to") == "<sip:bob@x;tag=1"  # looks tagged: left alone
    assert response.headers.get("cseq") == "nonsense"
    assert parse_message(response.to_bytes()).start_line() == "SIP/2.0 400 Bad CSeq number"


def test_make_response_tags_a_to_with_a_trailing_semicolon_cleanly() -> None:
    request = parse_message(
        INVITE.replace(b"To: Bob <sip:bob@biloxi.example.com>", b"To: <sip:b@x> ;")
    )
    assert isinstance(request, Request)
    with pytest.raises(SipParseError, match="Empty parameter"):
        request.to_addr  # noqa: B018
    response = make_response(request, 400, "Empty parameter", to_tag="t9")
    assert response.headers.get("to") == "<sip:b@x>;tag=t9"
    assert parse_message(response.to_bytes()).to_tag == "t9"


def test_make_response_extra_headers_and_body() -> None:
    response = make_response(
        invite(),
        401,
        extra=[("WWW-Authenticate", 'Digest realm="x", nonce="n"'), ("Server", "pbxtui")],
        body=b"denied",
    )
    names = [name for name, _ in response.headers]
    assert names[-2:] == ["WWW-Authenticate", "Server"]
    wire = response.to_bytes()
    assert wire.endswith(b"Content-Length: 6\r\n\r\ndenied")


def test_make_response_with_missing_headers() -> None:
    bare = Request("OPTIONS", parse_uri("sip:x"))
    response = make_response(bare, 400, to_tag="t")
    assert len(response.headers) == 0


_ODD_REQUESTS = [
    INVITE,
    # compact forms, odd spacing, IPv6, quoted display names, params in any case
    b"OPTIONS sip:[2001:db8::1]:5060 SIP/2.0\r\n"
    b"v:SIP/2.0/UDP [2001:db8::9]:5070;BRANCH=z9hG4bKx;rport\r\n"
    b'f:   "Al, \\"x\\"" <sip:a@[2001:db8::9]>;TAG=ab\r\n'
    b"t:<sip:[2001:db8::1]>\r\ni:  c@d  \r\nCSeq:7   OPTIONS\r\nTimestamp: 1 2\r\nl:0\r\n\r\n",
    # To already tagged (in any case), Latin-1 bytes kept as they came
    b"BYE sip:b@x SIP/2.0\r\nVia: SIP/2.0/TCP h;branch=z9hG4bKy\r\n"
    b"From: \xe9l\xe8ve <sip:a@x>;tag=1\r\nTo: <sip:b@x>;Tag=2\r\n"
    b"Call-ID: q\r\nCSeq: 2 BYE\r\n\r\n",
    # malformed To ending in ';', and one that only looks tagged, broken CSeq
    INVITE.replace(b"To: Bob <sip:bob@biloxi.example.com>", b"To: <sip:b@x> ;"),
    INVITE.replace(b"To: Bob <sip:bob@biloxi.example.com>", b"To: <sip:bob@x;tag=1").replace(
        b"CSeq: 314159 INVITE", b"CSeq: nonsense"
    ),
    # one Via (written in one piece) with a malformed To, and one looking tagged
    b"OPTIONS sip:x SIP/2.0\r\nVia: SIP/2.0/UDP h;branch=z9hG4bKw\r\nf: <sip:a@x>;tag=1\r\n"
    b"t: <sip:b@x> ;\r\ni: q\r\nCSeq: 2 OPTIONS\r\n\r\n",
    b"OPTIONS sip:x SIP/2.0\r\nVia: SIP/2.0/UDP h;branch=z9hG4bKw\r\nf: <sip:a@x>;tag=1\r\n"
    b"t: <sip:b@x;TAG=1\r\ni: q\r\nCSeq: 2 OPTIONS\r\nTimestamp: 3\r\n\r\n",
    # missing From, To, Call-ID and CSeq
    b"OPTIONS sip:x SIP/2.0\r\nVia: SIP/2.0/UDP h;branch=z9hG4bKz\r\n\r\n",
]


@pytest.mark.parametrize("data", _ODD_REQUESTS)
@pytest.mark.parametrize("status", [100, 180, 200, 400, 484])
@pytest.mark.parametrize("to_tag", [None, "pbx1234"])
@pytest.mark.parametrize(
    "extra", [[], [("Allow", "INVITE, ACK")], [("Accept", "a"), ("Content-Length", "0")],
              [("l", "7"), ("Server", "x")]]
)  # fmt: skip
def test_response_bytes_are_make_response_to_bytes(
    data: bytes, status: int, to_tag: str | None, extra: list[tuple[str, str]]
) -> None:
    """The answer written straight to bytes is the one make_response would serialise."""
    request = parse_message(data)
    assert isinstance(request, Request)
    keyed = keyed_lines([("Server", "pbxtui"), *extra])
    reason = None if status != 400 else "Bad Thing"
    expected = make_response(request, status, reason, to_tag=to_tag, keyed=keyed).to_bytes()
    assert response_bytes(request, status, reason, to_tag, answer_tail(keyed)) == expected


def test_response_bytes_refuse_a_tag_that_would_inject_a_header() -> None:
    with pytest.raises(ValueError, match="one line"):
        response_bytes(invite(), 200, None, "t\r\nX: y", answer_tail([]))


def test_new_tag_and_branch() -> None:
    tags = {new_tag() for _ in range(50)}
    assert len(tags) == 50 and all(re.fullmatch(r"[0-9a-f]{12}", tag) for tag in tags)
    branch = new_branch()
    assert branch.startswith("z9hG4bK") and len(branch) == 23 and branch != new_branch()


@pytest.mark.parametrize(
    "lines",
    [
        [],
        [""],
        [" "],
        [","],
        ["*"],
        ["*", "<sip:a@x>"],
        ["<sip:a@x>", "<sip:b@x>;expires=60"],
        ["<sip:a@x>, <sip:b@x>"],
        ["<sip:a@x"],
    ],
)
def test_contacts_read_as_the_parsed_values(lines: list[str]) -> None:
    """The view walks the lines once: what it answers (twice, cached) is what parsing every
    element gives, [] when there is none, the same error when one is malformed."""
    from core.sip import parse_contacts

    def reference(request: Request) -> object:
        values = request.headers.values("contact")
        try:
            return parse_contacts(values) if values else []
        except SipParseError as error:
            return ("error", error.reason)

    def view(request: Request) -> object:
        try:
            return request.contacts
        except SipParseError as error:
            return ("error", error.reason)

    request = invite()
    request.headers.remove("contact")
    for value in lines:
        request.headers.add("Contact", value)
    expected = reference(request)
    assert view(request) == expected
    assert view(request) == expected


def _generated_request(rng: random.Random) -> bytes:
    """A request with the copied lines in any order, repeated, compact, oddly spaced, some
    missing, some with bytes that are not UTF-8."""

    def pick(*names: str) -> str:
        return rng.choice(names)

    odd = [b"\xe9", b"\xff\xfe", "\u00e9".encode(), b""]
    displays = ("", "Al ", '"A, b" ', '"q\\"x" ')
    lines: list[bytes] = []
    for index in range(rng.choice([0, 1, 1, 1, 2, 3])):
        lines.append(
            f"{pick('Via', 'v', 'VIA')}:{pick('', ' ', '   ')}SIP/2.0/UDP h{index};"
            f"branch=z9hG4bK{index}{pick('', ';rport', ', SIP/2.0/TCP x;branch=z9hG4bKq')}".encode()
        )
    tagged_to = pick("", ";tag=9", ";TAG=x", " ;", ";")
    makers = [
        lambda: (
            f"{pick('From', 'f', 'fRoM')}: {pick(*displays)}<sip:a@x>;"
            f"tag={rng.randint(1, 99)}".encode()
            + rng.choice(odd)
        ),
        lambda: (
            f"{pick('To', 't')}:{pick(' ', '')}<sip:b{rng.randint(1, 9)}@x>{tagged_to}".encode()
        ),
        lambda: (
            f"{pick('Call-ID', 'i', 'call-id')}: {pick('c@d', '  q  ', 'x')}".encode()
            + rng.choice(odd)
        ),
        lambda: f"CSeq: {rng.randint(1, 9)} {pick('OPTIONS', 'REGISTER', 'INVITE')}".encode(),
        lambda: f"Timestamp: {rng.randint(1, 9)}".encode(),
        lambda: b"User-Agent: ua" + rng.choice(odd),
        lambda: b"Max-Forwards: 70",
    ]
    for make in makers:
        # Each copy written afresh: a repeated line differs from the first.
        for _ in range(rng.choice([0, 1, 1, 1, 1, 2])):
            lines.append(make())
    rng.shuffle(lines)
    return b"OPTIONS sip:x SIP/2.0\r\n" + b"".join(line + b"\r\n" for line in lines) + b"\r\n"


@pytest.mark.parametrize("seed", range(40))
def test_response_bytes_are_make_response_to_bytes_over_generated_requests(seed: int) -> None:
    """Written in one piece or the general way, errors included, the bytes are those of
    make_response(...).to_bytes() for any request that parses."""
    rng = random.Random(seed)
    for _ in range(60):
        try:
            request = parse_message(_generated_request(rng))
        except SipParseError:
            continue
        assert isinstance(request, Request)
        status = rng.choice([100, 180, 200, 200, 401, 407, 486, 99, 999])
        reason = rng.choice([None, None, "Fine", "R\u00e9"])
        to_tag = rng.choice([None, "", "pbx12345", "a\udce9", "t\r\nX: y"])
        keyed = keyed_lines(rng.choice([[], [("Server", "pbxtui")], [("Allow", "A, B")]]))
        try:
            expected: bytes | type = make_response(
                request, status, reason, to_tag=to_tag, keyed=keyed
            ).to_bytes()
        except ValueError:
            expected = ValueError
        try:
            got: bytes | type = response_bytes(request, status, reason, to_tag, answer_tail(keyed))
        except ValueError:
            got = ValueError
        assert got == expected
