"""parse_message over real-world and torture vectors (tests/vectors), and the parser's edges.

tests/vectors/real/    messages as desk phones, softphones, carriers and servers send them
tests/vectors/valid/   RFC 4475 §3.1.1-style torture cases that must parse
tests/vectors/invalid/ RFC 4475 §3.1.2-style cases, each with the answer the route must give
"""

from __future__ import annotations

from pathlib import Path

import pytest

from core.sip import (
    OtherUri,
    Request,
    Response,
    SipParseError,
    SipUri,
    TelUri,
    parse_auth,
    parse_message,
)
from core.sip.parser import MAX_HEADER_LINES, find_blank_line, split_head

VECTORS = Path(__file__).parent / "vectors"
GOOD = sorted([*VECTORS.glob("real/*.sip"), *VECTORS.glob("valid/*.sip")])
BAD = sorted(VECTORS.glob("invalid/*.sip"))


def vector(name: str) -> bytes:
    return next(VECTORS.glob(f"*/{name}.sip")).read_bytes()


def parse_vector(name: str) -> Request | Response:
    return parse_message(vector(name))


def headers_without_length(message: Request | Response) -> list[tuple[str, str]]:
    return [(n, v) for n, v in message.headers if n.lower() not in ("content-length", "l")]


@pytest.mark.parametrize("path", GOOD, ids=lambda path: f"{path.parent.name}/{path.stem}")
def test_good_vector_parses_with_every_view(path: Path) -> None:
    message = parse_message(path.read_bytes())
    assert message.call_id
    assert message.cseq is not None
    assert message.vias and all(via.host for via in message.vias)
    assert message.from_addr is not None and message.to_addr is not None
    message.contacts  # noqa: B018 - must not raise
    message.expires  # noqa: B018
    message.max_forwards  # noqa: B018
    for name in ("authorization", "proxy-authorization", "www-authenticate"):
        for value in message.headers.get_all(name):
            assert parse_auth(value).get("realm")


@pytest.mark.parametrize("path", GOOD, ids=lambda path: f"{path.parent.name}/{path.stem}")
def test_good_vector_round_trips(path: Path) -> None:
    """parse → to_bytes → parse: same start line, headers and body; to_bytes is then stable."""
    first = parse_message(path.read_bytes())
    start_line, headers, body = first.start_line(), headers_without_length(first), first.body
    wire = first.to_bytes()
    second = parse_message(wire)
    assert second.start_line() == start_line
    assert headers_without_length(second) == headers
    assert second.body == body
    assert second.headers.get("content-length") == str(len(body))
    assert second.to_bytes() == wire
    assert parse_message(wire, stream=True).body == body


@pytest.mark.parametrize("path", GOOD, ids=lambda path: f"{path.parent.name}/{path.stem}")
def test_good_vector_keeps_every_header_line(path: Path) -> None:
    """Nothing is dropped: one stored line per header line of the head (after unfolding)."""
    data = path.read_bytes()
    head, _ = split_head(data.lstrip(b"\r\n"))
    lines = head.replace(b"\r\n", b"\n").split(b"\n")[1:]
    unfolded = [line for line in lines if line and line[:1] not in (b" ", b"\t")]
    assert len(parse_message(data).headers) == len(unfolded)


