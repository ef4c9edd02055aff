"""Via, CSeq, Max-Forwards, Expires, Content-Length and auth header values."""

from __future__ import annotations

import contextlib
from collections.abc import Callable

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from core.sip import AuthParams, CSeq, SipParseError, Via, format_auth, parse_auth, parse_via
from core.sip.fields import (
    _parse_via_general,
    is_token,
    parse_content_length,
    parse_cseq,
    parse_delta_seconds,
    parse_expires,
    parse_max_forwards,
    read_quoted,
)


@pytest.mark.parametrize(
    ("text", "transport", "host", "port", "params"),
    [
        (
            "SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bK776asdhds",
            "UDP",
            "192.0.2.1",
            5060,
            {"branch": "z9hG4bK776asdhds"},
        ),
        ("SIP/2.0/tcp pc33.example.com", "TCP", "pc33.example.com", None, {}),
        (
            "SIP/2.0/TLS [2001:db8::9:1]:5061;branch=z9hG4bK1",
            "TLS",
            "2001:db8::9:1",
            5061,
            {"branch": "z9hG4bK1"},
        ),
        # RFC 4475 §3.1.1.1: LWS around every SLASH, and folded lines already joined.
        (
            "SIP  /   2.0 /UDP 192.0.2.2;rport;branch=390skdjuw",
            "UDP",
            "192.0.2.2",
            None,
            {"rport": None, "branch": "390skdjuw"},
        ),
        (
            "SIP/2.0/UDP\thost.example.com;branch=z9hG4bKtab",
            "UDP",
            "host.example.com",
            None,
            {"branch": "z9hG4bKtab"},
        ),
        (
            "  SIP / 2.0 / TCP  spindle.example.com   ;  branch  =  z9hG4bK9ikj8  ",
            "TCP",
            "spindle.example.com",
            None,
            {"branch": "z9hG4bK9ikj8"},
        ),
        # sent-by = host [ COLON port ], COLON = SWS ":" SWS
        (
            "SIP/2.0/UDP 192.0.2.1 : 5060;branch=z9hG4bKc",
            "UDP",
            "192.0.2.1",
            5060,
            {"branch": "z9hG4bKc"},
        ),
        (
            "SIP/2.0/WSS df7jal23ls0d.invalid;branch=z9hG4bKws;rport",
            "WSS",
            "df7jal23ls0d.invalid",
            None,
            {"branch": "z9hG4bKws", "rport": None},
        ),
    ],
)
def test_parse_via(
    text: str, transport: str, host: str, port: int | None, params: dict[str, str | None]
) -> None:
    via = parse_via(text)
    assert (via.transport, via.host, via.port, via.params) == (transport, host, port, params)
    assert via.sent_by == (host, port)
    assert parse_via(str(via)) == via


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("", "Bad Via"),
        ("SIP/2.0/UDP", "Bad Via"),
        ("SIP/2.0 192.0.2.1", "Bad Via"),
        ("HTTP/1.1/TCP 192.0.2.1", "Bad Via"),
        ("SIP/2.0/U<P 192.0.2.1", "Bad Via"),
        ("SIP/2.0/UDP;branch=x", "Bad Via"),
        ("SIP/2.0/UDP 192.0.2.15;;,", "Empty parameter"),
        ("SIP/2.0/UDP 192.0.2.15;branch=z9hG4bK1;", "Empty parameter"),
        ("SIP/2.0/UDP 192.0.2.15 ; ", "Empty parameter"),
        ("SIP/2.0/UDP bad host", "Bad host"),
        ("SIP/2.0/UDP host:99999", "Bad port"),
        ("SIP/2.0/UDP host:5\u00b2", "Bad port"),
        ("SIP/2.0/UDP [::1", "Bad IPv6 reference"),
    ],
)
def test_malformed_via(text: str, reason: str) -> None:
    with pytest.raises(SipParseError) as caught:
        parse_via(text)
    assert (caught.value.status, caught.value.reason) == (400, reason)