# Where each invalid vector fails and the status the route answers with.
INVALID: dict[str, tuple[str, int, str]] = {
    "badvers-sip7": ("parse", 505, "Version Not Supported"),
    "ltgt-request-uri": ("parse", 400, "Bad URI"),
    "lws-in-request-uri": ("parse", 400, "Bad request line"),
    "lws-start-line": ("parse", 400, "Bad request line"),
    "trailing-ws-start-line": ("parse", 400, "Bad request line"),
    "leading-whitespace-start-line": ("parse", 400, "Bad request line"),
    "bigcode-status": ("parse", 400, "Bad status line"),
    "status-four-digits": ("parse", 400, "Bad status line"),
    "ipv6-three-colons": ("parse", 400, "Bad IPv6 reference"),
    "ipv6-no-brackets": ("parse", 400, "Bad port"),
    "bad-port-uri": ("parse", 400, "Bad port"),
    "method-not-token": ("parse", 400, "Bad method"),
    "content-length-larger": ("parse", 400, "Content-Length larger than body"),
    "content-length-negative": ("parse", 400, "Bad Content-Length"),
    "content-length-conflict": ("parse", 400, "Conflicting Content-Length"),
    "header-without-colon": ("parse", 400, "Malformed header line"),
    "bare-cr-in-header": ("parse", 400, "Bare CR in message head"),
    "folded-first-header": ("parse", 400, "Continuation before first header"),
    "no-blank-line": ("parse", 400, "Missing blank line after headers"),
    "quotbal-unterminated-display": ("to_addr", 400, "Unterminated quoted string"),
    "empty-via-params": ("vias", 400, "Empty parameter"),
    "contact-addr-spec-with-headers": ("contacts", 400, "Bad addr-spec"),
    "contact-star-mixed": ("contacts", 400, "Contact '*' mixed with addresses"),
    "cseq-overlarge": ("cseq", 400, "Bad CSeq number"),
    "cseq-bad-method": ("cseq", 400, "Bad CSeq method"),
    "max-forwards-300": ("max_forwards", 400, "Bad Max-Forwards"),
    "max-forwards-superscript-digit": ("max_forwards", 400, "Bad Max-Forwards"),
    "expires-not-number": ("expires", 400, "Bad Expires"),
    "via-bad-host": ("vias", 400, "Bad host"),
    "via-no-sent-by": ("vias", 400, "Bad Via"),
    "from-missing-gt": ("from_addr", 400, "Missing '>' in address"),
    "to-bad-uri": ("to_addr", 400, "Bad SIP URI"),
    "authorization-unterminated": ("authorization", 400, "Bad authentication parameter"),
}


def test_every_invalid_vector_has_an_expectation() -> None:
    assert sorted(path.stem for path in BAD) == sorted(INVALID)


@pytest.mark.parametrize("name", sorted(INVALID))
def test_invalid_vector_fails_where_expected(name: str) -> None:
    where, status, reason = INVALID[name]
    data = vector(name)
    if where == "parse":
        with pytest.raises(SipParseError) as caught:
            parse_message(data)
    else:
        message = parse_message(data)
        with pytest.raises(SipParseError) as caught:
            if where == "authorization":
                parse_auth(message.headers.get("authorization") or "")
            else:
                getattr(message, where)
    assert (caught.value.status, caught.value.reason) == (status, reason)


# -- what the vectors say, view by view ----------------------------------------------------
def test_yealink_register() -> None:
    message = parse_vector("register-yealink-t46s")
    assert isinstance(message, Request) and message.method == "REGISTER"
    assert message.uri == SipUri(host="pbx.example.com", port=5060)
    assert message.user_agent == "Yealink SIP-T46S 66.86.0.15"
    assert message.expires == 3600 and message.max_forwards == 70
    assert message.from_addr is not None and message.from_addr.display_name == "Reception"
    assert message.from_tag == "2112421580" and message.to_tag is None and message.is_initial
    auth = parse_auth(message.headers.get("Authorization") or "")
    assert auth.scheme == "Digest" and auth.get("username") == "1001"
    assert auth.get("uri") == "sip:pbx.example.com:5060" and auth.get("algorithm") == "MD5"
    assert message.headers.values("allow")[-1] == "MESSAGE"
    assert len(message.headers.values("allow")) == 14


def test_polycom_contact_quoted_params_with_commas_and_angles() -> None:
    (contact,) = parse_vector("register-polycom-vvx411").contacts or []
    assert contact.uri == SipUri(user="2002", host="10.0.0.23", params={"line": "tfxv3hqx"})
    assert (
        contact.param("methods")
        == '"INVITE,ACK,BYE,CANCEL,OPTIONS,INFO,MESSAGE,SUBSCRIBE,NOTIFY,PRACK,UPDATE,REFER"'
    )
    assert contact.param("+sip.instance") == '"<urn:uuid:00000000-0000-1000-8000-0004F2A1B2C3>"'
    assert contact.param("audio") is None and "audio" in contact.params
    assert contact.param("q") == "1.0" and contact.expires is None


def test_grandstream_register() -> None:
    message = parse_vector("register-grandstream-gxp2170")
    assert message.top_via is not None and message.top_via.wants_rport
    assert message.top_via.sent_by == ("192.168.1.77", 5062)
    assert message.cseq is not None and message.cseq.number == 2000
    assert message.headers.get("x-grandstream-pbx") == "true"


def test_zoiper_register_auth_without_spaces() -> None:
    message = parse_vector("register-zoiper")
    assert isinstance(message.uri, SipUri) and message.uri.transport == "udp"
    auth = parse_auth(message.headers.get("authorization") or "")
    assert auth.params == {
        "username": "4004",
        "realm": "pbx.example.com",
        "nonce": "1700463923:9f86d081884c7d659a2feaa0c55ad015",
        "uri": "sip:pbx.example.com;transport=UDP",
        "response": "0c6a8b5e2d0f4a1b9c3e7d6f5a4b3c2d",
        "cnonce": "a1b2c3d4e5f60718",
        "nc": "00000001",
        "qop": "auth",
        "algorithm": "MD5",
    }
    (contact,) = message.contacts or []
    assert contact.uri.user == "4004" and contact.uri.param("rinstance") == "8a1b2c3d4e5f6a7b"


def test_linphone_addr_spec_to_and_repeated_accept() -> None:
    message = parse_vector("register-linphone-tcp")
    assert message.to_addr is not None and message.to_addr.display_name is None
    assert message.to_addr.uri == SipUri(user="alice", host="pbx.example.com")
    assert message.headers.get_all("accept") == [
        "application/sdp",
        "text/plain",
        "application/vnd.gsma.rcs-ft-http+xml",
    ]
    assert message.top_via is not None and message.top_via.transport == "TCP"
    assert "alias" in message.top_via.params
    (contact,) = message.contacts or []
    assert (
        contact.param("+org.linphone.specs") == '"conference/1.0,ephemeral/1.1,groupchat/1.1,lime"'
    )


def test_baresip_contact_expires_without_expires_header() -> None:
    message = parse_vector("register-baresip")
    assert message.expires is None
    (contact,) = message.contacts or []
    assert contact.expires == 3600 and contact.uri.user == "bob-0x55d1c2a3b4c0"


def test_microsip_and_obi() -> None:
    microsip = parse_vector("register-microsip")
    assert microsip.headers.get("content-length") == "0"  # "Content-Length:  0" trimmed
    assert microsip.contacts and microsip.contacts[0].uri.has_param("ob")
    obi = parse_vector("register-obi202")
    assert next(iter(obi.headers)) == ("Call-ID", "7c1a2b3d@192.168.1.60")
    assert obi.contacts and obi.contacts[0].display_name == "6006"
    assert obi.contacts[0].expires == 60


def test_unregister_all_contact_star() -> None:
    message = parse_vector("register-unregister-all")
    assert message.contacts is None and message.expires == 0


def test_carrier_invite() -> None:
    message = parse_vector("invite-carrier-sdp")
    assert [via.host for via in message.vias] == ["198.51.100.20", "198.51.100.30"]
    assert message.vias[1].received == "198.51.100.30" and message.vias[1].rport == 5060
    assert message.headers.count("record-route") == 2
    identities = message.headers.values("P-Asserted-Identity")
    assert identities == [
        '"WIRELESS CALLER" <sip:+15559870002@198.51.100.30>',
        "<tel:+15559870002>",
    ]
    assert message.max_forwards == 68
    assert message.body.startswith(b"v=0\r\n") and message.body.endswith(b"a=sendrecv\r\n")
    assert len(message.body) == int(message.headers.get("content-length") or -1)


def test_softphone_compact_headers() -> None:
    message = parse_vector("invite-softphone-tcp-compact")
    assert message.call_id == "4b1d3f5a7c9e4b1d8f2a6c0e@192.168.1.20"
    assert message.from_addr is not None and message.from_addr.display_name == "Alice Smith"
    assert message.to_addr is not None and message.to_addr.uri.user == "1002"
    assert message.contacts and message.contacts[0].uri.transport == "tcp"
    assert message.headers.get("Session-Expires") == "1800"
    assert message.headers.get("Content-Type") == "application/sdp"
    assert message.headers.values("Supported") == ["replaces", "100rel", "timer", "norefersub"]
    assert message.headers.get("Allow-Events") == "talk, hold, conference"
    assert parse_message(vector("invite-softphone-tcp-compact"), stream=True).body == message.body