def test_via_params() -> None:
    via = parse_via(
        "SIP/2.0/UDP 192.0.2.1;BRANCH=z9hG4bKabc;rport=5070;received=203.0.113.9"
        ";maddr=239.1.1.1;ttl=16"
    )
    assert via.branch == "z9hG4bKabc" and via.is_rfc3261_branch
    assert (via.rport, via.wants_rport, via.received, via.maddr, via.ttl) == (
        5070,
        True,
        "203.0.113.9",
        "239.1.1.1",
        16,
    )
    asked = parse_via("SIP/2.0/UDP h;rport;branch=1234")
    assert asked.wants_rport and asked.rport is None and not asked.is_rfc3261_branch
    for odd in ("rport=0", "rport=70000", "rport=\u00b2", "rport=x", "ttl=256", "ttl=\u00b2"):
        weird = parse_via(f"SIP/2.0/UDP h;{odd}")
        assert weird.rport is None and weird.ttl is None
    plain = parse_via("SIP/2.0/UDP h")
    assert (plain.branch, plain.received, plain.rport, plain.wants_rport, plain.ttl) == (
        None,
        None,
        None,
        False,
        None,
    )


def test_via_with_params_and_printing() -> None:
    via = parse_via("SIP/2.0/UDP [2001:db8::1]:5060;branch=z9hG4bK1;rport")
    filled = via.with_params(received="2001:db8::9", rport="5062")
    assert (
        str(filled)
        == "SIP/2.0/UDP [2001:db8::1]:5060;branch=z9hG4bK1;rport=5062;received=2001:db8::9"
    )
    assert via.params == {"branch": "z9hG4bK1", "rport": None}  # unchanged
    assert hash(via) == hash(parse_via("SIP/2.0/UDP [2001:db8::1]:5060;rport;branch=z9hG4bK1"))
    assert str(Via("TCP", "h", 5060, {"alias": None})) == "SIP/2.0/TCP h:5060;alias"


@pytest.mark.parametrize(
    ("text", "number", "method"),
    [
        ("1 REGISTER", 1, "REGISTER"),
        ("  4711   INVITE ", 4711, "INVITE"),
        ("0009 INVITE", 9, "INVITE"),
        ("0 ACK", 0, "ACK"),
        ("4294967295 BYE", 2**32 - 1, "BYE"),  # 32-bit unsigned (§20.16)
        ("1 !odd-Method0123456789_*+`.%~'", 1, "!odd-Method0123456789_*+`.%~'"),
    ],
)
def test_parse_cseq(text: str, number: int, method: str) -> None:
    cseq = parse_cseq(text)
    assert cseq == CSeq(number, method)
    assert str(cseq) == f"{number} {method}"


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("", "Bad CSeq"),
        ("1", "Bad CSeq"),
        ("1 INVITE extra", "Bad CSeq"),
        ("INVITE 1", "Bad CSeq number"),
        ("-1 INVITE", "Bad CSeq number"),
        ("4294967296 INVITE", "Bad CSeq number"),
        ("36893488147419103232 INVITE", "Bad CSeq number"),  # RFC 4475 §3.1.2.4
        ("1" * 5000 + " INVITE", "Bad CSeq number"),
        ("1\u00b2 INVITE", "Bad CSeq number"),
        ("\u0661 INVITE", "Bad CSeq number"),  # Arabic-Indic one
        ("1 INV<ITE", "Bad CSeq method"),
    ],
)
def test_malformed_cseq(text: str, reason: str) -> None:
    with pytest.raises(SipParseError) as caught:
        parse_cseq(text)
    assert caught.value.reason == reason


def test_max_forwards() -> None:
    assert [parse_max_forwards(text) for text in ("70", " 0 ", "0068", "255", "000")] == [
        70,
        0,
        68,
        255,
        0,
    ]
    for bad in ("", "256", "300", "-1", "7\u00b2", "seventy", "1" * 5000):
        with pytest.raises(SipParseError, match="Bad Max-Forwards"):
            parse_max_forwards(bad)