def test_401_response() -> None:
    message = parse_vector("response-401-www-authenticate")
    assert isinstance(message, Response) and message.status == 401
    assert message.reason == "Unauthorized" and message.is_final
    challenges = [parse_auth(value) for value in message.headers.get_all("www-authenticate")]
    assert [challenge.get("algorithm") for challenge in challenges] == ["SHA-256", "MD5"]
    assert all(challenge.get("qop") == "auth" for challenge in challenges)
    assert message.to_tag == "as3c1d5e7f"


def test_200_register_with_two_bindings() -> None:
    contacts = parse_vector("response-200-register-bindings").contacts or []
    assert [contact.expires for contact in contacts] == [3600, 1200]
    assert contacts[1].uri == SipUri(user="alice", host="10.8.0.4", port=5060)


def test_wsinv_whitespace_and_folding() -> None:
    """RFC 4475 §3.1.1.1-style: LWS and folding wherever the grammar allows them."""
    message = parse_vector("wsinv-folding-and-spacing")
    assert message.to_addr is not None and message.to_tag == "7718181833x"
    assert message.from_addr is not None
    assert message.from_addr.display_name == 'Dave \\ the "Q"' and message.from_tag == "12abcd9"
    assert message.max_forwards == 68
    assert message.cseq is not None and (message.cseq.number, message.cseq.method) == (9, "INVITE")
    assert [(via.transport, via.host, via.branch) for via in message.vias] == [
        ("UDP", "192.0.2.2", "z9hG4bKspaced01"),
        ("TCP", "spindle.example.com", "z9hG4bK9ikj8"),
        ("UDP", "192.168.255.111", "z9hG4bK30239"),
    ]
    assert message.headers.get("s") == "" and message.headers.get("subject") == ""
    assert message.headers.get("NewFangledHeader") == "newfangled value continued newfangled value"
    assert message.headers.get("UnknownHeaderWithUnusualValue") == ";;,,;;,;"
    (contact,) = message.contacts or []
    assert contact.display_name == 'Quoted string ""'
    assert contact.params == {"newparam": "newvalue", "secondparam": None, "q": "0.33"}


def test_intmeth_unusual_tokens() -> None:
    message = parse_vector("intmeth-unusual-tokens")
    assert isinstance(message, Request) and message.method == "!odd-Method0123456789_*+`.%~'"
    assert message.cseq is not None and message.cseq.method == message.method
    assert isinstance(message.uri, SipUri)
    assert message.uri.user == "1_odd.URI~(be!sure)&isn't+it$/wild?,/;;*"
    assert message.uri.password == "&it+has=1,strange!*pas$wo~d_also.(isn't-it)"
    assert message.to_addr is not None
    assert message.to_addr.display_name == "BEL:\x07 NUL:\x00 DEL:\x7f"
    assert message.from_addr is not None
    assert message.from_addr.display_name == "token1~` token2'+_ token3*%!.-"
    assert message.from_addr.param("fromParam''~+*_!.-%") == '"работающий"'
    assert message.from_tag == "_token~1'+`*%!-."
    assert message.call_id == "intmeth.word%ZK-!.*_+'@word`~)(><:\\/\"][?}{"


def test_escaped_uris() -> None:
    message = parse_vector("esc-escaped-uri-parts")
    assert isinstance(message.uri, SipUri) and message.uri.user == "sips:user@example.com"
    assert message.to_addr is not None and message.to_addr.uri.user == "user"
    assert message.from_addr is not None and message.from_addr.uri.user == "I have spaces"
    (contact,) = message.contacts or []
    assert contact.uri.user == "caller"
    assert contact.uri.params == {"%6c%72": None, "n%61me": "v%61lue%25%34%31"}
    null = parse_vector("escnull-percent-zero")
    assert [contact.uri.user for contact in null.contacts or []] == ["\x00", "\x00\x00"]


def test_display_names_with_angle_brackets_and_no_space() -> None:
    message = parse_vector("lwsdisp-and-angle-in-display")
    assert message.from_addr is not None and message.from_addr.display_name == "caller"
    (contact,) = message.contacts or []
    assert contact.display_name == '<sip:evil@attacker.example>, "x"'
    assert contact.uri == SipUri(user="real", host="192.0.2.5")


def test_semicolon_in_user_and_folded_accept() -> None:
    message = parse_vector("semiuri-user-with-semicolon")
    assert isinstance(message.uri, SipUri) and message.uri.user == "user;par=u@example.net"
    assert message.uri.host == "example.com" and message.uri.params == {}
    assert message.headers.values("accept") == [
        "application/sdp",
        "application/pkcs7-mime",
        "multipart/mixed",
        "multipart/signed",
        "message/sip",
        "message/sipfrag",
    ]


def test_transport_tokens_and_via_params() -> None:
    vias = parse_vector("transports-many-vias").vias
    assert [via.transport for via in vias] == ["UDP", "SCTP", "TLS", "UNKNOWN", "TCP", "WS"]
    last = vias[-1]
    assert last.protocol == "sip/2.0" and last.port == 80
    assert (last.rport, last.received, last.maddr, last.ttl) == (
        34567,
        "192.0.2.99",
        "239.255.255.1",
        16,
    )


def test_reason_phrases() -> None:
    utf8 = parse_vector("response-utf8-reason")
    assert isinstance(utf8, Response) and utf8.status == 200
    assert utf8.reason == "= 2**3 * 5**2 но сто девяносто"
    empty = parse_vector("response-no-reason")
    assert isinstance(empty, Response) and (empty.status, empty.reason) == (100, "")
    assert empty.is_provisional


def test_ipv6_hosts() -> None:
    message = parse_vector("ipv6-register")
    assert isinstance(message.uri, SipUri) and message.uri.host == "2001:db8::10"
    assert message.top_via is not None and message.top_via.sent_by == ("2001:db8::9:1", 5070)
    assert message.top_via.received == "2001:db8::9:255"
    contacts = message.contacts or []
    assert contacts[0].uri.hostport == "[2001:db8::1]:5070"
    assert contacts[1].uri.host == "::ffff:192.0.2.10" and contacts[1].expires == 120
    ambiguous = parse_vector("ipv6-port-ambiguous")
    assert isinstance(ambiguous.uri, SipUri)
    assert (ambiguous.uri.host, ambiguous.uri.port) == ("2001:db8::10:5070", None)


def test_case_variants() -> None:
    message = parse_vector("case-variants")
    assert isinstance(message, Request) and message.version == "SIP/2.0"
    assert isinstance(message.uri, SipUri) and message.uri.scheme == "sip"
    assert message.uri.transport == "tcp" and message.uri.aor == "sip:Bob@pbx.example.com"
    assert str(message.uri) == "SIP:Bob@PBX.Example.COM;Transport=TcP"
    assert message.top_via is not None and message.top_via.branch == "z9hG4bKCaseTest"
    assert message.top_via.wants_rport and message.top_via.transport == "TCP"
    assert message.from_addr is not None and message.from_addr.uri.secure
    assert message.from_tag == "AbC" and message.call_id == "CaseVariant@192.0.2.77"


def test_bare_lf_and_double_request() -> None:
    bare = parse_vector("bare-lf-line-ends")
    assert bare.call_id == "lf-only-1@192.0.2.50" and bare.body == b""
    double = parse_vector("dblreq-two-in-one")
    assert double.body == b"" and double.cseq is not None and double.cseq.method == "REGISTER"
    assert double.contacts and double.contacts[0].uri.host == "host.example.com"


def test_binary_multipart_body_kept_byte_exact() -> None:
    message = parse_vector("mpart-binary-body")
    assert bytes(range(256)) in message.body
    assert message.body.endswith(b"--boundary42--\r\n")


def test_empty_unknown_and_list_headers() -> None:
    message = parse_vector("empty-and-unknown-headers")
    assert message.headers.get("subject") == "" and message.headers.get("x-empty") == ""
    assert message.headers.get("X-Custom-Thing") == 'a=1;b="two, three";c'
    assert [via.branch for via in message.vias] == ["z9hG4bKaa1", "z9hG4bKaa0", "z9hG4bKaz9"]
    assert message.headers.values("route") == [
        "<sip:p1.example.com;lr>",
        "<sip:p2.example.com;lr>",
        "<sip:p3.example.com;lr>",
    ]
    assert message.headers.get("event") == "dialog" and message.expires == 600


def test_long_values() -> None:
    message = parse_vector("longreq-long-values")
    assert len(message.vias) == 34 and message.vias[-1].received == "192.0.2.5"
    assert message.from_addr is not None and message.from_addr.uri.user == "a" * 2000
    assert message.to_addr is not None and message.to_addr.uri.port == 6000
    assert message.call_id is not None and message.call_id.endswith("x" * 500)