def test_expires() -> None:
    assert parse_expires(" 3600 ") == 3600
    assert parse_expires("0") == 0
    assert parse_expires("4294967295") == 2**32 - 1
    assert parse_expires("4294967296") == 2**32 - 1  # §20.19: larger means the maximum
    assert parse_expires("0" * 50 + "60") == 60
    assert parse_expires("1" * 5000) == 2**32 - 1  # past int()'s 4,300-digit limit
    for bad in ("", "-1", "1h", "\u00b2", "Thu, 01 Dec 1994 16:00:00 GMT"):
        with pytest.raises(SipParseError, match="Bad Expires"):
            parse_expires(bad)
    with pytest.raises(SipParseError, match="Bad thing"):
        parse_delta_seconds("x", "Bad thing")


def test_content_length() -> None:
    assert parse_content_length(" 0 ") == 0
    assert parse_content_length("00042") == 42
    assert parse_content_length("999999999") == 999_999_999
    for bad in ("", "-1", "1e3", "\u00b2", "1000000000", "1" * 5000):
        with pytest.raises(SipParseError, match="Bad Content-Length"):
            parse_content_length(bad)


def test_parse_auth_digest_response() -> None:
    auth = parse_auth(
        'Digest username="1001", realm="pbx.example.com", nonce="abc", '
        'uri="sip:pbx.example.com", response="6629fae49393a05397450978507c4ef1", '
        'algorithm=MD5, cnonce="0a4f113b", nc=00000001, qop=auth, opaque="5ccc"'
    )
    assert auth.scheme == "Digest"
    assert auth.params == {
        "username": "1001",
        "realm": "pbx.example.com",
        "nonce": "abc",
        "uri": "sip:pbx.example.com",
        "response": "6629fae49393a05397450978507c4ef1",
        "algorithm": "MD5",
        "cnonce": "0a4f113b",
        "nc": "00000001",
        "qop": "auth",
        "opaque": "5ccc",
    }
    assert auth.get("USERNAME") == "1001" and auth.get("missing") is None


def test_parse_auth_spacing_escapes_and_odd_schemes() -> None:
    compact = parse_auth('Digest username="4004",realm="x",qop=auth,nc=00000001')
    assert compact.params == {"username": "4004", "realm": "x", "qop": "auth", "nc": "00000001"}
    spaced = parse_auth('  Digest\tusername = "a" ,  realm=  "x"  ,, qop="auth,auth-int"')
    assert spaced.params == {"username": "a", "realm": "x", "qop": "auth,auth-int"}
    escaped = parse_auth('Digest username="a\\"b\\\\c", realm="r"')
    assert escaped.get("username") == 'a"b\\c'
    assert parse_auth("Digest").params == {}
    other = parse_auth("NoOneKnowsThisScheme opaque-data=here")
    assert other.scheme == "NoOneKnowsThisScheme" and other.get("opaque-data") == "here"


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("", "Bad authentication header"),
        ('"Digest" realm=x', "Bad authentication header"),
        ("Digest realm", "Bad authentication parameter"),
        ('Digest realm="unterminated', "Unterminated quoted string"),
        ('Digest ="x"', "Bad authentication parameter"),
        ("Digest realm=a, realm=b", "Repeated authentication parameter"),
        ("Digest REALM=a, realm=b", "Repeated authentication parameter"),
    ],
)
def test_malformed_auth(text: str, reason: str) -> None:
    with pytest.raises(SipParseError) as caught:
        parse_auth(text)
    assert caught.value.reason == reason


def test_format_auth_round_trips_through_parse_auth() -> None:
    text = format_auth(
        "Digest",
        [
            ("realm", 'pbx "main" \\ office', True),
            ("nonce", "n1", True),
            ("algorithm", "SHA-256", False),
            ("qop", "auth", True),
        ],
    )
    assert (
        text
        == 'Digest realm="pbx \\"main\\" \\\\ office", nonce="n1", algorithm=SHA-256, qop="auth"'
    )
    assert parse_auth(text) == AuthParams(
        "Digest",
        {"realm": 'pbx "main" \\ office', "nonce": "n1", "algorithm": "SHA-256", "qop": "auth"},
    )
    assert hash(parse_auth(text)) == hash(parse_auth(text))