def test_uri_schemes_in_request_line() -> None:
    novel = parse_vector("novel-scheme-uri")
    assert isinstance(novel, Request) and isinstance(novel.uri, OtherUri)
    assert novel.uri.scheme == "soap.beep" and str(novel.uri) == "soap.beep://192.0.2.103:3002"
    tel = parse_vector("tel-uri-invite")
    assert isinstance(tel, Request) and isinstance(tel.uri, TelUri)
    assert tel.uri.number == "+1-201-555-0123"
    assert tel.uri.params == {"phone-context": "example.com"}
    assert tel.to_addr is not None and tel.to_addr.uri == TelUri("+12015550123")


# -- parser edges --------------------------------------------------------------------------
OPTIONS = (
    b"OPTIONS sip:pbx.example.com SIP/2.0\r\n"
    b"Via: SIP/2.0/UDP 192.0.2.1;branch=z9hG4bK1\r\n"
    b"From: <sip:a@example.com>;tag=1\r\nTo: <sip:pbx.example.com>\r\n"
    b"Call-ID: edge@192.0.2.1\r\nCSeq: 1 OPTIONS\r\n"
)


def test_leading_crlfs_are_ignored() -> None:
    assert parse_message(b"\r\n\r\n\r\n" + OPTIONS + b"\r\n").call_id == "edge@192.0.2.1"


def test_version_is_case_insensitive_and_normalised() -> None:
    request = parse_message(OPTIONS.replace(b"SIP/2.0\r\n", b"sip/2.0\r\n", 1) + b"\r\n")
    assert isinstance(request, Request) and request.version == "SIP/2.0"
    response = parse_message(b"sip/2.0 200 OK\r\nCall-ID: x\r\n\r\n")
    assert isinstance(response, Response) and response.start_line() == "SIP/2.0 200 OK"


@pytest.mark.parametrize(
    ("start_line", "status", "reason"),
    [
        (b"OPTIONS sip:a@b SIP/3.0", 505, "Version Not Supported"),
        (b"SIP/2.1 200 OK", 505, "Version Not Supported"),
        (b"OPTIONS sip:a@b HTTP/1.1", 400, "Bad SIP version"),
        (b"SIP/2.0 099 Too low", 400, "Bad status code"),
        (b"SIP/2.0 700 Too high", 400, "Bad status code"),
        (b"SIP/2.0 2\xd9\xa30 OK", 400, "Bad status line"),  # an Arabic-Indic digit
        (b"OPTIONS sip:a@b", 400, "Bad request line"),
        (b"OPTIONS sip:" + b"a" * 5000 + b"@b SIP/2.0", 414, "Request-URI Too Long"),
    ],
)
def test_start_line_errors(start_line: bytes, status: int, reason: str) -> None:
    with pytest.raises(SipParseError) as caught:
        parse_message(start_line + b"\r\nCall-ID: x\r\n\r\n")
    assert (caught.value.status, caught.value.reason) == (status, reason)


def test_empty_input() -> None:
    for data in (b"", b"\r\n\r\n", bytearray(b"\n")):
        with pytest.raises(SipParseError, match="Empty message"):
            parse_message(data)


def test_bytearray_and_memoryview_input() -> None:
    data = OPTIONS + b"Content-Length: 2\r\n\r\nhi"
    for wrapped in (bytearray(data), memoryview(data)):
        message = parse_message(wrapped)  # type: ignore[arg-type]
        assert type(message.body) is bytes and message.body == b"hi"


def test_body_past_content_length_is_discarded_on_udp() -> None:
    message = parse_message(OPTIONS + b"Content-Length: 2\r\n\r\nhello")
    assert message.body == b"he"


def test_no_content_length_takes_the_rest_on_udp_but_fails_on_stream() -> None:
    data = OPTIONS + b"\r\nhello"
    assert parse_message(data).body == b"hello"
    with pytest.raises(SipParseError, match="Missing Content-Length") as caught:
        parse_message(data, stream=True)
    assert caught.value.partial is not None and caught.value.partial.call_id == "edge@192.0.2.1"
    assert parse_message(OPTIONS + b"\r\n", stream=True).body == b""


def test_bad_content_length_carries_the_partial_message() -> None:
    with pytest.raises(SipParseError) as caught:
        parse_message(OPTIONS + b"Content-Length: 9\r\n\r\nshort")
    partial = caught.value.partial
    assert isinstance(partial, Request) and partial.cseq is not None
    assert partial.cseq.method == "OPTIONS"


def test_equal_repeated_content_length_is_accepted() -> None:
    message = parse_message(OPTIONS + b"Content-Length: 2\r\nl: 02\r\n\r\nhi")
    assert message.body == b"hi"


def test_folding_joins_with_one_space() -> None:
    message = parse_message(OPTIONS + b"Subject: one\r\n  two\r\n\tthree\r\n\r\n")
    assert message.headers.get("subject") == "one two three"


def test_header_name_with_space_before_colon() -> None:
    message = parse_message(OPTIONS + b"X-Thing \t: value\r\n\r\n")
    assert list(message.headers)[-1] == ("X-Thing", "value")


@pytest.mark.parametrize("line", [b": no name", b"Bad Name: x", b"Bad\x00: x", b"\xc3\xa9: x"])
def test_malformed_header_lines(line: bytes) -> None:
    with pytest.raises(SipParseError, match="Malformed header line"):
        parse_message(OPTIONS + line + b"\r\n\r\n")


def test_too_many_header_lines() -> None:
    many = b"".join(b"X-%d: v\r\n" % index for index in range(MAX_HEADER_LINES))
    with pytest.raises(SipParseError, match="Too many header lines"):
        parse_message(OPTIONS + many + b"\r\n")


def test_bytes_that_are_not_utf8_survive_byte_exact() -> None:
    """Latin-1 from an old phone is kept as surrogates and goes out as the same bytes."""
    latin1 = b'Contact: "M\xfcller" <sip:m\xfc@192.0.2.1>\r\nUser-Agent: \xff\r\n'
    message = parse_message(OPTIONS + latin1 + b"\r\n")
    assert message.user_agent == "\udcff"
    (contact,) = message.contacts or []
    assert contact.display_name == "M\udcfcller" and contact.uri.user == "m\udcfc"
    assert contact.uri.aor == "sip:m%FC@192.0.2.1"
    wire = message.to_bytes()
    assert latin1 in wire
    assert parse_message(wire).user_agent == "\udcff"


def test_blank_line_detection() -> None:
    assert find_blank_line(b"A\r\n\r\nB") == (2, 5)
    assert find_blank_line(b"A\n\nB") == (1, 3)
    assert find_blank_line(b"A\n\r\nB") == (1, 4)
    assert find_blank_line(b"A\r\nB\r\n") is None
    # A bare-LF head whose body holds CRLFCRLF is cut at the first blank line.
    assert split_head(b"A\nB\n\nbody\r\n\r\nmore") == (b"A\nB", b"body\r\n\r\nmore")
    assert split_head(b"A\n\n\r\n") == (b"A", b"\r\n")
    with pytest.raises(SipParseError, match="Missing blank line"):
        split_head(b"A\r\nB")


# A head whose lines all end in CRLF is cut and split in one go (`_crlf_head`); wherever that
# answers, it must give the lines and body the general reading (`_any_head`) gives, and it
# must stand aside (None) for every head the general reading refuses or reads otherwise.
# Non-ASCII ones too (UTF-8, a Latin-1 byte, a cut UTF-8 sequence): the datagram is decoded
# whole and the body found by the encoded length of the head.
HEAD_PIECES = [
    b"\r\n", b"\n", b"\r", b"A: b", b"Via:x", b" ", b"\t", b":", b"\r\n\r\n", b"v=0",
    b"\xc3\xa9", b"\xe9", b"\xe2\x82", b"\xf0\x9f\x98\x80",
]  # fmt: skip


def _head_outcome(read: object, raw: bytes) -> tuple[object, ...]:
    try:
        return ("ok", read(raw))  # type: ignore[operator]
    except SipParseError as error:
        return ("error", error.reason)