def test_small_helpers() -> None:
    assert is_token("INVITE") and is_token("!odd-Method_*+`.%~'")
    assert not is_token("") and not is_token("IN VITE") and not is_token("INVITE\n")
    assert read_quoted('x "a\\"b" y', 2) == ('a"b', 8)
    with pytest.raises(SipParseError, match="Unterminated quoted string"):
        read_quoted('"abc', 0)


# parse_via's fast path must give what the general parser gives, field for field, and its
# text must be what str() would print; anything it does not take, the general parser gets.
_VIA_TABLE = [
    "SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bK776asdhds",
    "SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bK776asdhds;rport",
    "SIP/2.0/UDP 192.0.2.1:5060;rport=5062;received=203.0.113.9;branch=z9hG4bK1",
    "SIP/2.0/UDP 192.0.2.1",
    "SIP/2.0/UDP 192.0.2.1:1",
    "SIP/2.0/UDP 192.0.2.1:65535",
    "SIP/2.0/UDP 192.0.2.1:65536",
    "SIP/2.0/UDP 192.0.2.1:99999",
    "SIP/2.0/UDP 192.0.2.1:0",
    "SIP/2.0/UDP 192.0.2.1:05060",
    "SIP/2.0/UDP 192.0.2.1:123456",
    "SIP/2.0/UDP 192.0.2.1:",
    "SIP/2.0/UDP 192.0.2.1:5060:5060",
    "SIP/2.0/UDP pc33.example.com;branch=z9hG4bK1",
    "SIP/2.0/UDP pc33.example.com.;branch=z9hG4bK1",
    "SIP/2.0/UDP a--b.example-1.com;branch=z9hG4bK1",
    "SIP/2.0/UDP -a.example.com;branch=z9hG4bK1",
    "SIP/2.0/UDP a-.example.com;branch=z9hG4bK1",
    "SIP/2.0/UDP a..b;branch=z9hG4bK1",
    "SIP/2.0/UDP .a;branch=z9hG4bK1",
    "SIP/2.0/UDP a_b;branch=z9hG4bK1",
    "SIP/2.0/UDP h\u00e9te;branch=z9hG4bK1",
    "SIP/2.0/TLS [2001:db8::9:1]:5061;branch=z9hG4bK1",
    "SIP/2.0/TLS [2001:db8::9:1];branch=z9hG4bK1;received=2001:db8::2",
    "SIP/2.0/UDP [::1]",
    "SIP/2.0/UDP [::1]:0",
    "SIP/2.0/UDP [::1]5060",
    "SIP/2.0/UDP [fe80::1%eth0]:5060;branch=z9hG4bK1",
    "SIP/2.0/UDP [fe80::1%]:5060;branch=z9hG4bK1",
    "SIP/2.0/UDP [::ffff:192.0.2.1]:5060",
    "SIP/2.0/UDP [1:2:3:4:5:6:7:8:9]:5060",
    "SIP/2.0/UDP [:::]:5060",
    "SIP/2.0/UDP [zz::1]:5060",
    "SIP/2.0/UDP []:5060",
    "SIP/2.0/UDP [::1",
    "SIP/2.0/UDP ::1",
    "SIP/2.0/UDP 2001:db8::1",
    "SIP/2.0/udp 192.0.2.1;branch=z9hG4bK1",
    "SIP/2.0/Tcp 192.0.2.1;branch=z9hG4bK1",
    "sip/2.0/UDP 192.0.2.1;branch=z9hG4bK1",
    "SIP/2.1/UDP 192.0.2.1;branch=z9hG4bK1",
    "SIP/2.0/WSS df7jal23ls0d.invalid;branch=z9hG4bKws;rport",
    "SIP/2.0/SCTP 192.0.2.1;branch=z9hG4bK1",
    "SIP/2.0/U-P 192.0.2.1;branch=z9hG4bK1",
    "SIP/2.0/U<P 192.0.2.1",
    "SIP/2.0/UDP  192.0.2.1;branch=z9hG4bK1",
    "SIP/2.0/UDP\t192.0.2.1;branch=z9hG4bK1",
    "SIP / 2.0 / UDP 192.0.2.1;branch=z9hG4bK1",
    "SIP/2.0/UDP 192.0.2.1 : 5060;branch=z9hG4bK1",
    "SIP/2.0/UDP 192.0.2.1 ;branch=z9hG4bK1",
    "SIP/2.0/UDP 192.0.2.1; branch=z9hG4bK1",
    "SIP/2.0/UDP 192.0.2.1;branch = z9hG4bK1",
    "SIP/2.0/UDP 192.0.2.1;branch=z9hG4bK1 ",
    " SIP/2.0/UDP 192.0.2.1;branch=z9hG4bK1",
    "SIP/2.0/UDP 192.0.2.1;BRANCH=z9hG4bK1",
    "SIP/2.0/UDP 192.0.2.1;Branch=z9hG4bK1;RPort",
    "SIP/2.0/UDP 192.0.2.1;branch=Z9HG4BK1",
    "SIP/2.0/UDP 192.0.2.1;branch=z9hG4bK1;branch=z9hG4bK2",
    "SIP/2.0/UDP 192.0.2.1;rport;rport=5060",
    "SIP/2.0/UDP 192.0.2.1;branch=",
    "SIP/2.0/UDP 192.0.2.1;branch=z9hG4bK1;",
    "SIP/2.0/UDP 192.0.2.1;;branch=z9hG4bK1",
    "SIP/2.0/UDP 192.0.2.1;",
    "SIP/2.0/UDP 192.0.2.1;=x",
    "SIP/2.0/UDP 192.0.2.1;branch==x",
    "SIP/2.0/UDP 192.0.2.1;branch=a=b",
    'SIP/2.0/UDP 192.0.2.1;branch="z9hG4bK;1"',
    'SIP/2.0/UDP 192.0.2.1;branch="z9hG4bK1',
    'SIP/2.0/UDP 192.0.2.1;x"y=1',
    "SIP/2.0/UDP 192.0.2.1;branch=z9hG4bK1;x=<a>",
    "SIP/2.0/UDP 192.0.2.1;branch=z9hG4bK1 (comment)",
    "SIP/2.0/UDP 192.0.2.1;branch=z9hG4bK1;ttl=16;maddr=239.1.1.1;alias;x-y.z!%*_+`'~=v-.!%*_+`'~",
    "SIP/2.0/UDP 192.0.2.1;received=[2001:db8::1]",
    "SIP/2.0/UDP 192.0.2.1;branch=z9hG4bK\u00e9",
    "SIP/2.0/UDP 192.0.2.1;\u00e9=1",
    "SIP/2.0/UDP 192.0.2.1\n;branch=z9hG4bK1",
    "SIP/2.0/UDP 192.0.2.1;branch=z9hG4bK1\n",
    "SIP/2.0/UDP 192.0.2.1;branch=z9hG4bK1\xa0",
    "SIP/2.0/UDP 192.0.2.1;branch=z9hG4bK1\u2003;rport",
    "SIP/2.0/UDP 192.0.2.1;branch=z9hG4bK1\x1c",
    "SIP/2.0/UDP 192.0.2.1;\u2003branch=z9hG4bK1",
    "SIP/2.0/UDP 192.0.2.1;branch=z9\thG4bK1",
    "SIP/2.0/UDP 192.0.2.1;branch=z9 hG4bK1",
    "SIP/2.0/UDP 192.0.2.1;\u0130=1",
    "SIP/2.0/UDP 192.0.2.1;\u00e9=1;branch=z9hG4bK1",
    "SIP/2.0/UDP 192.0.2.1;\u00c9=1;branch=z9hG4bK1",
    "SIP/2.0/UDP 192.0.2.1;branch=z9hG4bK1;x=a,b;y=<c>;z=%41",
    "SIP/2.0/UDP 192.0.2.1;branch=z9hG4bK1;x=\\",
    "SIP/2.0/UDP 192.0.2.1;branch=z9hG4bK1;=",
    "SIP/2.0/UDP 192.0.2.1;branch=z9hG4bK1;x=",
    "SIP/2.0/UDP 192.0.2.1;1=2;-=.",
    "SIP/2.0/UDP 192.0.2.1;branch=z9hG4bK1;rport=5062;Received=203.0.113.9",
    "SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bK1;;",
    "SIP/2.0/UDP 192.0.2.1:5060 ;branch=z9hG4bK1",
    "SIP/2.0/UDP 192.0.2.1:5060\u2003;branch=z9hG4bK1",
    "SIP/2.0/UDP [2001:db8::9:1]:5061;branch=z9hG4bK1;received=2001:db8::2;rport",
    "SIP/2.0/UDP [2001:db8::9:1]:65536;branch=z9hG4bK1",
    "SIP/2.0/UDP",
    "SIP/2.0/UDP ",
    "SIP/2.0/UDP;branch=x",
    "SIP/2.0 192.0.2.1",
    "HTTP/1.1/TCP 192.0.2.1",
    "",
    "SIP/2.0/UDP bad host",
    "SIP/2.0/UDP host:5\u00b2",
    "SIP/2.0/UDP 192.0.2.15;;,",
]


def _via_or_error(parse: Callable[[str], Via], text: str) -> tuple[object, ...]:
    try:
        via = parse(text)
    except SipParseError as error:
        return ("error", error.status, error.reason)
    return (via.transport, via.host, via.port, via.params, list(via.params), via.protocol, str(via))


@pytest.mark.parametrize("text", _VIA_TABLE)
def test_parse_via_fast_path_gives_what_the_general_parser_gives(text: str) -> None:
    general = _via_or_error(_parse_via_general, text)
    assert _via_or_error(parse_via, text) == general
    assert _via_or_error(parse_via, text) == general  # again, its sent-by now remembered
    try:
        via = parse_via(text)
    except SipParseError:
        return
    # The text kept is only ever what str() prints from the parts.
    assert via.text is None or via.text == str(Via(via.transport, via.host, via.port, via.params))


# Pieces a Via is made of, the common ones and the awkward ones: parameter names known to
# the fast path, others, upper case and non-ASCII ones; values with and without whitespace of
# every kind str.split() knows, quotes, separators where they do not belong.
_VIA_HEADS = st.sampled_from(
    [
        "SIP/2.0/UDP 192.0.2.1:5060",
        "SIP/2.0/TCP pc33.example.com",
        "SIP/2.0/TLS [2001:db8::9:1]:5061",
        "SIP/2.0/UDP 192.0.2.1 ",
        "SIP / 2.0 / UDP host : 5060",
        "SIP/2.0/udp h",
        "SIP/2.0/UDP bad host",
        "SIP/2.0/UDP",
    ]
)
_VIA_PARAM_PIECES = st.sampled_from(
    [
        "branch", "rport", "received", "maddr", "ttl", "alias", "x-y", "BRANCH", "Rport",
        "\u00e9", "\u0130", "=", ";", '"', " ", "\t", "\n", "\xa0", "\u2003", "\x1c",
        "z9hG4bK", "776asdhds", "5060", "192.0.2.9", "2001:db8::2", "[2001:db8::2]", ".", "-",
        ",", "<a>", "%41", "\\", "0",
    ]
)  # fmt: skip