def test_crlf_head_matches_general_reading_on_mixed_line_ends() -> None:
    import random

    from core.sip.parser import _any_head, _crlf_head

    rng = random.Random(21)
    cases = [
        b"OPTIONS sip:a SIP/2.0\r\nA: b\r\n\r\nbody\r\n\r\n",
        b"OPTIONS sip:a SIP/2.0\r\nA: b\n\r\n\r\nbody",
        b"OPTIONS sip:a SIP/2.0\nA: b\r\n\r\n",
        b"OPTIONS sip:a SIP/2.0\r\nA: b\r\r\n\r\n",
        b"OPTIONS sip:a SIP/2.0\r\nA: b\rc\r\n\r\n",
        b"OPTIONS sip:a SIP/2.0\r\nA: b\n\nC: d\r\n\r\n",
        b"OPTIONS sip:a SIP/2.0\r\nA: b\r\n c\r\n\r\nx\ny",
    ]
    for _ in range(3000):
        pieces = [rng.choice(HEAD_PIECES) for _ in range(rng.randint(1, 10))]
        cases.append(b"X" + b"".join(pieces))
    taken = 0
    for raw in cases:
        fast = _crlf_head(raw)
        general = _head_outcome(_any_head, raw)
        if fast is not None:
            taken += 1
            assert general == ("ok", fast), raw
        elif b"\r\n\r\n" in raw and general[0] == "ok":
            # Stood aside: some line of the CRLF cut holds a CR or LF of its own.
            cut = raw.partition(b"\r\n\r\n")[0].split(b"\r\n")
            assert any(b"\r" in line or b"\n" in line for line in cut), raw
    assert taken > 100


def test_line_keyed_by_the_name_last_seen_in_its_place_reads_as_any_other() -> None:
    """The name of the line at each index is remembered for the next message; a line that
    only looks like it (other case, no space, a longer name) is read in full."""
    first = (
        b"OPTIONS sip:a@pbx.test SIP/2.0\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\n"
        b"CSeq: 1 OPTIONS\r\nFrom: <sip:a@pbx.test>;tag=1\r\nTo: <sip:a@pbx.test>\r\n"
        b"Call-ID: c1\r\nContent-Length: 0\r\n\r\n"
    )
    second = (
        b"OPTIONS sip:a@pbx.test SIP/2.0\r\nvia: SIP/2.0/UDP h;branch=z9hG4bK2\r\n"
        b"CSeq:2 OPTIONS\r\nFrom-X: x\r\nTo:   <sip:a@pbx.test> \t\r\n"
        b"Call-ID : c2\r\nl: 0\r\n\r\n"
    )
    expected_second = [
        ("via", "via", "SIP/2.0/UDP h;branch=z9hG4bK2"),
        ("cseq", "CSeq", "2 OPTIONS"),
        ("from-x", "From-X", "x"),
        ("to", "To", "<sip:a@pbx.test>"),
        ("call-id", "Call-ID", "c2"),
        ("content-length", "l", "0"),
    ]
    for data in (first, second, second, first, second):
        message = parse_message(data)
        if data is second:
            keys = message.headers.lookup_keys()
            keyed = [(key, *line) for key, line in zip(keys, message.headers, strict=True)]
            assert keyed == expected_second
        else:
            assert message.cseq is not None and message.cseq.number == 1
            assert message.to_addr is not None and message.to_addr.tag is None


@pytest.mark.parametrize(
    ("data", "reason", "partial"),
    [
        # A broken start line is reported before any header line is read...
        (b"OPTIONS sip:a@pbx.test\r\nBad line\r\n\r\n", "Bad request line", False),
        (b"SIP/2.0 20 OK\r\nBad line\r\n\r\n", "Bad status line", False),
        (b"OPTIONS sip:a SIP/3.0\r\n bad\r\n\r\n", "Version Not Supported", False),
        # ...a broken header line before a Request-URI that did not parse...
        (b"OPTIONS sip:@ SIP/2.0\r\nBad line\r\n\r\n", "Malformed header line", False),
        # ...which is reported with the message, its headers read, so it can be answered.
        (b"OPTIONS sip:@ SIP/2.0\r\nCall-ID: c1\r\n\r\n", None, True),
    ],
)  # fmt: skip
def test_start_line_errors_come_before_header_errors(
    data: bytes, reason: str | None, partial: bool
) -> None:
    with pytest.raises(SipParseError) as caught:
        parse_message(data)
    if reason is not None:
        assert caught.value.reason == reason
    if partial:
        assert isinstance(caught.value.partial, Request)
        assert caught.value.partial.headers.get("call-id") == "c1"
    else:
        assert caught.value.partial is None