_VIA_SPACES = st.sampled_from(["", "", "", " ", "\t", "\xa0", "\u2003", "\x1c", "\n"])
_VIA_NAMES = st.sampled_from(
    ["branch", "rport", "received", "maddr", "ttl", "x-y.z", "BRANCH", "Rport", "\u00e9",
     "\u00c9", "\u0130", "", '"x"', "a b"]
)  # fmt: skip
_VIA_VALUES = st.sampled_from(
    ["z9hG4bK776asdhds", "z9hG4bK-524287-1---a1b2", "5060", "192.0.2.9", "2001:db8::2",
     "[2001:db8::2]", "", '"quoted"', "a b", "z9hG4bK\u00e9", "=", "a,b", "%41", "\\"]
)  # fmt: skip
# One parameter as a phone might write it: a name, maybe `=` and a value, whitespace of any
# kind around either or none.
_VIA_PARAM = st.tuples(
    _VIA_SPACES, _VIA_NAMES, _VIA_SPACES, st.sampled_from(["=", "=", ""]), _VIA_SPACES,
    _VIA_VALUES, _VIA_SPACES,
).map(lambda parts: "".join(parts) if parts[3] else "".join(parts[:3]))  # fmt: skip
_VIA_PARAMS = st.one_of(
    st.lists(_VIA_PARAM, max_size=5).map(";".join),
    st.lists(_VIA_PARAM_PIECES, max_size=12).map("".join),
)


@settings(max_examples=2_000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_VIA_HEADS, _VIA_PARAMS, st.booleans())
def test_parse_via_fast_path_matches_the_general_parser_on_generated_vias(
    head: str, params: str, with_params: bool
) -> None:
    text = f"{head};{params}" if with_params else head + params
    general = _via_or_error(_parse_via_general, text)
    assert _via_or_error(parse_via, text) == general
    assert _via_or_error(parse_via, text) == general  # again, its sent-by now remembered
    with contextlib.suppress(SipParseError):
        via = parse_via(text)
        assert via.text is None or via.text == str(
            Via(via.transport, via.host, via.port, via.params)
        )


def test_parse_via_fast_path_takes_the_common_shapes() -> None:
    for text in (
        "SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bK776asdhds;rport",
        "SIP/2.0/TCP pc33.example.com;branch=z9hG4bK1;received=192.0.2.9;rport=5062",
        "SIP/2.0/TLS [2001:db8::9:1]:5061;branch=z9hG4bK1;received=2001:db8::2",
    ):
        assert parse_via(text).text == text
    for text in (
        "SIP/2.0/udp 192.0.2.1;branch=z9hG4bK1",
        "SIP/2.0/UDP 192.0.2.1;BRANCH=z9hG4bK1",
        "SIP/2.0/UDP 192.0.2.1:05060",
        "SIP/2.0/UDP 192.0.2.1;rport;rport=5060",
    ):
        assert parse_via(text).text is None


def test_parse_via_remembers_a_bounded_number_of_sent_bys() -> None:
    from core.sip import fields

    for index in range(3 * fields._HEADS_LIMIT):
        via = parse_via(f"SIP/2.0/UDP h{index}.example.com:5060;branch=z9hG4bK{index}")
        assert (via.host, via.text) == (f"h{index}.example.com", str(via))
        assert len(fields._HEADS) <= fields._HEADS_LIMIT
    # A remembered sent-by with parameters the fast path does not take: the general parser.
    with pytest.raises(SipParseError):
        parse_via(f"SIP/2.0/UDP h{index}.example.com:5060;branch=z9hG4bK1;;")
    assert parse_via(f"SIP/2.0/UDP h{index}.example.com:5060;BRANCH=z9hG4bK1").text is None


def _small_int_reference(text: str, max_digits: int) -> int | None:
    """What _small_int means, read the long way: ASCII digits only, leading zeros not
    counted against `max_digits`."""
    if not text or not all("0" <= char <= "9" for char in text):
        return None
    significant = text.lstrip("0")
    return None if len(significant) > max_digits else int(text)


@settings(max_examples=1_500, deadline=None)
@given(st.text(alphabet="0123456789 +-_x\u00b2\u0663\t.", max_size=14), st.integers(1, 10))
def test_small_int_reads_digits_as_the_long_way_does(text: str, max_digits: int) -> None:
    from core.sip.fields import _small_int

    assert _small_int(text, max_digits) == _small_int_reference(text, max_digits)


def test_common_tokens_are_tokens() -> None:
    from core.sip.fields import _COMMON_TOKENS, _TOKEN

    assert all(_TOKEN.fullmatch(token) for token in _COMMON_TOKENS)
    assert is_token("OPTIONS") and is_token("2.0") and is_token("x-y") and not is_token("A B")


def _cseq_or_error(parse: Callable[[str], CSeq], text: str) -> tuple[object, ...]:
    try:
        cseq = parse(text)
    except SipParseError as error:
        return ("error", error.status, error.reason)
    return (cseq.number, cseq.method)


_CSEQ_PIECES = st.sampled_from(
    ["1", "0", "4711", "4294967295", "4294967296", "00000000001", "12345678901", "\u0663",
     " ", "  ", "\t", "\xa0", "INVITE", "OPTIONS", "UDP", "invite", "X-Y", "2.0", "A B", "-",
     ""]
)  # fmt: skip
_CSEQ_NUMBERS = st.one_of(
    st.integers(0, 2**33).map(str), st.sampled_from(["", "007", "1\u0663", "+1", "1.0"])
)
_CSEQ_METHODS = st.sampled_from(["INVITE", "OPTIONS", "UDP", "invite", "X-Y", "", "A B", "2.0"])


@settings(max_examples=1_500, deadline=None)
@given(
    st.one_of(
        st.tuples(_CSEQ_NUMBERS, st.sampled_from([" ", "  ", "\t", ""]), _CSEQ_METHODS).map(
            "".join
        ),
        st.lists(_CSEQ_PIECES, max_size=5).map("".join),
    )
)
def test_parse_cseq_matches_the_general_reading(text: str) -> None:
    from core.sip.fields import _parse_cseq_general

    assert _cseq_or_error(parse_cseq, text) == _cseq_or_error(_parse_cseq_general, text)
    # Read again (a known value now, when the short path read it): the same answer.
    assert _cseq_or_error(parse_cseq, text) == _cseq_or_error(_parse_cseq_general, text)


def test_a_known_cseq_is_kept_bounded_and_only_from_the_short_path() -> None:
    from core.sip import fields

    fields._KNOWN_CSEQS.clear()
    first = parse_cseq("7 REGISTER")
    assert parse_cseq("7 REGISTER") is first == CSeq(7, "REGISTER")
    assert parse_cseq("7  REGISTER") == first  # the general reading: read, not kept
    assert list(fields._KNOWN_CSEQS) == ["7 REGISTER"]
    with pytest.raises(SipParseError, match="Bad CSeq number"):
        parse_cseq("4294967296 REGISTER")
    with pytest.raises(SipParseError, match="Bad CSeq number"):
        parse_cseq("4294967296 REGISTER")
    for number in range(fields._KNOWN_CSEQS_LIMIT + 20):
        parse_cseq(f"{number} INVITE")
    assert len(fields._KNOWN_CSEQS) <= fields._KNOWN_CSEQS_LIMIT
    assert f"{fields._KNOWN_CSEQS_LIMIT + 19} INVITE" in fields._KNOWN_CSEQS


def _expires_or_error(text: str, parse: Callable[[str], int]) -> tuple[object, ...]:
    try:
        return ("ok", parse(text))
    except SipParseError as error:
        return ("error", error.status, error.reason)


@settings(max_examples=800, deadline=None)
@given(
    st.one_of(
        st.integers(0, 2**40).map(str),
        st.text(alphabet=" 0123456789\t-+x\u0663\xb2", max_size=20),
    )
)
def test_parse_expires_reads_a_known_text_as_the_first_time(text: str) -> None:
    from core.sip import fields

    def reference(value: str) -> int:
        return parse_delta_seconds(value, "Bad Expires")

    fields._KNOWN_EXPIRES.clear()
    expected = _expires_or_error(text, reference)
    assert _expires_or_error(text, parse_expires) == expected  # cold
    assert _expires_or_error(text, parse_expires) == expected  # known now, if it read


def test_known_expires_are_kept_bounded_and_never_an_error() -> None:
    from core.sip import fields

    fields._KNOWN_EXPIRES.clear()
    assert parse_expires("3600") == 3600 and "3600" in fields._KNOWN_EXPIRES
    for _ in range(2):
        with pytest.raises(SipParseError, match="Bad Expires"):
            parse_expires("1h")
    assert "1h" not in fields._KNOWN_EXPIRES
    assert parse_expires("0" * 50 + "60") == 60
    assert "0" * 50 + "60" not in fields._KNOWN_EXPIRES  # long: read each time
    for number in range(fields._KNOWN_EXPIRES_LIMIT + 10):
        assert parse_expires(str(number)) == number
    assert len(fields._KNOWN_EXPIRES) <= fields._KNOWN_EXPIRES_LIMIT
